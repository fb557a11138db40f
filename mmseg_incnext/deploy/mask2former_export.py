"""A Mask2Former segmentor in the form :func:`.onnx_export.export_onnx` exports.

The exporter calls ``decode_head(features)`` and expects logits. mmseg's
``Mask2FormerHead`` takes data samples as well and returns every decoder layer's class
scores and mask logits; its ``predict`` turns the last layer's into semantic logits.
:class:`Mask2FormerLogits` is that ``predict`` as a module of the features alone.
"""
import copy
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads import Mask2FormerHead


class Mask2FormerLogits(nn.Module):
    """mmseg's ``Mask2FormerHead.predict`` on images whose padded size is the input's:
    the last layer's mask logits upsampled to the input (the mask features' stride),
    then ``sum_q softmax(class)[q, c] * sigmoid(mask)[q]`` per class ``c`` (the
    no-object class dropped).

    Args:
        head: a built ``Mask2FormerHead`` (used, not copied).
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        if not isinstance(head, Mask2FormerHead):
            raise TypeError(f'expected mmseg Mask2FormerHead, got {type(head).__name__}')
        self.head = head
        self.align_corners = head.align_corners
        self.stride = int(head.pixel_decoder.strides[0])

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        # the head's forward reads nothing from the data samples
        cls_scores: List[torch.Tensor]
        cls_scores, mask_preds = self.head(list(features), [])
        masks = F.interpolate(mask_preds[-1], scale_factor=self.stride, mode='bilinear',
                              align_corners=False)
        classes = F.softmax(cls_scores[-1], dim=-1)[..., :-1]
        return torch.einsum('bqc,bqhw->bchw', classes, masks.sigmoid())


def exportable(segmentor: nn.Module) -> nn.Module:
    """``segmentor`` as ``export_onnx`` takes it: with a Mask2Former head, a copy whose
    head is wrapped in :class:`Mask2FormerLogits`; any other segmentor unchanged."""
    if not isinstance(segmentor.decode_head, Mask2FormerHead):
        return segmentor
    wrapped = copy.deepcopy(segmentor)
    wrapped.decode_head = Mask2FormerLogits(wrapped.decode_head)
    return wrapped
