"""Inference fast path for the InceptionNeXt backbone.

:func:`fuse_for_inference` turns a trained :class:`~mmseg_incnext.InceptionNeXt` into an
inference-only module with the same outputs (eval-mode semantics; fp32 outputs equal to
1e-4, as the tests check) and less work per image:

* every BatchNorm and the layer scale are folded into a neighbouring convolution: the stem
  BN into the stem conv, each downsampling BN into the following 2x2 conv (odd sizes are
  padded with the per-channel value that the BN maps to 0, so they stay exact), the block
  norm into ``mlp.fc1`` (the token mixer and the BN are both per-channel, so
  ``fc1(bn(y)) = fc1'(y)``) and ``gamma`` into ``mlp.fc2``;
* the feature maps stay in ``channels_last`` memory format, with no layout copies;
* the block's MLP runs with the exact (erf) GELU and the residual add done in place, so
  each block allocates one hidden map and one output; on CPU maps with a large hidden map
  it runs in tiles that allocate none (:mod:`.pointwise_mlp` has the rule).

The padding, input check and stage loop are the ones the model runs (:mod:`.layers`) and
the token mixer is a copy of the model's; only the folded parts are new here. This module
does not import the model: it reads the backbone's layers by their names (``stem``,
``stages``, ``norm{i}``), which :mod:`.inceptionnext` defines.

The backbone builds this copy itself (``fast_inference=True``, the default) and runs it
whenever it is in eval mode without autograd, as in testing and
``mmseg.apis.inference_model`` (see :class:`~mmseg_incnext.InceptionNeXt` for when the copy
is rebuilt). :func:`fuse_segmentor` swaps the backbone of a segmentor for its fused copy
explicitly, e.g. for export.
"""
import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import Stem, check_input, is_foldable_norm, pad_to_multiple, run_stages
from .pointwise_mlp import pointwise_mlp

__all__ = ['FusedInceptionNeXt', 'fuse_for_inference', 'fuse_segmentor']

_Affine = Tuple[torch.Tensor, torch.Tensor]


def _bn_affine(bn: nn.Module, channels: int) -> _Affine:
    """Eval-mode BatchNorm as ``x * scale + shift`` (float64); Identity gives (1, 0)."""
    if isinstance(bn, nn.Identity):
        ones = torch.ones(channels, dtype=torch.float64)
        return ones, torch.zeros_like(ones)
    if not is_foldable_norm(bn):
        raise TypeError(f'fuse_for_inference only folds BatchNorm layers with running '
                        f'statistics, got {type(bn).__name__}')
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return scale, shift


def _buffer(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(dtype=like.dtype, device=like.device).contiguous()


class _InferenceOnly(nn.Module):
    """Base of the fused modules: no trainable state, and no training mode."""

    def train(self, mode: bool = True) -> 'nn.Module':
        if mode:
            raise RuntimeError(
                f'{type(self).__name__} is an inference-only fused copy of the backbone (its '
                'BatchNorms and layer scales are folded into the convolutions); train the '
                'original InceptionNeXt instead')
        return super().train(False)


class FusedStem(_InferenceOnly):
    """Stem conv (4x4, stride 4) with the following BatchNorm folded in."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        conv, norm = stem[0], stem[1]
        scale, shift = _bn_affine(norm, conv.out_channels)
        weight = conv.weight.detach().double() * scale.view(-1, 1, 1, 1)
        bias = shift if conv.bias is None else conv.bias.detach().double() * scale + shift
        self.register_buffer('weight', _buffer(weight, conv.weight))
        self.register_buffer('bias', _buffer(bias, conv.weight))
        self.stride = conv.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(pad_to_multiple(x, 4), self.weight, self.bias, self.stride)


class FusedDownsample(_InferenceOnly):
    """BatchNorm then 2x2 stride-2 conv, as one conv.

    The original zero-pads odd sizes *after* the BN; here the input is padded with
    ``-shift / scale`` per channel, which the folded BN maps to exactly that zero.  A BN
    with a (near) zero scale cannot be inverted like this; it keeps the BN unfused.
    """

    def __init__(self, downsample: nn.Module) -> None:
        super().__init__()
        norm, conv = downsample[0], downsample[1]
        scale, shift = _bn_affine(norm, conv.in_channels)
        w = conv.weight.detach().double()
        b = torch.zeros(conv.out_channels, dtype=torch.float64) if conv.bias is None \
            else conv.bias.detach().double()
        self.stride = conv.stride
        invertible = bool((scale.abs() > 1e-6 * scale.abs().max().clamp_min(1e-30)).all())
        self.folded = invertible
        if invertible:
            weight = w * scale.view(1, -1, 1, 1)
            bias = b + (w * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
            self.register_buffer('pad_value', _buffer(-shift / scale, conv.weight))
        else:
            weight, bias = w, b
            self.register_buffer('scale', _buffer(scale, conv.weight).view(1, -1, 1, 1))
            self.register_buffer('shift', _buffer(shift, conv.weight).view(1, -1, 1, 1))
        self.register_buffer('weight', _buffer(weight, conv.weight))
        self.register_buffer('bias', _buffer(bias, conv.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            x = pad_to_multiple(x, 2, fill=self.pad_value)
        else:
            x = pad_to_multiple(torch.addcmul(self.shift, x, self.scale), 2)
        return F.conv2d(x, self.weight, self.bias, self.stride)


class FusedBlock(_InferenceOnly):
    """MetaNeXt block with the norm folded into ``fc1`` and ``gamma`` into ``fc2``.

    Computes ``x + fc2'(gelu(fc1'(token_mixer(x))))`` with a frozen copy of the block's
    token mixer.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.token_mixer = copy.deepcopy(block.token_mixer).requires_grad_(False)
        mlp = block.mlp
        channels = mlp.fc1.in_channels
        scale, shift = _bn_affine(block.norm, channels)
        w1 = mlp.fc1.weight.detach().double().flatten(1)
        b1 = mlp.fc1.bias.detach().double() if mlp.fc1.bias is not None else 0
        w2 = mlp.fc2.weight.detach().double().flatten(1)
        b2 = mlp.fc2.bias.detach().double() if mlp.fc2.bias is not None \
            else torch.zeros(channels, dtype=torch.float64)
        fc1_w, fc1_b = w1 * scale.view(1, -1), w1 @ shift + b1
        if block.gamma is not None:
            g = block.gamma.detach().double()
            w2, b2 = w2 * g.view(-1, 1), b2 * g
        ref = mlp.fc1.weight
        self.register_buffer('fc1_weight', _buffer(fc1_w[:, :, None, None], ref))
        self.register_buffer('fc1_bias', _buffer(fc1_b, ref))
        self.register_buffer('fc2_weight', _buffer(w2[:, :, None, None], ref))
        self.register_buffer('fc2_bias', _buffer(b2, ref))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_mlp(self.token_mixer(x), self.fc1_weight, self.fc1_bias,
                             self.fc2_weight, self.fc2_bias, residual=x)


