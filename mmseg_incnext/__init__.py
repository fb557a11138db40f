"""InceptionNeXt backbones for MMSegmentation.

Importing this package (directly or through ``custom_imports``) registers the
``InceptionNeXt`` backbone in ``mmseg.registry.MODELS`` and makes checkpoints written by
mmengine loadable under torch's ``weights_only=True`` (see :mod:`.checkpoint_safety`).
"""
from .checkpoint_safety import install as _install_checkpoint_safety
from .models import InceptionNeXt
from .weights import RELEASE_URLS, CheckpointError

__version__ = '0.1.0'
__all__ = ['InceptionNeXt', 'RELEASE_URLS', 'CheckpointError', '__version__']

_install_checkpoint_safety()
