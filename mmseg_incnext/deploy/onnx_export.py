"""Exporting a whole segmentor to ONNX, with every shape computed from the input.

The TorchScript exporter records the operations run on one example input; Python
arithmetic on shapes is frozen into the graph. :class:`ExportableSegmentor` is built so
that nothing depends on the example's size: the backbone's padding is size-independent while
tracing (``pad_to_multiple``) and its norms are folded (``switch_to_deploy``), mmseg's
``Upsample`` layers interpolate by their scale factor (:func:`upsample_any_size`), and
adaptive average pooling (UperNet's pyramid pooling) is computed with pooling matrices
built from the input (:func:`adaptive_avg_pool_any_size`); mmdeploy's export uses the
same two functions (:mod:`.mmdeploy_rewriters`). :func:`export_onnx` writes the file only
after ONNX Runtime (and OpenVINO, where asked) reproduced PyTorch on the export size and on
other sizes.
"""
import copy
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.utils import Upsample as MMSegUpsample

from mmseg_incnext.utils.atomic_files import atomic_output
from mmseg_incnext.utils.compat import onnx_export
from mmseg_incnext.models.backbones.inceptionnext import InceptionNeXt

OUTPUTS = ('logits', 'labels')
# What a verified fp32 export must reproduce: the max abs logit difference from PyTorch
# and the fraction of equal labels.
ATOL = 1e-3
MIN_AGREEMENT = 0.999


class ExportMismatchError(RuntimeError):
    """A runtime does not reproduce PyTorch on the exported file."""


