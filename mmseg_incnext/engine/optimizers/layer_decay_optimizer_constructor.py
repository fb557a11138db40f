"""Layer-wise and stage-wise learning-rate decay for an InceptionNeXt backbone.

mmseg's ``LearningRateDecayOptimizerConstructor`` gives each ConvNeXt parameter a layer id
from its name (``get_layer_id_for_convnext``, ``get_stage_id_for_convnext``) and raises
``NotImplementedError`` for any other backbone. InceptionNeXt has ConvNeXt's layout (a
patchify stem, four stages of blocks, a downsampling layer before stages 1-3), so the same
ids apply with ConvNeXt's module names mapped onto ours:

=========================  ==========================  ============  ============
InceptionNeXt              ConvNeXt (mmseg)            layer_wise    stage_wise
=========================  ==========================  ============  ============
``stem``                   ``downsample_layers.0``     0             0
``stages.0.blocks.j``      ``stages.0.j``              1             1
``stages.1.downsample``    ``downsample_layers.1``     2             0
``stages.1.blocks.j``      ``stages.1.j``              2             2
``stages.2.downsample``    ``downsample_layers.2``     3             0
``stages.2.blocks.j``      ``stages.2.j``              3 + j // 3    3
``stages.3.downsample``    ``downsample_layers.3``     N             0
``stages.3.blocks.j``      ``stages.3.j``              N             4
``norm0`` .. ``norm3``     ``norm0`` .. ``norm3``      N + 1         N + 1
not the backbone (heads)   not the backbone            N + 1         N + 1
=========================  ==========================  ============  ============

``N`` is ``paramwise_cfg['num_layers']``; a parameter with id ``i`` gets the lr
``base_lr * decay_rate ** (N + 1 - i)``, so id ``N + 1`` keeps the base lr. As in mmseg,
stage-wise decay puts every downsampling layer (the stem included) at id 0, and the output
norms fall in mmseg's last branch with the heads: they are new for segmentation (the
ImageNet checkpoints have none), so they train at the base lr like the heads.
"""
import logging
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmseg_incnext.models.backbones.inceptionnext import InceptionNeXt

__all__ = ['InceptionNeXtLayerDecayOptimizerConstructor', 'get_layer_id', 'min_num_layers',
           'DECAY_TYPES']

DECAY_TYPES = ('layer_wise', 'stage_wise')
_OWN_KEYS = ('decay_rate', 'decay_type', 'num_layers')
# DefaultOptimWrapperConstructor's own paramwise keys, honoured as it does.
_MMENGINE_KEYS = ('custom_keys', 'bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult',
                  'flat_decay_mult', 'dwconv_decay_mult', 'dcn_offset_lr_mult',
                  'bypass_duplicate')
# mmseg's constructor exempts 1-D parameters and biases from weight decay.
_NO_DECAY_DEFAULTS = dict(bias_decay_mult=0.0, flat_decay_mult=0.0)
_NUM_STAGES = 4
_OUTPUT_NORM = re.compile(r'norm\d+')


