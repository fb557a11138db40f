"""InceptionNeXt backbones for MMSegmentation.

Importing this package (directly or through ``custom_imports``) registers the
``InceptionNeXt`` backbone in ``mmseg.registry.MODELS`` and the hooks of :mod:`.hooks`, and
changes nothing else. :mod:`.stack_fixes` (imported by our configs and tools) turns on safe
checkpoint reading and atomic checkpoint writes for mmengine.
"""
from . import hooks  # noqa: F401  (registers the hooks)
from .checkpoint_safety import CheckpointError
from .models import InceptionNeXt
from .weights import RELEASE_URLS

__version__ = '0.1.0'
__all__ = ['InceptionNeXt', 'RELEASE_URLS', 'CheckpointError', '__version__']
