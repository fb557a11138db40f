"""Training hooks for long jobs: stop on a non-finite loss, and resume bit-exactly."""
import math
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook

from mmseg.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training as soon as the loss is NaN or infinite, naming the iteration.

    Without it, a diverged run keeps training on NaN for hours. Unlike mmengine's
    ``CheckInvalidLossHook`` (an assertion every 50 iterations with no iteration number),
    it checks every iteration, says which one and which loss terms, and can only warn.
    Config::

        custom_hooks = [dict(type='NonFiniteLossHook', action='raise')]

    Args:
        action: ``'raise'`` stops training with a ``FloatingPointError``; ``'warn'`` only
            logs (e.g. with AMP, whose loss scaler skips steps on overflow).
    """

    priority = 'HIGH'

    def __init__(self, action: str = 'raise') -> None:
        if action not in ('raise', 'warn'):
            raise ValueError(f"NonFiniteLossHook action must be 'raise' or 'warn', got {action!r}")
        self.action = action

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = float(outputs['loss'])
        if math.isfinite(loss):
            return
        parts = ', '.join(f'{k}={float(v):.4g}' for k, v in outputs.items()
                          if k.endswith('loss') or 'loss_' in k)
        message = (f'Non-finite loss {loss} at iteration {runner.iter + 1} ({parts}). '
                   'Typical causes: a learning rate too high for the batch size, fp16 '
                   'overflow without loss scaling, or corrupt labels. Resume from the last '
                   'checkpoint with --resume once fixed.')
        if self.action == 'raise':
            raise FloatingPointError(message)
        runner.logger.warning(message)


@HOOKS.register_module()
class ResumeRandomStateHook(Hook):
    """Save torch's random state in checkpoints and restore it when resuming.

    mmengine restores weights, optimizer, schedulers and skips the data already seen (so
    the data order and numpy-based augmentations repeat), but not the torch generator that
    drives drop path and dropout; a resumed run therefore drifts from an uninterrupted one.
    With this hook (and ``randomness=dict(seed=..., deterministic=True)``), it does not.
    The state is restored just before the first iteration after resuming, once mmengine's
    data skipping, which consumes no torch randomness, is done.
    """

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = {'torch': torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint['random_state'] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get('random_state')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is None:
            return
        torch.set_rng_state(self._pending['torch'])
        cuda: Sequence[torch.Tensor] = self._pending.get('cuda', ())
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        self._pending = None
