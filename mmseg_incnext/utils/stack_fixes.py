"""What mmengine 0.10.7 needs to run training safely on today's and yesterday's torch.

Importing this module turns on, for the whole process (:func:`register_with_mmengine`):

* checkpoint reading through the allow-list unpickler for every scheme mmengine reads
  (:mod:`.checkpoint_safety`): mmengine training checkpoints load on torch >= 2.6, which
  refuses them, and crafted pickles are refused on torch 2.1, which would run them;
* atomic checkpoint writes (:mod:`.checkpoint_io`): a job killed while saving leaves the
  previous checkpoint intact.

``import mmseg_incnext`` alone only registers modules. Our configs and tools import this
module (``custom_imports=dict(imports=['mmseg_incnext', 'mmseg_incnext.utils.stack_fixes'])``);
add it to your own config's ``custom_imports`` to get the same.
"""
from mmengine.fileio import register_backend
from mmengine.runner.checkpoint import CheckpointLoader

from mmseg_incnext.utils import checkpoint_safety as safe
from mmseg_incnext.utils.checkpoint_io import AtomicLocalBackend


def register_with_mmengine() -> None:
    """Put our checkpoint loaders and local file backend in place of mmengine's, through
    its own registries (``force=True`` replaces its entries; idempotent).

    * ``CheckpointLoader`` schemes: mmengine's loaders call ``torch.load`` with torch's
      default, which before torch 2.6 runs any code a file names and from 2.6 refuses
      mmengine's own training checkpoints; ours read through
      :func:`.checkpoint_safety.safe_torch_load`. Every scheme that unpickles is replaced,
      also those that only resolve a name to a URL (``torchvision://``, ``mmcls://``,
      ``open-mmlab://``), since mmengine's versions of them call its own loaders.
    * the ``local`` file backend (prefix ``''``), which mmengine's ``save_checkpoint``
      writes through: :class:`.checkpoint_io.AtomicLocalBackend` writes all or nothing.

    No function or attribute of mmengine is reassigned.
    """
    register = CheckpointLoader.register_scheme
    register(prefixes='', loader=safe.load_from_local, force=True)
    register(prefixes=('http://', 'https://'), loader=safe.load_from_http, force=True)
    register(prefixes=('open-mmlab://', 'openmmlab://'), loader=safe.load_from_openmmlab,
             force=True)
    register(prefixes=('torchvision://', 'modelzoo://'), loader=safe.load_from_torchvision,
             force=True)
    register(prefixes='mmcls://', loader=safe.load_from_mmcls, force=True)
    register(prefixes=(r'(\S+\:)?s3://', r'(\S+\:)?petrel://'),
             loader=safe.load_from_file_backend, force=True)
    register(prefixes='pavi://', loader=safe.refuse_pavi, force=True)
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')


register_with_mmengine()
