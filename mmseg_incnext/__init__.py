"""InceptionNeXt backbones for MMSegmentation.

Importing this package (directly or through ``custom_imports``) registers the
``InceptionNeXt`` backbone in ``mmseg.registry.MODELS``, the hooks of :mod:`.hooks`, the
pipeline wrapper of :mod:`.transforms` and the lr-decay optimizer constructor of
:mod:`.layer_decay`, and changes nothing else. :mod:`.stack_fixes` (imported by our configs
and tools) turns on safe checkpoint reading and atomic checkpoint writes for mmengine.
"""
from . import hooks, transforms  # noqa: F401  (registers the hooks and NameFilesOnError)
from . import layer_decay  # noqa: F401  (registers InceptionNeXtLayerDecayOptimizerConstructor)
from .checkpoint_safety import CheckpointError
from .models import InceptionNeXt
from .weights import RELEASE_URLS

__version__ = '0.1.0'
__all__ = ['InceptionNeXt', 'RELEASE_URLS', 'CheckpointError', '__version__']
