"""Checkpoints that survive a killed process: atomic writes, and finding the last good one.

mmengine writes a checkpoint straight to its final path, so a job killed while saving
leaves a truncated ``iter_N.pth``. :class:`AtomicLocalBackend`, which :mod:`.stack_fixes`
registers as mmengine's local file backend, writes through :func:`.atomic_files.atomic_write`
instead, so a checkpoint path either holds a complete file or does not exist.
:func:`latest_complete_checkpoint` is what ``--resume`` uses.
"""
import glob
import os
import re
import zipfile
from typing import Optional, Union

from mmengine.fileio import LocalBackend

from mmseg_incnext.utils.atomic_files import atomic_write


class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend with all-or-nothing ``put``/``put_text``."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        atomic_write(os.fspath(filepath), obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        atomic_write(os.fspath(filepath), obj.encode(encoding))


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole torch zip checkpoint (a truncated one has no index)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith('data.pkl') for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def latest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint to resume from: the one ``last_checkpoint`` names if it is complete,
    else the highest-iteration complete ``iter_*.pth``/``epoch_*.pth`` in ``work_dir``."""
    pointer = os.path.join(work_dir, 'last_checkpoint')
    if os.path.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and is_complete_checkpoint(named):
            return named

    def step(path: str) -> int:
        found = re.search(r'(\d+)\.pth$', path)
        return int(found.group(1)) if found else -1
    candidates = glob.glob(os.path.join(work_dir, 'iter_*.pth')) + glob.glob(
        os.path.join(work_dir, 'epoch_*.pth'))
    for path in sorted(candidates, key=step, reverse=True):
        if is_complete_checkpoint(path):
            return path
    return None
