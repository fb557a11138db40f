"""Files that appear whole or not at all: a killed process never leaves a partial one.

A file is written under a temporary name in its target folder, fsynced, and renamed over
the target (an atomic step on one file system), so a reader sees the old file or the new
one, also after a crash. :func:`atomic_output` gives the temporary path to a writer that
opens files itself (``torch.onnx.export``); :func:`atomic_write` writes bytes through it.
"""
import contextlib
import os
import uuid
from typing import Iterator


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` to write the file to; if the block ends without an
    error, the file is fsynced and renamed to ``path``, otherwise it is removed.

    The temporary name starts with a dot (hidden from ``glob('iter_*.pth')``) and is not
    created here, so the writer creates it with the permissions it would give ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp, open(tmp, 'xb') as f:
        f.write(data)
