"""What mmengine 0.10.7 needs to run training safely on today's and yesterday's torch.

Importing this module turns on, for the whole process:

* checkpoint reading through the allow-list unpickler for local files and http(s) URLs
  (:mod:`.checkpoint_safety`): mmengine training checkpoints load on torch >= 2.6, which
  refuses them, and crafted pickles are refused on torch 2.1, which would run them;
* atomic checkpoint writes (:mod:`.checkpoint_io`): a job killed while saving leaves the
  previous checkpoint intact.

``import mmseg_incnext`` alone only registers modules. Our configs and tools import this
module (``custom_imports=dict(imports=['mmseg_incnext', 'mmseg_incnext.stack_fixes'])``);
add it to your own config's ``custom_imports`` to get the same.
"""
from mmseg_incnext import checkpoint_io, checkpoint_safety

checkpoint_safety.install()
checkpoint_io.install()
