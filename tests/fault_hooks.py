"""Hooks that inject faults into real training runs (imported by test configs only)."""
import os
import signal

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from mmseg.registry import HOOKS


@HOOKS.register_module()
class KillProcessHook(Hook):
    """SIGKILL this process (or only rank ``rank``) just before iteration ``at_iter``."""

    def __init__(self, at_iter: int, rank=None):
        self.at_iter = at_iter
        self.rank = rank

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at_iter and self.rank in (None, get_rank()):
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class PoisonWeightsHook(Hook):
    """Fill the stem weights with NaN just before iteration ``at_iter``."""

    def __init__(self, at_iter: int):
        self.at_iter = at_iter

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at_iter:
            model = getattr(runner.model, 'module', runner.model)
            with torch.no_grad():
                model.backbone.stem[0].weight.fill_(float('nan'))
