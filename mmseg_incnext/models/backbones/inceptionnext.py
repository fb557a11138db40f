"""InceptionNeXt backbone (Yu et al., "InceptionNeXt: When Inception Meets ConvNeXt", CVPR 2024).

Parameter names follow the released ImageNet checkpoints (and timm's ``inception_next_*``)
so that the weights load by exact key match; see :mod:`mmseg_incnext.weights`.
"""
import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg.registry import MODELS
from mmseg_incnext.arch import ARCH_DEFAULTS, ARCH_SETTINGS
from mmseg_incnext.compat import autocast_enabled, depthwise_training_prefers_nchw
from mmseg_incnext.weights import load_pretrained
from .inceptionnext_fused import fuse_for_inference
from .layers import Downsample, Stem, check_input, is_foldable_norm, run_stages
from .pointwise_mlp import pointwise_mlp


class InceptionDWConv2d(nn.Module):
    """Inception depthwise convolution: the token mixer of InceptionNeXt.

    The channels are split into four groups, processed in parallel and concatenated back:
    ``(identity, square k x k, band 1 x k_b, band k_b x 1)``.  The identity group comes
    first, as in the released weights (the paper's Algorithm 1 lists it last).

    Args:
        channels: Number of input (and output) channels.
        square_kernel_size: Kernel size of the small square depthwise branch.
        band_kernel_size: Length of the two orthogonal band kernels.
        branch_ratio: Fraction of the channels given to each convolution branch.
    """

    def __init__(self,
                 channels: int,
                 square_kernel_size: int = 3,
                 band_kernel_size: int = 11,
                 branch_ratio: float = 0.125) -> None:
        super().__init__()
        branch_channels = int(channels * branch_ratio)
        if branch_channels < 1 or 3 * branch_channels > channels:
            raise ValueError(
                f'branch_ratio={branch_ratio} gives {branch_channels} channels per branch for '
                f'{channels} channels; it must leave at least one channel per branch and at '
                'most all channels to the three convolution branches')
        self.dwconv_hw = nn.Conv2d(
            branch_channels, branch_channels, square_kernel_size,
            padding=square_kernel_size // 2, groups=branch_channels)
        self.dwconv_w = nn.Conv2d(
            branch_channels, branch_channels, (1, band_kernel_size),
            padding=(0, band_kernel_size // 2), groups=branch_channels)
        self.dwconv_h = nn.Conv2d(
            branch_channels, branch_channels, (band_kernel_size, 1),
            padding=(band_kernel_size // 2, 0), groups=branch_channels)
        self.identity_channels = channels - 3 * branch_channels
        self.branch_channels = branch_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, *parts = torch.split(
            x, (self.identity_channels, ) + (self.branch_channels, ) * 3, dim=1)
        convs = (self.dwconv_hw, self.dwconv_w, self.dwconv_h)
        if depthwise_training_prefers_nchw(x):
            return torch.cat((x_id, ) + tuple(
                _conv_in_nchw(conv, part).contiguous(memory_format=torch.channels_last)
                for conv, part in zip(convs, parts)), dim=1)
        return torch.cat((x_id, ) + tuple(conv(part) for conv, part in zip(convs, parts)),
                         dim=1)


def _conv_in_nchw(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` with the input and the weight in NCHW strides (a channels-last weight
    would make the convolution run channels-last)."""
    return conv._conv_forward(x.contiguous(), conv.weight.clone(
        memory_format=torch.contiguous_format), conv.bias)


class ConvMlp(nn.Module):
    """Channel MLP made of two 1x1 convolutions with a GELU between them.

    ``forward(x, out_scale)`` also multiplies the output channels by ``out_scale`` (the
    block's layer scale). Outside autocast the product is applied to whichever is smaller,
    ``fc2``'s weight or the output map (the same math, equal to 1e-5 in fp32, tested): at
    segmentation resolutions folding it into the weight saves a pass over the activations,
    forward and backward. The 1x1 convs run through :func:`pointwise_mlp` with the convs'
    parameters, so hooks on ``fc1``/``fc2`` themselves do not fire.
    """

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden_channels, 1)
        self.fc2 = nn.Conv2d(hidden_channels, channels, 1)

    def forward(self, x: torch.Tensor, out_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        w2, b2 = self.fc2.weight, self.fc2.bias
        # Not under autocast: a folded 1e-6 scale underflows in fp16 weights, and unfolded the
        # product promotes the branch to fp32 as in the reference.
        fold_scale = (out_scale is not None and w2.numel() < x.numel()
                      and not autocast_enabled(x.device.type))
        if fold_scale:
            w2 = w2 * out_scale.view(-1, 1, 1, 1)
            b2 = None if b2 is None else b2 * out_scale
        out = pointwise_mlp(x, self.fc1.weight, self.fc1.bias, w2, b2)
        if out_scale is not None and not fold_scale:
            out = out * out_scale.view(1, -1, 1, 1)
        return out


def add_residual(x: torch.Tensor, y: torch.Tensor, drop_prob: float,
                 training: bool) -> torch.Tensor:
    """``x + drop_path(y)`` in one pass over the maps.

    Stochastic depth as in mmcv's ``DropPath`` (the same random draw: a sample's branch is
    kept with probability ``1 - drop_prob`` and scaled by its inverse), applied with a
    single ``addcmul`` instead of a division, a multiplication and an addition.
    """
    if drop_prob == 0. or not training:
        return x + y
    keep_prob = 1 - drop_prob
    shape = (x.shape[0], ) + (1, ) * (x.dim() - 1)
    keep = (keep_prob + torch.rand(shape, dtype=y.dtype, device=y.device)).floor_()
    return torch.addcmul(x, y, keep.div_(keep_prob))


class MetaNeXtBlock(nn.Module):
    """MetaNeXt block: ``x + drop_path(gamma * mlp(norm(token_mixer(x))))``.

    Args:
        channels: Number of channels.
        mlp_ratio: Hidden width of the MLP relative to ``channels``.
        token_mixer_cfg: Keyword arguments of :class:`InceptionDWConv2d`.
        norm_cfg: Config of the norm after the token mixer (BN in the paper).
        layer_scale_init_value: Initial value of the per-channel scale ``gamma``;
            0 disables the layer scale.
        drop_path_rate: Stochastic depth rate of this block.
    """

    def __init__(self,
                 channels: int,
                 mlp_ratio: float = 4.,
                 token_mixer_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 layer_scale_init_value: float = 1e-6,
                 drop_path_rate: float = 0.) -> None:
        super().__init__()
        self.token_mixer = InceptionDWConv2d(channels, **(token_mixer_cfg or {}))
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.mlp = ConvMlp(channels, int(mlp_ratio * channels))
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(torch.full((channels, ), float(layer_scale_init_value)))
        else:
            self.gamma = None
        self.drop_path_rate = float(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)), out_scale=self.gamma)
        return add_residual(x, y, self.drop_path_rate, self.training)


class MetaNeXtStage(nn.Module):
    """A stage: optional downsampling (norm, then 2x2 stride-2 conv) followed by blocks.

    The first stage has no downsampling layer (the stem already reduces by 4).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 depth: int,
                 downsample: bool,
                 drop_path_rates: Sequence[float],
                 with_cp: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 **block_kwargs) -> None:
        super().__init__()
        if downsample:
            self.downsample = Downsample(in_channels, out_channels, norm_cfg)
        else:
            self.downsample = None
        self.blocks = nn.Sequential(*[
            MetaNeXtBlock(out_channels, drop_path_rate=rate, norm_cfg=norm_cfg, **block_kwargs)
            for rate in drop_path_rates[:depth]
        ])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class _FusedCopy(NamedTuple):
    """The cached fused copy, the tensors it was built from and their versions' sum (an
    in-place change raises a tensor's version, so the sum changes with any of them)."""
    module: nn.Module
    sources: Tuple[torch.Tensor, ...]
    version_sum: int


@MODELS.register_module()
class InceptionNeXt(BaseModule):
    """InceptionNeXt backbone for dense prediction.

    Config keys:
        arch (str | dict): ``'atto'``, ``'tiny'``, ``'small'``, ``'base'`` (see
            :attr:`arch_settings`) or a dict with ``depths``, ``dims`` and optionally
            ``mlp_ratios``, ``square_kernel_size``, ``band_kernel_size``, ``branch_ratio``.
        in_channels (int): Channels of the input image. Defaults to 3.
        out_indices (Sequence[int] | int): Stages whose outputs are returned; negative
            indices count from the last stage. Defaults to ``(0, 1, 2, 3)``.
        drop_path_rate (float): Peak stochastic depth rate, increasing linearly over blocks.
        layer_scale_init_value (float): Initial layer scale; 0 disables it. Defaults to 1e-6.
        norm_cfg (dict): Norm of the stem, downsampling layers and blocks (``BN`` as in the
            paper; ``SyncBN`` for multi-GPU training).
        out_norm_cfg (dict | None): Norm added on each returned stage output, as the
            authors do for segmentation; ``None`` returns the raw stage outputs.
        frozen_stages (int): Freeze (eval mode, no gradient) the stem and the first
            ``frozen_stages`` stages with their output norms; 0 freezes nothing.
        norm_eval (bool): Keep every BatchNorm in eval mode during training.
        with_cp (bool): Gradient checkpointing of each block, to save memory.
        channels_last (bool): Run in channels-last memory format (parameters and input),
            which is faster for these convolutions on CPUs and recent GPUs. Defaults to True.
        fast_inference (bool): In eval mode without autograd (testing, ``inference_model``),
            run a fused copy with the BatchNorms and layer scales folded into the
            convolutions (:mod:`.inceptionnext_fused`); outputs equal to 1e-4. It needs
            norms with running statistics (BN, SyncBN) in ``norm_cfg`` and
            ``out_norm_cfg``; with any other norm it is turned off at construction, with a
            warning. The copy is built at the first such forward and again after
            ``train()`` or ``eval()``, ``load_state_dict``, ``.to()``/``.half()``/
            ``.float()``, and after an in-place change of a parameter or buffer (an
            optimizer step, ``p.copy_`` under ``no_grad``: the tensors' versions are
            compared at each such forward). Writes through ``.data`` bypass those
            versions; they are seen at the next ``eval()``, which mmengine's loops call
            after their hooks (the EMA hook swaps weights so). Forward hooks on the
            backbone's submodules do not fire in the fused copy. Defaults to True.
        init_cfg (dict | list | None): ``dict(type='Pretrained', checkpoint=...)`` loads a
            released ``.pth``, a timm ``.safetensors``, an mmseg segmentor checkpoint or a
            URL (see :mod:`mmseg_incnext.weights`); otherwise truncated-normal init.

    Outputs:
        A tuple of NCHW feature maps, one per entry of ``out_indices``, at strides
        4, 8, 16 and 32: ``ceil(H / stride) x ceil(W / stride)`` for any input size.
    """

    arch_settings: Dict[str, dict] = ARCH_SETTINGS
    arch_defaults: dict = ARCH_DEFAULTS

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 out_norm_cfg: Optional[dict] = dict(type='BN', requires_grad=True),
                 frozen_stages: int = 0,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 channels_last: bool = True,
                 fast_inference: bool = True,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self._fused_cache: Optional[_FusedCopy] = None
        self.arch = self._resolve_arch(arch)
        self.arch_name = arch if isinstance(arch, str) else 'custom'
        depths, dims = self.arch['depths'], self.arch['dims']
        self.num_stages = len(depths)
        self.dims = dims
        self.out_indices = self._resolve_out_indices(out_indices, self.num_stages)
        if not 0 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} is out of range: '
                             f'InceptionNeXt-{self.arch_name} has {self.num_stages} stages, '
                             f'so it must be in [0, {self.num_stages}]')
        if in_channels < 1:
            raise ValueError(f'in_channels must be positive, got {in_channels}')
        self.in_channels = in_channels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

        self.stem = Stem(in_channels, dims[0], norm_cfg)

        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        token_mixer_cfg = dict(square_kernel_size=self.arch['square_kernel_size'],
                               band_kernel_size=self.arch['band_kernel_size'],
                               branch_ratio=self.arch['branch_ratio'])
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.stages.append(MetaNeXtStage(
                in_channels=dims[max(i - 1, 0)],
                out_channels=dims[i],
                depth=depth,
                downsample=i > 0,
                drop_path_rates=rates[start:start + depth],
                with_cp=with_cp,
                norm_cfg=norm_cfg,
                mlp_ratio=self.arch['mlp_ratios'][i],
                token_mixer_cfg=token_mixer_cfg,
                layer_scale_init_value=layer_scale_init_value))

        for i in self.out_indices:
            norm = build_norm_layer(out_norm_cfg, dims[i])[1] if out_norm_cfg else nn.Identity()
            self.add_module(f'norm{i}', norm)

        self.fast_inference = fast_inference and self._can_fuse_norms(norm_cfg, out_norm_cfg)
        self.to(memory_format=self.memory_format)
        self._freeze_stages()

    def _can_fuse_norms(self, norm_cfg: dict, out_norm_cfg: Optional[dict]) -> bool:
        """Whether the fused copy can fold this model's norms; if not, says so in the log."""
        built = (('norm_cfg', norm_cfg, self.stem[1]),
                 ('out_norm_cfg', out_norm_cfg, getattr(self, f'norm{self.out_indices[0]}')))
        for key, cfg, norm in built:
            if not is_foldable_norm(norm):
                print_log(
                    f'InceptionNeXt-{self.arch_name}: fast_inference is off: {key}={cfg} '
                    f'builds {type(norm).__name__}, and only BatchNorm with running '
                    "statistics (BN, SyncBN) folds into the fused copy's convolutions; "
                    'eval-mode inference runs the plain path. Pass fast_inference=False to '
                    'choose that without this message.',
                    logger='current', level=logging.WARNING)
                return False
        return True

    @classmethod
    def _resolve_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise KeyError(f'Unknown InceptionNeXt arch {arch!r}; choose one of '
                               f'{sorted(cls.arch_settings)} or pass a dict with depths and dims')
            return {**cls.arch_defaults, **cls.arch_settings[arch]}
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        unknown = set(arch) - {'depths', 'dims'} - set(cls.arch_defaults)
        missing = {'depths', 'dims'} - set(arch)
        if unknown or missing:
            raise KeyError(f'Invalid custom arch: missing keys {sorted(missing)}, unknown keys '
                           f'{sorted(unknown)}; allowed: depths, dims, '
                           f'{", ".join(cls.arch_defaults)}')
        resolved = {**cls.arch_defaults, **arch}
        n = len(resolved['depths'])
        if isinstance(resolved['mlp_ratios'], (int, float)):
            resolved['mlp_ratios'] = (resolved['mlp_ratios'], ) * n
        if n == 0 or len(resolved['dims']) != n or len(resolved['mlp_ratios']) != n:
            raise ValueError('Invalid custom arch: depths, dims and mlp_ratios must have the same '
                             f'non-zero length, got {resolved["depths"]}, {resolved["dims"]}, '
                             f'{resolved["mlp_ratios"]}')
        return resolved

    @staticmethod
    def _resolve_out_indices(out_indices: Union[int, Sequence[int]],
                             num_stages: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        resolved = []
        for index in out_indices:
            if not -num_stages <= index < num_stages:
                raise IndexError(f'out_indices entry {index} is out of range for '
                                 f'{num_stages} stages (valid: {-num_stages}..{num_stages - 1})')
            resolved.append(index % num_stages)
        if len(set(resolved)) != len(resolved):
            raise ValueError(f'out_indices {tuple(out_indices)} name a stage twice')
        return tuple(sorted(resolved))

    def init_weights(self) -> None:
        """Initialise as mmengine does: the ``init_cfg`` entries other than ``Pretrained``
        first, then the ``Pretrained`` one, read by :func:`~mmseg_incnext.weights.
        load_pretrained` (any checkpoint format, exact key matching, its own errors) with
        ``PretrainedInit``'s options ``prefix`` and ``map_location``. Without ``init_cfg``:
        truncated-normal convolutions, as the reference."""
        if self._is_init:
            super().init_weights()  # mmengine only warns that it was called again
            return
        cfgs = [cfg for cfg in (self.init_cfg if isinstance(self.init_cfg, list)
                                else [self.init_cfg]) if cfg]
        pretrained = [cfg for cfg in cfgs if cfg.get('type') == 'Pretrained']
        if not pretrained:
            if not cfgs:
                self.apply(self._init_conv)
            super().init_weights()
            return
        if len(pretrained) > 1:
            raise ValueError(f'init_cfg has {len(pretrained)} Pretrained entries; give one')
        options = dict(pretrained[0])
        options.pop('type')
        if 'checkpoint' not in options:
            raise KeyError("init_cfg of type 'Pretrained' needs a 'checkpoint' key")
        unknown = set(options) - {'checkpoint', 'prefix', 'map_location'}
        if unknown:
            raise KeyError(f'init_cfg of type Pretrained: unknown option(s) {sorted(unknown)}; '
                           'InceptionNeXt accepts checkpoint, prefix and map_location')
        own_cfg, self.init_cfg = self.init_cfg, [cfg for cfg in cfgs if cfg not in pretrained]
        try:
            super().init_weights()  # the other entries, through mmengine
        finally:
            self.init_cfg = own_cfg
        load_pretrained(self, options['checkpoint'], prefix=options.get('prefix'),
                        map_location=options.get('map_location', 'cpu'))

    @staticmethod
    def _init_conv(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        check_input(x, self.in_channels, self.arch_name)
        if self.fast_inference and not self.training and not torch.is_grad_enabled():
            return self._fused_copy()(x)
        return run_stages(x.contiguous(memory_format=self.memory_format), self.stem,
                          self.stages, {i: getattr(self, f'norm{i}') for i in self.out_indices})

    def _fused_copy(self) -> nn.Module:
        """The fused inference copy of the current weights: the cached one unless a tensor
        it was built from changed in place since (the other changes drop the cache)."""
        cache = self._fused_cache
        if cache is None or sum(t._version for t in cache.sources) != cache.version_sum:
            sources = (*self.parameters(), *self.buffers())
            # Built outside inference mode so that its tensors are ordinary ones.
            with torch.inference_mode(False):
                fused = fuse_for_inference(self, memory_format=self.memory_format)
            cache = _FusedCopy(fused, sources, sum(t._version for t in sources))
            self._fused_cache = cache
        return cache.module

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._fused_cache = None  # also when loading with assign=True, which swaps tensors
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, *args, **kwargs) -> 'InceptionNeXt':
        self._fused_cache = None  # .to(), .half(), .cuda(): the copy has the old dtype/device
        return super()._apply(*args, **kwargs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages == 0:
            return
        frozen: List[nn.Module] = [self.stem]
        for i in range(self.frozen_stages):
            frozen.append(self.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'norm{i}'))
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'InceptionNeXt':
        super().train(mode)
        # eval() too: it is the refresh for writes through .data, which no version counts
        self._fused_cache = None
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
