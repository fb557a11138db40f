from .training_hooks import NonFiniteLossHook, ResumeRandomStateHook, ResumeSameModelHook

__all__ = ['NonFiniteLossHook', 'ResumeRandomStateHook', 'ResumeSameModelHook']
