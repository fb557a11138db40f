from .inceptionnext import InceptionNeXt
from .inceptionnext_fused import FusedInceptionNeXt, fuse_for_inference, fuse_segmentor

__all__ = ['InceptionNeXt', 'FusedInceptionNeXt', 'fuse_for_inference', 'fuse_segmentor']
