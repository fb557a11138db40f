"""The pieces the backbone (:mod:`.inceptionnext`) and its fused inference copy
(:mod:`.inceptionnext_fused`) both use: the input check, the padding to the stride, the
stage loop, the stem and the downsampling layers, and which norms the copy can fold.

Both modules import this one and it imports neither, so the model can build its fused copy
by calling the fuser directly.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from torch.nn.modules.batchnorm import _BatchNorm


def check_input(x: torch.Tensor, in_channels: int, arch_name: str) -> None:
    """Refuse anything but an ``N x in_channels x H x W`` batch, naming what was given."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f'InceptionNeXt-{arch_name} expects an N x {in_channels} x H x W '
                         f'input (in_channels={in_channels}), got shape {tuple(x.shape)}')


def pad_to_multiple(x: torch.Tensor, multiple: int,
                    fill: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pad the bottom and right of ``x`` so both sides are multiples of ``multiple``.

    The stem (4x4, stride 4) and the downsampling convs (2x2, stride 2) have no padding, so
    an input whose size is not a multiple of 32 would otherwise lose its last rows and
    columns; with this padding every pixel is seen and the outputs are ceil(size / stride).
    A no-op (and identical to the reference) for sizes that are already multiples.
    The padding is zeros, or the per-channel values ``fill`` (shape ``(C,)``).
    """
    if torch.jit.is_tracing():
        return _pad_for_any_size(x, multiple, fill)
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return x
    x = F.pad(x, (0, pad_w, 0, pad_h))
    if fill is not None:
        fill = fill.to(x.dtype).view(1, -1, 1, 1)
        x[..., height:, :] = fill
        x[..., :height, width:] = fill
    return x


def _pad_for_any_size(x: torch.Tensor, multiple: int,
                      fill: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`pad_to_multiple` for a traced graph (ONNX export) that must hold for every
    input size: pads ``multiple - 1`` rows and columns whatever the size. Before a conv
    whose kernel and stride are ``multiple`` that is the same computation: it gives
    ``ceil(size / multiple)`` outputs, and the rows beyond the next multiple are never read.
    """
    if fill is None:
        return F.pad(x, (0, multiple - 1, 0, multiple - 1))
    fill = fill.to(x.dtype).view(1, -1, 1, 1)
    return F.pad(x - fill, (0, multiple - 1, 0, multiple - 1)) + fill


def run_stages(x: torch.Tensor, stem: nn.Module, stages: Sequence[nn.Module],
               out_norms: Dict[int, Callable[[torch.Tensor], torch.Tensor]]
               ) -> Tuple[torch.Tensor, ...]:
    """The stem, then the stages in order; returns ``out_norms[i]`` of each stage ``i`` in
    ``out_norms``, in stage order, and runs no stage after the last of them."""
    x = stem(x)
    outs = []
    last = max(out_norms)
    for i, stage in enumerate(stages):
        x = stage(x)
        if i in out_norms:
            outs.append(out_norms[i](x))
        if i == last:
            break
    return tuple(outs)


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


def is_foldable_norm(norm: nn.Module) -> bool:
    """Whether the fused copy can fold ``norm`` into a convolution: a BatchNorm (BN,
    SyncBN) that keeps running statistics, whose eval-mode output is a fixed per-channel
    ``x * scale + shift``, or an ``Identity``. Norms that compute statistics from the input
    (GN, LN, IN, BN with ``track_running_stats=False``) cannot be folded."""
    if isinstance(norm, nn.Identity):
        return True
    return isinstance(norm, _BatchNorm) and norm.running_mean is not None \
        and norm.running_var is not None
