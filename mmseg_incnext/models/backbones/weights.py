"""Reading InceptionNeXt weights and loading them into the backbone.

Accepted sources (all read without executing code: safetensors, or ``torch.load`` with the
allow-list unpickler of :mod:`mmseg_incnext.utils.checkpoint_safety`):

* a released variant by name, ``inceptionnext://<arch>`` (e.g. ``inceptionnext://tiny``,
  the URL :data:`RELEASE_URLS` gives for it), or any http(s) URL, cached by ``torch.hub``;
* a released ``.pth`` (a plain state dict with timm's key names);
* a timm ``model.safetensors`` (same key names);
* an mmseg/mmengine checkpoint of a trained segmentor (``state_dict`` with ``backbone.``
  keys) or a training checkpoint of the official repository (``model`` / ``state_dict``).

Keys are matched exactly after dropping the classification head; a shape mismatch is an
error that names the architecture the checkpoint was made for.
"""
import os
import pickle
import urllib.error
import zipfile
from typing import Dict, Mapping, Optional

import torch
from mmengine.logging import MMLogger

from mmseg_incnext.models.backbones.arch import ARCH_SETTINGS
from mmseg_incnext.utils.checkpoint_safety import (CheckpointError, UnsafeCheckpointError,
                                             download_to_hub_cache, safe_torch_load)

RELEASE_URL_ROOT = 'https://github.com/sail-sg/inceptionnext/releases/download/model'
# The authors released ImageNet-1K weights of every variant of the arch table.
RELEASE_URLS: Dict[str, str] = {
    arch: f'{RELEASE_URL_ROOT}/inceptionnext_{arch}.pth' for arch in ARCH_SETTINGS
}
RELEASE_SCHEME = 'inceptionnext://'
CLASSIFIER_PREFIXES = ('head.', 'fc.', 'classifier.')


def release_url(source: str) -> str:
    """The URL of a released variant named ``inceptionnext://<arch>``."""
    arch = source[len(RELEASE_SCHEME):]
    if arch not in RELEASE_URLS:
        known = ', '.join(RELEASE_SCHEME + name for name in RELEASE_URLS)
        raise CheckpointError(f'{source}: no released InceptionNeXt is named {arch!r}; '
                              f'the released ones are {known}')
    return RELEASE_URLS[arch]


def read_checkpoint(source: str, map_location='cpu') -> Mapping:
    """Return the raw object stored at ``source``: a path, an http(s) URL, or a released
    variant's name ``inceptionnext://<arch>``."""
    if source.startswith(RELEASE_SCHEME):
        source = release_url(source)
    if source.startswith(('http://', 'https://')):
        return _read_url(source, map_location)
    path = os.path.expanduser(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f'Checkpoint file not found: {source}')
    if os.path.isdir(path):
        raise CheckpointError(f'Checkpoint path is a directory, not a file: {source}')
    if path.endswith('.safetensors'):
        return _read_safetensors(path)
    return _torch_load(path, source, map_location)


def _read_url(url: str, map_location) -> Mapping:
    try:
        path = download_to_hub_cache(url)
    except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as err:
        cache = os.path.join(torch.hub.get_dir(), 'checkpoints')
        raise CheckpointError(
            f'Could not download the checkpoint {url}: {err}. On an offline machine, '
            f'download it elsewhere and either put it in {cache} or set the config\'s '
            "init_cfg=dict(type='Pretrained', checkpoint='/path/to/file.pth') "
            '(e.g. --cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.pth)') from err
    return _torch_load(path, url, map_location)


def _read_safetensors(path: str) -> Mapping:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f'Cannot read {path} as safetensors (corrupt or truncated '
                              f'file?): {err}') from err


def _torch_load(path: str, name: str, map_location) -> Mapping:
    try:
        return safe_torch_load(path, map_location=map_location, name=name)
    except UnsafeCheckpointError:
        raise
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError,
            pickle.UnpicklingError) as err:
        raise CheckpointError(f'Cannot read checkpoint {name}: the file is corrupt, truncated or '
                              f'not a PyTorch checkpoint ({type(err).__name__}: {err})') from err