class FusedOutputNorm(_InferenceOnly):
    """An output BatchNorm (or Identity) as ``x * scale + shift``, optionally followed by a
    copy to ``memory_format``."""

    def __init__(self, norm: nn.Module, channels: int, like: torch.Tensor,
                 memory_format: Optional[torch.memory_format] = None) -> None:
        super().__init__()
        scale, shift = _bn_affine(norm, channels)
        self.register_buffer('scale', _buffer(scale, like).view(1, -1, 1, 1))
        self.register_buffer('shift', _buffer(shift, like).view(1, -1, 1, 1))
        self.memory_format = memory_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addcmul(self.shift, x, self.scale)
        if self.memory_format is not None:
            out = out.contiguous(memory_format=self.memory_format)
        return out


class FusedInceptionNeXt(_InferenceOnly):
    """Inference-only InceptionNeXt with folded norms; built by :func:`fuse_for_inference`.

    ``forward(x)`` returns the same tuple of NCHW feature maps as the source backbone's
    eval-mode forward (output norms included).  Internally the maps are channels-last;
    ``output_memory_format`` selects the memory format of the returned maps.  Has
    no trainable state: ``.train()`` and forwards that need gradients raise ``RuntimeError``.
    """

    def __init__(self, backbone: nn.Module,
                 memory_format: torch.memory_format = torch.channels_last,
                 output_memory_format: Optional[torch.memory_format] = None) -> None:
        super().__init__()
        self.in_channels = backbone.in_channels
        self.arch_name = backbone.arch_name
        self.dims = tuple(backbone.dims)
        self.out_indices = tuple(backbone.out_indices)
        self.memory_format = memory_format
        last = max(self.out_indices)
        self.stem = FusedStem(backbone.stem)
        self.stages = nn.ModuleList()
        for i in range(last + 1):
            stage = backbone.stages[i]
            layers = [] if stage.downsample is None else [FusedDownsample(stage.downsample)]
            layers += [FusedBlock(block) for block in stage.blocks]
            self.stages.append(nn.Sequential(*layers))
        for i in self.out_indices:
            self.add_module(f'norm{i}', FusedOutputNorm(
                getattr(backbone, f'norm{i}'), self.dims[i], self.stem.weight,
                output_memory_format))
        super().train(False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError('FusedInceptionNeXt is inference-only and does not propagate '
                               'gradients; use the original InceptionNeXt for training')
        check_input(x, self.in_channels, self.arch_name)
        with torch.no_grad():
            return run_stages(x.contiguous(memory_format=self.memory_format), self.stem,
                              self.stages,
                              {i: getattr(self, f'norm{i}') for i in self.out_indices})


def fuse_for_inference(backbone: nn.Module,
                       memory_format: torch.memory_format = torch.channels_last,
                       output_memory_format: Optional[torch.memory_format] = None
                       ) -> FusedInceptionNeXt:
    """Build the inference fast path of ``backbone`` (which is left untouched).

    Args:
        backbone: A trained :class:`InceptionNeXt` with BatchNorm norms (BN or SyncBN);
            its eval-mode forward is reproduced whatever its current mode.
        memory_format: Internal layout; ``torch.channels_last`` (default) is the fast one.
        output_memory_format: Layout of the returned maps; ``None`` (default) returns them
            in the internal layout, ``torch.contiguous_format`` copies them to plain NCHW.

    Returns:
        A :class:`FusedInceptionNeXt` on the backbone's device and dtype.
    """
    if not isinstance(getattr(backbone, 'stem', None), Stem):
        raise TypeError(f'fuse_for_inference expects an InceptionNeXt backbone, got '
                        f'{type(backbone).__name__}')
    return FusedInceptionNeXt(backbone, memory_format, output_memory_format)


def fuse_segmentor(segmentor: nn.Module, **kwargs) -> nn.Module:
    """Replace ``segmentor.backbone`` by its fused inference path, in place.

    The segmentor is put in eval mode; calling ``segmentor.train()`` afterwards raises.
    Keyword arguments go to :func:`fuse_for_inference`.  Returns the segmentor.
    """
    backbone = getattr(segmentor, 'backbone', None)
    if isinstance(backbone, FusedInceptionNeXt):
        return segmentor.eval()
    segmentor.backbone = fuse_for_inference(backbone, **kwargs)
    return segmentor.eval()

