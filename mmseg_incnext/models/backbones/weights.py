"""InceptionNeXt's released weights for mmengine's ``PretrainedInit``.

``init_cfg=dict(type='Pretrained', checkpoint=...)`` is mmengine's own initializer; this
module gives it what it does not have:

* the ``inceptionnext://<arch>`` scheme of mmengine's ``CheckpointLoader`` (e.g.
  ``inceptionnext://tiny``): the authors' release of that variant (:data:`RELEASE_URLS`),
  downloaded once into torch.hub's cache and read through the allow-list unpickler;
* :func:`check_backbone_weights`, the backbone's load hook: a checkpoint loaded into the
  backbone itself may be laid out as released (timm's names, with the classifier), as an
  mmseg segmentor (``backbone.`` names) or as an official training checkpoint (``model``);
  keys then match exactly, and a tensor of the wrong shape is an error naming the
  architecture the checkpoint was made for.

Other sources are read by mmengine's loader for their scheme; the plugin's configs import
:mod:`mmseg_incnext.utils.stack_fixes`, which puts the allow-list unpickler behind every
scheme and reads timm's ``.safetensors`` files too.
"""
from typing import Dict, Mapping, MutableMapping

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from mmseg_incnext.models.backbones.arch import ARCH_SETTINGS
from mmseg_incnext.utils.checkpoint_safety import CheckpointError, load_from_http

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


@CheckpointLoader.register_scheme(prefixes=RELEASE_SCHEME)
def load_from_inceptionnext(filename: str, map_location=None, logger=None) -> Mapping:
    """mmengine's loader for ``inceptionnext://<arch>``: the released checkpoint, from
    torch.hub's cache or downloaded into it."""
    return load_from_http(release_url(filename), map_location)


def extract_backbone_state_dict(checkpoint: Mapping,
                                source: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """The backbone's tensors of a released, mmseg or official training checkpoint."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'{source} holds a {type(checkpoint).__name__}, not a state dict')
    state = checkpoint
    for key in ('state_dict', 'model', 'module'):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if any(k.startswith('module.') for k in state):
        state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if any(k.startswith('backbone.') for k in state):
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


def check_backbone_weights(backbone: torch.nn.Module, state_dict: MutableMapping,
                           prefix: str, *_) -> None:
    """Load-state-dict pre-hook of :class:`InceptionNeXt`, for mmengine's and torch's loads.

    Loaded into the backbone itself (``prefix`` empty: ``PretrainedInit``), ``state_dict``
    is rewritten in place to the backbone's own names from any layout
    :func:`extract_backbone_state_dict` knows. In every load, a tensor whose shape differs
    from the backbone's is an error naming both architectures (torch would only warn with
    ``strict=False``).
    """
    own = backbone.state_dict()
    if not prefix:
        own_names = extract_backbone_state_dict(state_dict)
        if not set(own_names) & set(own):
            raise CheckpointError('The checkpoint shares no parameter names with InceptionNeXt; '
                                  'it is not an InceptionNeXt checkpoint')
        state_dict.clear()
        state_dict.update(own_names)
    ours = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in ours.items()
                  if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    if mismatched:
        key, got, want = mismatched[0]
        arch = getattr(backbone, 'arch_name', type(backbone).__name__)
        raise CheckpointError(
            f'The checkpoint does not fit InceptionNeXt-{arch}: {len(mismatched)} tensors have '
            f'the wrong shape (first: {key} is {list(got)} in the checkpoint, {list(want)} in '
            f'the model). The checkpoint looks like arch {describe_arch(ours)}; use the '
            'matching arch or checkpoint.')
    if not prefix:
        print_log(f'Loaded {len(set(ours) & set(own))}/{len(own)} backbone tensors',
                  logger='current')
