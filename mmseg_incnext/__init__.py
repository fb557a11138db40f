"""InceptionNeXt backbones for MMSegmentation.

Importing this package (directly or through ``custom_imports``) registers the
``InceptionNeXt`` backbone in ``mmseg.registry.MODELS`` and the hooks of :mod:`.hooks`,
makes checkpoints written by mmengine loadable under torch's ``weights_only=True`` (see
:mod:`.checkpoint_safety`) and makes their writing atomic (see :mod:`.checkpoint_io`).
"""
from . import hooks  # noqa: F401  (registers the hooks)
from .checkpoint_io import install as _install_atomic_checkpoints
from .checkpoint_safety import install as _install_checkpoint_safety
from .models import InceptionNeXt
from .weights import RELEASE_URLS, CheckpointError

__version__ = '0.1.0'
__all__ = ['InceptionNeXt', 'RELEASE_URLS', 'CheckpointError', '__version__']

_install_checkpoint_safety()
_install_atomic_checkpoints()
