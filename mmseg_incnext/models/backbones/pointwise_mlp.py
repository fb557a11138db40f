"""The MetaNeXt block's channel MLP, ``fc2(gelu(fc1(x)))`` with 1x1 weights.

Normally two 1x1 convolutions. In CPU inference on large maps it runs tile by tile instead:
the hidden layer, four times as wide as the block, is the largest map in the network, and
glibc serves an allocation that large with fresh pages (``mmap``) that the kernel zeroes
and faults in, on every forward: always above its largest mmap threshold (32 MiB on 64-bit
Linux), and below it depending on the process's allocation history. Tiles of
:data:`TILE_ROWS` pixels reuse one small hidden buffer that stays in cache and write
straight into the output. Below 32 MiB they pay off only in narrow blocks (fewer than
:data:`NARROW_CHANNELS`), where those page faults weigh most against the matrix products,
so there the limit is :data:`NARROW_TILE_ABOVE_BYTES` (docs/speed.md has the A/B; tiling
the training step did not win).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from mmseg_incnext.compat import autocast_enabled, is_compiling

__all__ = ['pointwise_mlp', 'uses_tiles', 'TILE_ABOVE_BYTES', 'NARROW_TILE_ABOVE_BYTES',
           'NARROW_CHANNELS', 'TILE_ROWS']

TILE_ABOVE_BYTES = 32 * 2**20
NARROW_TILE_ABOVE_BYTES = 16 * 2**20
NARROW_CHANNELS = 256
TILE_ROWS = 2048


def uses_tiles(x: torch.Tensor, hidden_channels: int) -> bool:
    """Whether :func:`pointwise_mlp` (without autograd) runs tile by tile for input ``x``:
    an fp32 channels-last CPU map whose hidden map would exceed :data:`TILE_ABOVE_BYTES`
    (:data:`NARROW_TILE_ABOVE_BYTES` below :data:`NARROW_CHANNELS` input channels), outside
    autocast, tracing (ONNX export) and ``torch.compile``."""
    if is_compiling() or torch.jit.is_tracing():
        return False
    limit = NARROW_TILE_ABOVE_BYTES if x.shape[1] < NARROW_CHANNELS else TILE_ABOVE_BYTES
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and x.dim() == 4
            and x.numel() // x.shape[1] * hidden_channels * x.element_size() > limit
            and x.is_contiguous(memory_format=torch.channels_last)
            and not autocast_enabled('cpu'))


def pointwise_mlp(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                  w2: torch.Tensor, b2: Optional[torch.Tensor],
                  residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv1x1(gelu(conv1x1(x, w1, b1)), w2, b2)`` (+ ``residual``), exact (erf) GELU.

    ``w1`` and ``w2`` are 4-D 1x1 conv weights. Without autograd the hidden map is worked
    on in place (or in tiles, see :func:`uses_tiles`) and ``residual`` is added in place.
    """
    if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, w1, b1, w2, b2)):
        out = F.conv2d(F.gelu(F.conv2d(x, w1, b1)), w2, b2)
        return out if residual is None else out + residual
    if uses_tiles(x, w1.shape[0]):
        return _tiled_mlp(x, w1, b1, w2, b2, residual)
    out = F.conv2d(torch.ops.aten.gelu_(F.conv2d(x, w1, b1)), w2, b2)
    return out if residual is None else out.add_(residual)


def _pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """A channels-last map as the ``(N*H*W, C)`` matrix it is in memory (a view)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _tiled_mlp(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
               w2: torch.Tensor, b2: Optional[torch.Tensor],
               residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The MLP (plus ``residual``) as matrix products over tiles of pixels, reusing one
    tile's hidden buffer."""
    rows = _pixel_rows(x)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    out_rows = _pixel_rows(out)
    w1t, w2t = w1.flatten(1).t(), w2.flatten(1).t()
    b1 = x.new_zeros(w1.shape[0]) if b1 is None else b1
    b2 = x.new_zeros(w2.shape[0]) if b2 is None else b2
    residual_rows = None if residual is None else _pixel_rows(
        residual.contiguous(memory_format=torch.channels_last))
    hidden = rows.new_empty((min(TILE_ROWS, rows.shape[0]), w1.shape[0]))
    for start in range(0, rows.shape[0], TILE_ROWS):
        stop = min(start + TILE_ROWS, rows.shape[0])
        tile = hidden[:stop - start]
        torch.addmm(b1, rows[start:stop], w1t, out=tile)
        torch.addmm(b2, torch.ops.aten.gelu_(tile), w2t, out=out_rows[start:stop])
        if residual_rows is not None:
            out_rows[start:stop].add_(residual_rows[start:stop])
    return out
