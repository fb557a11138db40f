"""InceptionNeXt backbones for MMSegmentation.

Importing this package (directly or through ``custom_imports``) registers, and changes
nothing else: the ``InceptionNeXt`` backbone (:mod:`.models`), the training hooks
(:mod:`.engine.hooks`), the lr-decay optimizer constructor (:mod:`.engine.optimizers`) and
the pipeline wrapper ``NameFilesOnError`` (:mod:`.datasets`). :mod:`.utils.stack_fixes`
(imported by our configs and tools) turns on safe checkpoint reading and atomic checkpoint
writes for mmengine; :mod:`.deploy` holds the ONNX export and runtimes, and
:mod:`.runner` what the command-line tools share.
"""
from . import datasets, engine  # noqa: F401  (registers the hooks, constructor, transform)
from .models import InceptionNeXt
from .models.backbones.weights import RELEASE_URLS
from .utils.checkpoint_safety import CheckpointError

__version__ = '0.1.0'
__all__ = ['InceptionNeXt', 'RELEASE_URLS', 'CheckpointError', '__version__']
