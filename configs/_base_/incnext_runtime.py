# mmseg's default runtime plus what the InceptionNeXt recipes add to it.
_base_ = ['mmseg::_base_/default_runtime.py']

custom_hooks = [
    # Stop at the first NaN/inf loss, naming the iteration ('warn' to only log).
    dict(type='NonFiniteLossHook', action='raise'),
    # Keep torch's random state in checkpoints, so that --resume repeats the uninterrupted
    # run: bit-exactly on a CPU with randomness=dict(seed=..., deterministic=True), which
    # these configs do not set; on GPUs only up to rounding (CUDA's backward of bilinear
    # resizing adds in no fixed order).
    dict(type='ResumeRandomStateHook'),
    # --resume refuses a checkpoint of another model (e.g. in a shared --work-dir).
    dict(type='ResumeSameModelHook'),
]
# A rank that dies makes the others fail after this many seconds instead of waiting forever.
env_cfg = dict(dist_cfg=dict(timeout=1800))
