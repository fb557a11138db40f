"""Checkpoints that survive a killed process: atomic writes, and finding the last good one.

mmengine writes a checkpoint straight to its final path, so a job killed while saving
leaves a truncated ``iter_N.pth``. :func:`install` (run by importing :mod:`.stack_fixes`)
replaces mmengine's local file backend with one that writes to a temporary file in the same
folder, fsyncs it and renames it into place, so a checkpoint path either holds a complete
file or does not exist. :func:`latest_complete_checkpoint` is what ``--resume`` uses.
"""
import glob
import os
import re
import tempfile
import zipfile
from typing import Optional, Union

from mmengine.fileio import LocalBackend, register_backend


class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend with all-or-nothing ``put``/``put_text``."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        atomic_write(os.fspath(filepath), obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        atomic_write(os.fspath(filepath), obj.encode(encoding))


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never
    a partial one (also across a crash: the data is fsynced before the rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def install() -> None:
    """Make mmengine's writes to local paths atomic (idempotent)."""
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
