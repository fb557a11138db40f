"""Make mmengine training checkpoints loadable under ``torch.load(weights_only=True)``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True`` and mmengine 0.10.7 does not
pass ``weights_only``, so checkpoints written by mmengine's ``CheckpointHook`` fail to load
(``tools/test.py``, ``--resume``): their ``message_hub`` holds ``HistoryBuffer`` objects
with numpy arrays, numpy scalars, and class methods pickled through ``builtins.getattr``.

:func:`install` (run by ``import mmseg_incnext``) fixes this without ever falling back to
``weights_only=False``:

* Saving: ``HistoryBuffer`` is pickled as a call to :func:`rebuild_history_buffer` with its
  two numpy arrays and ``max_length``; the statistics methods (class-level and registered
  again at import) are not written, so new checkpoints need no ``getattr``.
* Loading: the safe list gains exactly the objects such checkpoints contain: numpy arrays,
  numpy scalars and dtypes, :func:`rebuild_history_buffer`, the ``HistoryBuffer`` class, and
  for checkpoints written without the plugin a replacement for ``builtins.getattr`` that
  only resolves ``HistoryBuffer``'s built-in statistics methods and refuses anything else.
* mmengine's local-file loader is replaced by one that explains a refused checkpoint instead
  of passing on torch's advice to set ``weights_only=False``.
"""
import copyreg
import os
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint whose pickle needs objects outside the safe list."""


def refuse_unsafe(name: str, err: Exception) -> UnsafeCheckpointError:
    """The error for a file that ``torch.load(weights_only=True)`` refused to unpickle."""
    return UnsafeCheckpointError(
        f'Refusing to load {name}: it is not a plain weights file or training checkpoint. '
        'Its pickle needs objects outside the safe list, and unpickling those could run '
        f'arbitrary code. torch said: {str(err).splitlines()[0]}\n'
        'Checkpoints written by mmengine load once mmseg_incnext is imported (add '
        "custom_imports=dict(imports=['mmseg_incnext']) to the config), and the released "
        '.pth/.safetensors weights always do. If this file comes from elsewhere, do not load '
        'it unless you can re-create it from its source.')


def rebuild_history_buffer(log_history: np.ndarray, count_history: np.ndarray,
                           max_length: int) -> HistoryBuffer:
    """Recreate a ``HistoryBuffer`` from its data (the target of its safe pickling)."""
    buffer = HistoryBuffer(max_length=int(max_length))
    buffer._log_history = np.asarray(log_history)
    buffer._count_history = np.asarray(count_history)
    return buffer


def _reduce_history_buffer(buffer: HistoryBuffer) -> Tuple[Callable, tuple]:
    return rebuild_history_buffer, (buffer._log_history, buffer._count_history,
                                    buffer.max_length)


def history_buffer_method(owner: Any, name: str) -> Callable:
    """Stand-in for ``builtins.getattr`` in checkpoints written without the plugin.

    mmengine pickles ``HistoryBuffer._statistics_methods`` as ``getattr(HistoryBuffer,
    'mean')`` and so on.  Only those four lookups are answered; any other use of ``getattr``
    in a checkpoint is refused, since a general ``getattr`` would let a file call anything.
    """
    if owner is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise UnsafeCheckpointError(
        f'checkpoint uses getattr({getattr(owner, "__name__", type(owner).__name__)}, {name!r}); '
        'only HistoryBuffer statistics methods may be looked up')


def _numpy_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    core = np._core if hasattr(np, '_core') else np.core
    entries: List[Union[Callable, Tuple[Callable, str]]] = [np.ndarray, np.dtype]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries.append((core.multiarray._reconstruct, f'{module}._reconstruct'))
        entries.append((core.multiarray.scalar, f'{module}.scalar'))
    dtype_classes = [type(np.dtype(code)) for code in '?bhilqBHILQefdgFDGUSV']
    entries.extend(dict.fromkeys(dtype_classes))
    return entries


def _safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    return _numpy_globals() + [
        rebuild_history_buffer,
        HistoryBuffer,
        (history_buffer_method, 'builtins.getattr'),
    ]


def load_from_local_weights_only(filename: str, map_location=None, logger=None) -> Any:
    """mmengine's loader for local files, with ``weights_only=True`` and a clear refusal."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise refuse_unsafe(filename, err) from err


_installed = False


def install() -> None:
    """Register safe pickling and loading (idempotent; run on ``import mmseg_incnext``)."""
    global _installed
    if _installed:
        return
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    torch.serialization.add_safe_globals(_safe_globals())
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)
    _installed = True