def adaptive_avg_pool_any_size(x: torch.Tensor,
                               output_size: Union[int, Tuple[int, int]]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` as two products with pooling matrices that
    are computed from the input, so a traced graph holds for every input size (and needs
    only opset-11 operators).

    Bin ``i`` of a side of length ``L`` averages ``[floor(i L / k), ceil((i + 1) L / k))``,
    PyTorch's bins.
    """
    bins_h, bins_w = (output_size, output_size) if isinstance(output_size, int) \
        else tuple(output_size)
    if bins_h is None or bins_w is None:
        raise NotImplementedError(f'ONNX export of adaptive average pooling to {output_size}: '
                                  'a side of None (keep the input size) is not supported')
    if bins_h == bins_w == 1:
        return x.mean((2, 3), keepdim=True)
    rows = _pooling_matrix(x[0, 0, :, 0], bins_h)
    cols = _pooling_matrix(x[0, 0, 0, :], bins_w)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def _pooling_matrix(line: torch.Tensor, bins: int) -> torch.Tensor:
    # positions 0..L-1 from the data rather than from a shape, which tracing would freeze
    position = torch.ones_like(line, dtype=torch.int64).cumsum(0) - 1
    length = position[-1:] + 1
    index = torch.arange(bins, dtype=torch.int64, device=line.device)
    # bin edges in integers: in floats OpenVINO's floor/ceil of a whole i * L / k can land
    # one off (e.g. L = 18, k = 6)
    start = torch.div(index * length, bins, rounding_mode='floor')
    end = torch.div((index + 1) * length + bins - 1, bins, rounding_mode='floor')
    inside = ((position[None] >= start[:, None]) & (position[None] < end[:, None]))
    inside = inside.to(line.dtype)
    return inside / inside.sum(1, keepdim=True)


def upsample_any_size(x: torch.Tensor, scale_factor: float, mode: str,
                      align_corners: Optional[bool]) -> torch.Tensor:
    """What mmseg's ``Upsample`` with a scale factor computes, traceable: mmseg's computes
    the output size in Python (``int(size * scale_factor)``), which a trace would freeze.
    Interpolating by the factor gives the same sizes, and the same values wherever
    ``size * scale_factor`` is whole (FPN's factor 2), and follows the input."""
    return F.interpolate(x, scale_factor=scale_factor, mode=mode, align_corners=align_corners)


class AdaptiveAvgPoolAnySize(nn.Module):
    """``nn.AdaptiveAvgPool2d(bins)`` through :func:`adaptive_avg_pool_any_size`."""

    def __init__(self, bins: Union[int, Tuple[int, int]]) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool_any_size(x, self.bins)


class UpsampleAnySize(nn.Module):
    """mmseg's ``Upsample(scale_factor=...)`` through :func:`upsample_any_size`."""

    def __init__(self, scale_factor: float, mode: str, align_corners: Optional[bool]) -> None:
        super().__init__()
        self.scale_factor, self.mode, self.align_corners = scale_factor, mode, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_any_size(x, self.scale_factor, self.mode, self.align_corners)


def make_traceable(module: nn.Module) -> nn.Module:
    """Replace, in place, the layers whose output size a trace would freeze."""
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, AdaptiveAvgPoolAnySize(child.output_size))
        elif isinstance(child, MMSegUpsample) and child.size is None:
            setattr(module, name, UpsampleAnySize(child.scale_factor, child.mode,
                                                  child.align_corners))
        else:
            make_traceable(child)
    return module


class ExportableSegmentor(nn.Module):
    """What mmseg's ``EncoderDecoder.encode_decode`` computes, for export: normalised
    ``N x 3 x H x W`` images in, logits at the input size out (or, with
    ``output='labels'``, their argmax). The auxiliary head is dropped; the segmentor is
    left untouched.
    """

    def __init__(self, segmentor: nn.Module, output: str = 'logits') -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f'output must be one of {OUTPUTS}, got {output!r}')
        if type(segmentor).__name__ != 'EncoderDecoder':
            raise NotImplementedError(f'ONNX export supports EncoderDecoder segmentors, got '
                                      f'{type(segmentor).__name__}')
        if not isinstance(segmentor.backbone, InceptionNeXt):
            raise TypeError('ONNX export expects an InceptionNeXt backbone, got '
                            f'{type(segmentor.backbone).__name__}')
        self.backbone = copy.deepcopy(segmentor.backbone).switch_to_deploy()
        self.neck = make_traceable(copy.deepcopy(segmentor.neck)).eval() \
            if segmentor.with_neck else None
        self.decode_head = make_traceable(copy.deepcopy(segmentor.decode_head)).eval()
        self.align_corners = segmentor.decode_head.align_corners
        self.output = output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        if self.neck is not None:
            features = self.neck(features)
        logits = F.interpolate(self.decode_head(features), size=images.shape[2:],
                               mode='bilinear', align_corners=self.align_corners)
        return logits if self.output == 'logits' else logits.argmax(1)


@dataclass
class Agreement:
    """A runtime (``backend``, in fp32) against PyTorch on one input shape."""
    shape: Tuple[int, int, int, int]
    max_abs_diff: Optional[float]  # of the logits; None for a labels export
    label_agreement: float
    backend: str = 'onnxruntime'

    def ok(self, atol: float, min_agreement: float) -> bool:
        return (self.max_abs_diff is None or self.max_abs_diff <= atol) \
            and self.label_agreement >= min_agreement


def compare_with_torch(path: str, model: ExportableSegmentor,
                       shapes: Sequence[Tuple[int, int, int, int]], seed: int = 0,
                       backend: str = 'onnxruntime') -> List[Agreement]:
    """Run the exported file with ``backend`` (ONNX Runtime or OpenVINO, fp32) and
    ``model`` with PyTorch on random inputs of each shape."""
    from mmseg_incnext.deploy.onnx_runtime import open_graph
    graph = open_graph(path, backend)
    generator = torch.Generator().manual_seed(seed)
    results = []
    for shape in shapes:
        images = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = model(images).numpy()
        got = graph.run(images.numpy())
        if model.output == 'logits':
            diff = float(np.abs(got - expected).max())
            agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        else:
            diff, agreement = None, float((got == expected).mean())
        results.append(Agreement(tuple(shape), diff, agreement, backend))
    return results


def verification_shapes(height: int, width: int, dynamic: bool
                        ) -> List[Tuple[int, int, int, int]]:
    """The export shape, and for a dynamic export two more sizes, one of them odd and not
    a multiple of 32, and a batch of 2."""
    shapes = [(1, 3, height, width)]
    if dynamic:
        shapes += [(2, 3, height - 32 if height > 64 else height + 32, width + 64),
                   (1, 3, height // 2 + 37, width - width // 3 + 5)]
    return shapes


def export_onnx(segmentor: nn.Module, path: str, shape: Tuple[int, int] = (512, 512),
                dynamic: bool = True, output: str = 'logits', opset: int = 17,
                atol: float = ATOL, min_agreement: float = MIN_AGREEMENT,
                backends: Sequence[str] = ('onnxruntime', )) -> List[Agreement]:
    """Export ``segmentor`` (an mmseg EncoderDecoder with an InceptionNeXt backbone, in eval
    mode) to ``path`` and verify it with each of ``backends`` (:func:`compare_with_torch` on
    :func:`verification_shapes`). With ``dynamic``, batch, height and width are free;
    otherwise only the batch is.

    The file is written under a temporary name and moved to ``path`` only if every
    comparison is within ``atol`` (max abs difference of the logits) and
    ``min_agreement`` (fraction of equal labels); otherwise nothing is left and
    :class:`ExportMismatchError` lists the figures.
    """
    from mmseg_incnext.deploy.onnx_runtime import check_backend
    for backend in backends:
        check_backend(backend)  # before the export's minutes
    model = ExportableSegmentor(segmentor.eval(), output).eval()
    axes = {0: 'batch', 2: 'height', 3: 'width'} if dynamic else {0: 'batch'}
    out_axes = dict(axes) if output == 'logits' else {k - (k > 1): v for k, v in axes.items()}
    with atomic_output(path) as tmp:
        with torch.no_grad():
            onnx_export(model, (torch.randn(1, 3, *shape), ), tmp, opset_version=opset,
                        input_names=['images'], output_names=[output],
                        dynamic_axes={'images': axes, output: out_axes})
        results = [result for backend in backends for result in compare_with_torch(
            tmp, model, verification_shapes(*shape, dynamic), backend=backend)]
        if not all(r.ok(atol, min_agreement) for r in results):
            raise ExportMismatchError(
                f'The ONNX export disagrees with PyTorch (tolerance: max abs logit '
                f'difference {atol}, label agreement {min_agreement}); no file written:\n  '
                + '\n  '.join(describe(r) for r in results))
    return results


RUNTIME_NAMES = dict(onnxruntime='ONNX Runtime', openvino='OpenVINO')


def describe(result: Agreement) -> str:
    n, _, h, w = result.shape
    diff = '' if result.max_abs_diff is None else f'max abs logit diff {result.max_abs_diff:.2e}, '
    return (f'{RUNTIME_NAMES[result.backend]}, {n}x3x{h}x{w}: {diff}labels equal '
            f'{100 * result.label_agreement:.4f}%')