def extract_backbone_state_dict(checkpoint: Mapping, source: str = 'checkpoint',
                                prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Find the backbone's tensors in any supported checkpoint layout.

    ``prefix`` (``PretrainedInit``'s option) takes the tensors whose names start with it,
    without it; by default a ``backbone.`` prefix is found by itself.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{source} holds a {type(checkpoint).__name__}, not a state dict')
    state = checkpoint
    for key in ('state_dict', 'model', 'module'):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    keys = list(state)
    if any(k.startswith('module.') for k in keys):
        state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if prefix is not None:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        if not any(k.startswith(prefix) for k in state):
            raise CheckpointError(
                f"init_cfg prefix={prefix!r}: no tensor of {source} starts with it (its names "
                f'start with {sorted({k.split(".")[0] + "." for k in state})[:5]})')
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    elif any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not state or not_tensors:
        found = f'entries {not_tensors[:5]} are not tensors' if not_tensors else 'no tensors found'
        raise CheckpointError(f'{source} does not hold InceptionNeXt weights: {found}')
    return dict(state)


def describe_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Guess which InceptionNeXt variant a state dict belongs to (for error messages)."""
    dims, depths = [], []
    for i in range(8):
        blocks = {k.split('.')[3] for k in state_dict if k.startswith(f'stages.{i}.blocks.')}
        if not blocks:
            break
        depths.append(len(blocks))
        weight = state_dict.get(f'stages.{i}.blocks.0.mlp.fc2.weight')
        dims.append(int(weight.shape[0]) if weight is not None else -1)
    for name, arch in ARCH_SETTINGS.items():
        if tuple(arch['dims']) == tuple(dims) and tuple(arch['depths']) == tuple(depths):
            return f"'{name}'"
    return f'depths={tuple(depths)}, dims={tuple(dims)}' if depths else 'an unknown model'


def load_state_dict_into(backbone: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                         source: str = 'checkpoint',
                         logger: Optional[MMLogger] = None) -> None:
    """Copy ``state_dict`` into ``backbone`` with exact key matching.

    Shape mismatches raise :class:`CheckpointError`; missing and unexpected keys are logged
    as a summary (the per-stage output norms are expected to be missing from ImageNet
    weights).
    """
    own = backbone.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
                  if k in own and v.shape != own[k].shape]
    if mismatched:
        key, got, want = mismatched[0]
        arch = getattr(backbone, 'arch_name', type(backbone).__name__)
        raise CheckpointError(
            f'{source} does not fit InceptionNeXt-{arch}: {len(mismatched)} tensors have the '
            f'wrong shape (first: {key} is {list(got)} in the checkpoint, {list(want)} in the '
            f'model). The checkpoint looks like arch {describe_arch(state_dict)}; use the '
            'matching arch or checkpoint.')
    matched = [k for k in state_dict if k in own]
    if not matched:
        raise CheckpointError(f'{source} shares no parameter names with InceptionNeXt; it is '
                              'not an InceptionNeXt checkpoint')
    result = backbone.load_state_dict(state_dict, strict=False)
    logger = logger or MMLogger.get_current_instance()
    logger.info(f'Loaded {len(matched)}/{len(own)} backbone tensors from {source}')
    if result.missing_keys:
        logger.warning(f'{len(result.missing_keys)} backbone tensors not in {source} keep their '
                       f'initialisation: {_summarise(result.missing_keys)}')
    if result.unexpected_keys:
        logger.warning(f'{len(result.unexpected_keys)} tensors of {source} are not used: '
                       f'{_summarise(result.unexpected_keys)}')


def _summarise(keys, limit: int = 6) -> str:
    groups = sorted({k.rsplit('.', 1)[0] for k in keys})
    shown = ', '.join(groups[:limit])
    return shown + (f' (+{len(groups) - limit} more modules)' if len(groups) > limit else '')


def load_pretrained(backbone: torch.nn.Module, source: str, prefix: Optional[str] = None,
                    map_location='cpu') -> None:
    """Read ``source`` and load its backbone weights into ``backbone``."""
    checkpoint = read_checkpoint(source, map_location)
    state_dict = extract_backbone_state_dict(checkpoint, source, prefix)
    load_state_dict_into(backbone, state_dict, source)
