"""InceptionNeXt backbone (Yu et al., "InceptionNeXt: When Inception Meets ConvNeXt", CVPR 2024).

A plain module graph in the shape of timm's ``inception_next.py``: every layer that holds a
parameter runs through its module's ``forward``, in every mode, so forward hooks, hook-based
counters (thop, ptflops, torchinfo) and ``torch.fx`` see the whole network. Parameter names
follow the released ImageNet checkpoints (and timm's ``inception_next_*``), so the weights
load by exact key match; see :mod:`mmseg_incnext.models.backbones.weights`. Folding the
BatchNorms and layer scales into the convolutions is an explicit deploy step,
:meth:`InceptionNeXt.switch_to_deploy`.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg.registry import MODELS
from mmseg_incnext.models.backbones.arch import ARCH_DEFAULTS, ARCH_SETTINGS
from mmseg_incnext.models.backbones.weights import check_backbone_weights
from mmseg_incnext.utils.compat import register_load_state_dict_pre_hook
from .fusion import fold_norm_after_conv, fold_norm_before_pointwise_conv, fold_scale_into_conv


def check_input(x: torch.Tensor, in_channels: int, arch_name: str) -> None:
    """Refuse anything but an ``N x in_channels x H x W`` batch, naming what was given."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f'InceptionNeXt-{arch_name} expects an N x {in_channels} x H x W '
                         f'input (in_channels={in_channels}), got shape {tuple(x.shape)}')


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom and right of ``x`` so both sides are multiples of ``multiple``.

    The stem (4x4, stride 4) and the downsampling convs (2x2, stride 2) have no padding, so
    an input whose size is not a multiple of 32 would otherwise lose its last rows and
    columns; with this padding every pixel is seen and the outputs are ceil(size / stride).
    A no-op (and identical to the reference) for sizes that are already multiples. In a
    traced graph (ONNX export), which must hold for every size, it pads ``multiple - 1``
    always: before a conv whose kernel and stride are ``multiple`` that is the same
    computation, as the rows beyond the next multiple are never read.
    """
    if torch.jit.is_tracing():
        return F.pad(x, (0, multiple - 1, 0, multiple - 1))
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


# Leaves of an FX graph: they decide on the input's shape, which symbolic tracing cannot.
torch.fx.wrap('check_input')
torch.fx.wrap('pad_to_multiple')


class Stem(nn.Sequential):
    """Patchify stem: 4x4 stride-4 conv, then norm (keys ``stem.0``, ``stem.1``)."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=4),
            build_norm_layer(norm_cfg, out_channels)[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](self[0](pad_to_multiple(x, 4)))


class Downsample(nn.Sequential):
    """Norm, then 2x2 stride-2 conv (keys ``downsample.0``, ``downsample.1``)."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict) -> None:
        super().__init__(
            build_norm_layer(norm_cfg, in_channels)[1],
            nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](pad_to_multiple(self[0](x), 2))


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
        self.split_sizes = (channels - 3 * branch_channels, ) + (branch_channels, ) * 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, self.split_sizes, dim=1)
        return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)),
                         dim=1)


class ConvMlp(nn.Module):
    """Channel MLP: 1x1 conv, exact (erf) GELU, 1x1 conv (keys ``fc1``, ``fc2``)."""

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden_channels, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MetaNeXtBlock(nn.Module):
    """MetaNeXt block: ``x + drop_path(gamma * mlp(norm(token_mixer(x))))``.

    Args:
        channels: Number of channels.
        mlp_ratio: Hidden width of the MLP relative to ``channels``.
        token_mixer_cfg: Keyword arguments of :class:`InceptionDWConv2d`.
        norm_cfg: Config of the norm after the token mixer (BN in the paper).
        layer_scale_init_value: Initial value of the per-channel scale ``gamma``;
            0 disables the layer scale.
        drop_path_rate: Stochastic depth rate of this block (mmcv's ``DropPath``).
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
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)

    def switch_to_deploy(self) -> None:
        """Fold the norm into ``mlp.fc1`` (token mixer and norm are per-channel, so
        ``fc1(norm(y))`` is one conv of ``y``) and ``gamma`` into ``mlp.fc2``."""
        if fold_norm_before_pointwise_conv(self.norm, self.mlp.fc1):
            self.norm = nn.Identity()
        if self.gamma is not None:
            fold_scale_into_conv(self.mlp.fc2, self.gamma)
            self.gamma = None


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
        if self.with_cp and self.training:
            for block in self.blocks:
                x = cp.checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


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
        with_cp (bool): Gradient checkpointing of each block in training, to save memory.
        channels_last (bool): Keep the parameters and the input in channels-last memory
            format, the faster one for these convolutions. Defaults to True.
        init_cfg (dict | list | None): mmengine's initializers; ``dict(type='Pretrained',
            checkpoint='inceptionnext://tiny')`` loads the released ImageNet weights, and a
            path or URL a released ``.pth``, a timm ``.safetensors`` or an mmseg segmentor
            checkpoint (see :mod:`mmseg_incnext.models.backbones.weights`). Without it,
            truncated-normal convolutions, as the reference.

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
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
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
        self.deployed = False

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

        self.to(memory_format=self.memory_format)
        self._freeze_stages()
        register_load_state_dict_pre_hook(self, check_backbone_weights)

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
        """mmengine's initialisation of ``init_cfg``; without one, truncated-normal
        convolutions, as the reference."""
        if not self.init_cfg and not self._is_init:
            self.apply(self._init_conv)
        super().init_weights()

    @staticmethod
    def _init_conv(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        check_input(x, self.in_channels, self.arch_name)
        x = self.stem(x.contiguous(memory_format=self.memory_format))
        outs = []
        for i in range(max(self.out_indices) + 1):  # no stage after the last output
            x = self.stages[i](x)
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(x))
        return tuple(outs)

    def switch_to_deploy(self) -> 'InceptionNeXt':
        """Fold, in place, every BatchNorm that follows a convolution or precedes a 1x1 one
        (the stem's, each block's) and every layer scale into those convolutions, for
        inference: the eval-mode outputs stay the same (to 1e-5 in fp32, tested), with two
        passes over each block's output fewer. The downsampling and output norms stay (a
        norm before a padded conv cannot fold exactly), as do norms without running
        statistics. The model is inference-only afterwards: ``train()`` refuses it.
        Returns the model, in eval mode."""
        if not self.deployed:
            if fold_norm_after_conv(self.stem[0], self.stem[1]):
                self.stem[1] = nn.Identity()
            for stage in self.stages:
                for block in stage.blocks:
                    block.switch_to_deploy()
            self.deployed = True
        return self.eval()

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
        if mode and self.deployed:
            raise RuntimeError(
                f'InceptionNeXt-{self.arch_name} was switched to deploy mode (its BatchNorms '
                'and layer scales are folded into the convolutions) and cannot train; build '
                'the model again and load the checkpoint to train it')
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
