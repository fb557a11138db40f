# mmseg's default runtime plus what the InceptionNeXt recipes add to it.
_base_ = ['mmseg::_base_/default_runtime.py']

custom_hooks = [
    # Stop at the first NaN/inf loss, naming the iteration ('warn' to only log).
    dict(type='NonFiniteLossHook', action='raise'),
    # Keep torch's random state in checkpoints, so that --resume repeats the uninterrupted
    # run bit for bit where that run is deterministic: on a CPU, with
    # randomness=dict(seed=..., deterministic=True). These configs do not set it: mmengine
    # then calls torch.use_deterministic_algorithms(True), and torch has no deterministic
    # CUDA backward of the bilinear resizing that mmseg's heads train with.
    dict(type='ResumeRandomStateHook'),
    # --resume refuses a checkpoint of another model (e.g. in a shared --work-dir).
    dict(type='ResumeSameModelHook'),
]
# A rank that dies makes the others fail after this many seconds instead of waiting forever.
env_cfg = dict(dist_cfg=dict(timeout=1800))
