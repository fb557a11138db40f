"""Training hooks for long jobs: stop on a non-finite loss, resume bit-exactly, and resume
only the model that wrote the checkpoint."""
import math
import os
from typing import Any, Mapping, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import find_latest_checkpoint

from mmseg.registry import HOOKS
from mmseg_incnext.utils.checkpoint_safety import CheckpointError, UnsafeCheckpointError


def _scalar(value) -> float:
    """A logged loss as a float (a tensor that may require grad, or a number)."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


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
        loss = _scalar(outputs['loss'])
        if math.isfinite(loss):
            return
        parts = ', '.join(f'{k}={_scalar(v):.4g}' for k, v in outputs.items()
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
    With this hook and ``randomness=dict(seed=..., deterministic=True)`` it does not, on a
    CPU. (On CUDA, mmengine's ``deterministic=True`` turns on
    ``torch.use_deterministic_algorithms``, which refuses the backward of bilinear resizing
    that mmseg's heads use; without it, GPU kernels need not repeat bit for bit.)
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


def describe_model(model_cfg: Optional[Mapping]) -> str:
    """A one-line description of a segmentor config: its type and its parts' types, with
    the backbone's ``arch``/``depth`` and the decode head's ``num_classes``."""
    if not model_cfg:
        return 'a model built without a config'
    parts = []
    for key in ('backbone', 'neck', 'decode_head', 'auxiliary_head'):
        part = model_cfg.get(key)
        if part:
            parts.append(f"{key} {'+'.join(_describe_part(p) for p in _as_list(part))}")
    return f"{model_cfg.get('type', '?')}: {', '.join(parts)}" if parts else str(
        model_cfg.get('type', '?'))


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _describe_part(part: Mapping) -> str:
    name = str(part.get('type', '?'))
    for key in ('arch', 'depth'):
        if isinstance(part.get(key), (str, int)):
            name += f'-{part[key]}'
    if part.get('num_classes') is not None:
        name += f" ({part['num_classes']} classes)"
    return name


def tensor_differences(saved: Mapping[str, Any], model: torch.nn.Module) -> str:
    """How the tensors of a checkpoint's state dict differ from ``model``'s, in names and
    shapes, said from the model's side ('' when they match)."""
    own = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    theirs = {name[len('module.'):] if name.startswith('module.') else name:
              tuple(getattr(t, 'shape', ())) for name, t in saved.items()}
    missing = sorted(own.keys() - theirs.keys())
    extra = sorted(theirs.keys() - own.keys())
    reshaped = sorted(k for k in own.keys() & theirs.keys() if own[k] != theirs[k])
    found = []
    if missing:
        found.append(f'the checkpoint lacks {len(missing)} of its tensors (e.g. {missing[0]})')
    if extra:
        found.append(f'{len(extra)} tensors of the checkpoint are not in it (e.g. {extra[0]})')
    if reshaped:
        key = reshaped[0]
        found.append(f'the shape differs for {len(reshaped)} (e.g. {key}: {list(theirs[key])} '
                     f'in the checkpoint, {list(own[key])} in the model)')
    return '; '.join(found)


@HOOKS.register_module()
class ResumeSameModelHook(Hook):
    """Refuse to ``--resume`` from a checkpoint that another model wrote.

    mmengine resumes from the last checkpoint of the work dir and loads it non-strictly, so
    a second model trained in the same work dir would continue from the first one's weights
    where the names match and from its own initialisation elsewhere. This hook writes the
    config's path and a description of its model into each checkpoint's ``meta``
    (``meta['written_by']``) and, when a run resumes (``resume=True``, the ``--resume`` of
    both train.py), compares the checkpoint's tensors with the model's, names and shapes,
    before any weight is copied. Other settings (data, schedule, init checkpoint, SyncBN or
    BN) may differ. A mismatch raises :class:`CheckpointError` naming the checkpoint, the
    config that wrote it (for a checkpoint without ``written_by``: mmengine's run name,
    ``<config name>_<time>``), this run's config and the work dir. Config::

        custom_hooks = [dict(type='ResumeSameModelHook')]
    """

    priority = 'VERY_HIGH'  # check before any other hook acts on the loaded checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['written_by'] = dict(
            config=_config_path(runner), model=describe_model(runner.cfg.get('model')))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner.cfg.get('resume', False):
            return  # load_from (fine-tuning, testing) may load any model's weights
        _refuse_executable_config(checkpoint, runner.cfg.get('load_from'))
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        saved = checkpoint.get('state_dict', checkpoint)
        difference = tensor_differences(saved, model)
        if not difference:
            return
        meta = checkpoint.get('meta', {})
        record = meta.get('written_by')
        writer = (f"{record['config']} ({record['model']})" if record else
                  f"run {meta.get('experiment_name', '?')!r} (mmengine's <config name>_<time>; "
                  'the checkpoint does not record its config)')
        path = runner.cfg.get('load_from') or find_latest_checkpoint(runner.work_dir)
        raise CheckpointError(
            f'--resume refused: {path} was written by another model, no weight was loaded.\n'
            f'  written by: {writer}\n'
            f"  this run:   {_config_path(runner)} ({describe_model(runner.cfg.get('model'))})\n"
            f'  this model: {difference}\n'
            f'  work dir:   {runner.work_dir}\n'
            'Pass --work-dir to train this model in a folder of its own, or drop --resume to '
            'train it from the start.')


def _refuse_executable_config(checkpoint: Mapping, path: Optional[str]) -> None:
    """mmengine's ``Runner.resume`` runs ``meta['config']`` as Python (``Config.fromstring``)
    right after this hook; mmengine itself writes ``meta['cfg']``, so only a crafted or
    mmcv 1.x checkpoint has that key, and resuming from it is refused."""
    meta = checkpoint.get('meta')
    if isinstance(meta, Mapping) and 'config' in meta:
        raise UnsafeCheckpointError(
            f'--resume refused: {path or "the checkpoint"} holds meta["config"], Python text '
            "that mmengine's Runner.resume would execute (checkpoints written by mmengine "
            'store their config as meta["cfg"]). Resume only from checkpoints this training '
            'wrote, or load its weights with load_from instead.')


def _config_path(runner) -> str:
    filename = runner.cfg.filename
    return os.path.abspath(filename) if filename else 'a config without a file'
