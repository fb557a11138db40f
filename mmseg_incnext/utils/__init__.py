"""Checkpoint reading and safety, atomic files and version checks. Nothing here is
imported by ``import mmseg_incnext`` except what reading weights needs;
:mod:`.stack_fixes` changes mmengine's behaviour and is imported explicitly."""
