# mmseg's default runtime plus what the InceptionNeXt recipes add to it.
_base_ = ['mmseg::_base_/default_runtime.py']

custom_hooks = [
    # Stop at the first NaN/inf loss, naming the iteration ('warn' to only log).
    dict(type='NonFiniteLossHook', action='raise'),
    # Keep torch's random state in checkpoints so that --resume continues bit-exactly.
    dict(type='ResumeRandomStateHook'),
]
# A rank that dies makes the others fail after this many seconds instead of waiting forever.
env_cfg = dict(dist_cfg=dict(timeout=1800))
