"""mmdeploy rewriters that make an mmdeploy ONNX Runtime export compute what PyTorch does
at every input size.

Imported by the ``custom_imports`` of ``configs/deploy/segmentation_onnxruntime_dynamic.py``
(mmengine imports them when mmdeploy loads the deploy config); needs mmdeploy and is
imported by nothing else. mmdeploy traces the model with ``torch.onnx.export``; two layers
of our configs compute sizes in Python, which the trace freezes at the example's size:

- mmseg's ``Upsample`` (FPN head), whose output size is ``int(size * scale_factor)``:
  rewritten to :func:`~mmseg_incnext.deploy.onnx_export.upsample_any_size`;
- ``F.adaptive_avg_pool2d`` (UperNet's pyramid pooling, mmseg's ``PPM``), which mmdeploy's
  own default rewriter replaces by an ``avg_pool2d`` with the kernel ``size // bins`` of
  the example, not PyTorch's bins unless the size is a multiple of the bins: rewritten to
  :func:`~mmseg_incnext.deploy.onnx_export.adaptive_avg_pool_any_size`.

Both are the functions our own exporter (:mod:`.onnx_export`) uses. They are registered
for the ONNX Runtime backend only, where they are tested; mmdeploy prefers a
backend-specific rewriter to its default one.
"""
from typing import Tuple, Union

import torch
from mmdeploy.core import FUNCTION_REWRITER

from mmseg_incnext.deploy.onnx_export import adaptive_avg_pool_any_size, upsample_any_size

BACKEND = 'onnxruntime'


@FUNCTION_REWRITER.register_rewriter(
    func_name='torch.nn.functional.adaptive_avg_pool2d', backend=BACKEND)
def adaptive_avg_pool2d__any_size(input: torch.Tensor,
                                  output_size: Union[int, Tuple[int, int]]) -> torch.Tensor:
    """PyTorch's adaptive average pooling for every input size of the traced graph."""
    return adaptive_avg_pool_any_size(input, output_size)


@FUNCTION_REWRITER.register_rewriter(
    func_name='mmseg.models.utils.wrappers.Upsample.forward', backend=BACKEND)
def upsample__forward__any_size(self, x: torch.Tensor) -> torch.Tensor:
    """mmseg's ``Upsample``: by its scale factor, or to its fixed ``size`` as it is."""
    if self.size:
        return FUNCTION_REWRITER.get_context().origin_func(self, x)
    return upsample_any_size(x, self.scale_factor, self.mode, self.align_corners)
