"""Deploy-time folding of BatchNorms and per-channel scales into convolutions, in place.

Used by :meth:`InceptionNeXt.switch_to_deploy`; the arithmetic is done in float64 and
written back in each weight's own dtype, device and memory format.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_affine(norm: nn.Module) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """An eval-mode BatchNorm as ``(scale, shift)`` in float64, so that it computes
    ``x * scale + shift`` per channel; None for a norm that computes statistics from its
    input (GN, LN, BN without running statistics), which cannot be folded."""
    if not isinstance(norm, _BatchNorm) or norm.running_mean is None \
            or norm.running_var is None:
        return None
    scale = torch.rsqrt(norm.running_var.detach().double() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach().double()
    shift = -norm.running_mean.detach().double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach().double()
    return scale, shift


def _set_weight_and_bias(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        conv.weight.copy_(weight)  # copy_ keeps the weight's dtype, device and layout
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype).to(conv.weight.device))
        else:
            conv.bias.copy_(bias)


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        return torch.zeros(conv.out_channels, dtype=torch.float64, device=conv.weight.device)
    return conv.bias.detach().double()


def fold_norm_after_conv(conv: nn.Conv2d, norm: nn.Module) -> bool:
    """Make ``conv`` compute ``norm(conv(x))``; False (nothing changed) if ``norm`` does
    not fold."""
    affine = batchnorm_affine(norm)
    if affine is None:
        return False
    scale, shift = affine
    _set_weight_and_bias(conv, conv.weight.detach().double() * scale.view(-1, 1, 1, 1),
                         _bias(conv) * scale + shift)
    return True


def fold_norm_before_pointwise_conv(norm: nn.Module, conv: nn.Conv2d) -> bool:
    """Make the 1x1 ``conv`` compute ``conv(norm(x))``; False (nothing changed) if
    ``norm`` does not fold."""
    affine = batchnorm_affine(norm)
    if affine is None:
        return False
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError(f'a norm folds into a following 1x1 dense conv only, got kernel '
                         f'{conv.kernel_size} with {conv.groups} groups')
    scale, shift = affine
    weight = conv.weight.detach().double()
    _set_weight_and_bias(conv, weight * scale.view(1, -1, 1, 1),
                         _bias(conv) + weight.flatten(1) @ shift)
    return True


def fold_scale_into_conv(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    """Make ``conv`` compute ``conv(x) * scale`` (a per-output-channel scale)."""
    scale = scale.detach().double()
    _set_weight_and_bias(conv, conv.weight.detach().double() * scale.view(-1, 1, 1, 1),
                         _bias(conv) * scale)