def get_layer_id(name: str, decay_type: str, num_layers: int) -> int:
    """The layer id of the segmentor parameter ``name`` (``backbone.stem.0.weight``,
    ``decode_head.conv_seg.bias``) under ``decay_type``, per the table of this module.

    Raises:
        ValueError: for an unknown ``decay_type``, or a backbone parameter whose name the
            table does not cover.
    """
    if decay_type not in DECAY_TYPES:
        raise ValueError(f'decay_type must be one of {DECAY_TYPES}, got {decay_type!r}')
    head_id = num_layers + 1
    parts = name.split('.')
    if parts[0] != 'backbone':
        return head_id
    if len(parts) > 2 and parts[1] == 'stem':
        return 0
    if _OUTPUT_NORM.fullmatch(parts[1]) and len(parts) > 2:
        return head_id
    if len(parts) > 4 and parts[1] == 'stages' and parts[2].isdigit():
        stage = int(parts[2])
        if stage < _NUM_STAGES and parts[3] == 'downsample' and stage > 0:
            if decay_type == 'stage_wise':
                return 0
            return (None, 2, 3, num_layers)[stage]
        if stage < _NUM_STAGES and parts[3] == 'blocks' and len(parts) > 5 \
                and parts[4].isdigit():
            if decay_type == 'stage_wise':
                return stage + 1
            block = int(parts[4])
            return (1, 2, 3 + block // 3, num_layers)[stage]
    raise ValueError(f'no layer id for backbone parameter {name!r}: the InceptionNeXt layer '
                     'decay rule covers backbone.stem, backbone.stages.<0-3>.downsample, '
                     'backbone.stages.<0-3>.blocks.<j> and backbone.norm<i>')


def min_num_layers(depths: Sequence[int], decay_type: str) -> int:
    """The smallest ``num_layers`` that keeps the last stage above every earlier layer (so
    no backbone layer reaches the heads' base lr): stage 2's last layer-wise id plus one,
    or the number of stages for stage-wise decay."""
    if decay_type not in DECAY_TYPES:
        raise ValueError(f'decay_type must be one of {DECAY_TYPES}, got {decay_type!r}')
    if decay_type == 'stage_wise':
        return _NUM_STAGES
    return 3 + max(depths[2] - 1, 0) // 3 + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class InceptionNeXtLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Optimizer wrapper constructor with layer-wise or stage-wise lr decay over an
    InceptionNeXt backbone (mmseg's ConvNeXt rule; see this module's table).

    Config::

        optim_wrapper = dict(
            constructor='InceptionNeXtLayerDecayOptimizerConstructor',
            optimizer=dict(type='AdamW', lr=6e-5, weight_decay=0.01),
            paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))

    ``paramwise_cfg`` keys:
        decay_rate (float): lr factor per layer id, in (0, 1]. Required.
        decay_type (str): ``'layer_wise'`` (default, as mmseg) or ``'stage_wise'``.
        num_layers (int): ``N`` of the table; at least :func:`min_num_layers` of the arch
            (layer-wise: 5 for atto, 6 for tiny, 12 for small and base; stage-wise: 4).
            Required.
        custom_keys, norm_decay_mult, bias_decay_mult, flat_decay_mult, bias_lr_mult,
        dwconv_decay_mult, dcn_offset_lr_mult, bypass_duplicate: as in mmengine's
            ``DefaultOptimWrapperConstructor``, which sets each parameter's lr and weight
            decay first; the layer's factor then multiplies that lr. ``bias_decay_mult``
            and ``flat_decay_mult`` default to 0, so biases and all 1-D parameters (norms,
            layer scales ``gamma``) get no weight decay, as in mmseg's constructor.

    Each param group holds the parameters that share all settings, with ``layer_id`` and
    ``lr_scale`` for inspection.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(cfg) - set(_OWN_KEYS) - set(_MMENGINE_KEYS))
        if unknown:
            raise KeyError(f'InceptionNeXtLayerDecayOptimizerConstructor: unknown paramwise_cfg '
                           f'key(s) {unknown}; allowed: {", ".join(_OWN_KEYS + _MMENGINE_KEYS)}')
        missing = [key for key in ('decay_rate', 'num_layers') if key not in cfg]
        if missing:
            raise KeyError(f'InceptionNeXtLayerDecayOptimizerConstructor needs paramwise_cfg '
                           f'key(s) {missing}')
        self.decay_rate = cfg.pop('decay_rate')
        self.decay_type = cfg.pop('decay_type', 'layer_wise')
        self.num_layers = cfg.pop('num_layers')
        if self.decay_type not in DECAY_TYPES:
            raise ValueError(f'paramwise_cfg decay_type must be one of {DECAY_TYPES}, got '
                             f'{self.decay_type!r}')
        if isinstance(self.decay_rate, bool) or not isinstance(self.decay_rate, (int, float)) \
                or not 0 < self.decay_rate <= 1:
            raise ValueError(f'paramwise_cfg decay_rate must be a number in (0, 1], got '
                             f'{self.decay_rate!r}')
        if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, int):
            raise TypeError(f'paramwise_cfg num_layers must be an int, got {self.num_layers!r}')
        super().__init__(optim_wrapper_cfg, cfg)
        if self.base_lr is None:
            raise ValueError('InceptionNeXtLayerDecayOptimizerConstructor needs the optimizer '
                             "config's lr, which the decayed lrs are fractions of")
        for key, value in _NO_DECAY_DEFAULTS.items():
            self.paramwise_cfg.setdefault(key, value)

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        """Add the parameters of the segmentor ``module`` to ``params``, grouped by their
        settings, each lr multiplied by its layer's factor."""
        if prefix:  # mmengine's recursion into submodules
            super().add_params(params, module, prefix, is_dcn_module)
            return
        self._check_backbone(module)
        names = {id(param): name for name, param in module.named_parameters()}
        per_param: List[dict] = []
        super().add_params(per_param, module)
        groups: Dict[Tuple, dict] = {}
        for group in per_param:
            (param, ) = group['params']
            layer_id = get_layer_id(names[id(param)], self.decay_type, self.num_layers)
            scale = self.decay_rate ** (self.num_layers + 1 - layer_id)
            settings = {k: v for k, v in group.items() if k != 'params'}
            settings.update(lr=settings.get('lr', self.base_lr) * scale, layer_id=layer_id,
                            lr_scale=scale)
            key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
            groups.setdefault(key, dict(params=[], **settings))['params'].append(param)
        for group in groups.values():
            print_log(f'layer decay ({self.decay_type}, {self.decay_rate}, num_layers '
                      f'{self.num_layers}): layer {group["layer_id"]}: lr {group["lr"]:.4g} '
                      f'(x{group["lr_scale"]:.4f}), weight_decay '
                      f'{group.get("weight_decay", self.base_wd)}, '
                      f'{len(group["params"])} tensors', logger='current', level=logging.INFO)
        params.extend(groups.values())

    def _check_backbone(self, model: nn.Module) -> None:
        backbone = getattr(model, 'backbone', None)
        if not isinstance(backbone, InceptionNeXt):
            raise TypeError('InceptionNeXtLayerDecayOptimizerConstructor needs a segmentor '
                            'whose backbone is InceptionNeXt, got '
                            f'{type(backbone).__name__ if backbone is not None else "none"} '
                            f'in {type(model).__name__}')
        depths = backbone.arch['depths']
        if len(depths) != _NUM_STAGES:
            raise ValueError(f'the layer decay rule is defined for {_NUM_STAGES} stages; '
                             f'InceptionNeXt-{backbone.arch_name} has depths {tuple(depths)}')
        needed = min_num_layers(depths, self.decay_type)
        if self.num_layers < needed:
            raise ValueError(
                f'paramwise_cfg num_layers={self.num_layers} is too small for '
                f'InceptionNeXt-{backbone.arch_name} (depths {tuple(depths)}) with '
                f'{self.decay_type} decay: it needs at least {needed}, or a backbone layer '
                "would get the heads' lr or more")
