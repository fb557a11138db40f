"""Loading checkpoints without ever running code from them, on every supported torch.

A ``.pth`` file is a pickle, and unpickling may call any function the file names. torch's
``weights_only=True`` restricts that, but on torch 2.1 (what most mmseg 1.2.2 users run)
it cannot be told about the objects in mmengine training checkpoints (``add_safe_globals``
arrived in torch 2.4), and mmengine 0.10.7 does not ask for it at all; from torch 2.6 it is
the default, which refuses mmengine's own checkpoints.

:func:`safe_torch_load` reads a file with ``torch.load`` and a restricted unpickler: every
global the pickle names must be on :data:`ALLOWED_GLOBALS`, an explicit allow-list of the
objects that plain weights and mmengine training checkpoints contain (tensor rebuilders,
dtypes, numpy arrays and scalars under both numpy 1 and numpy 2 names, ``HistoryBuffer``).
Anything else is refused before it is called, the same way on every torch version. It is
used on newer torch too, in place of ``weights_only=True`` with ``add_safe_globals``: that
would have to allow numpy's dtype classes, and torch then applies any state a file gives a
dtype (an object field with the object flag cleared reads raw bytes as pointers; tested).

The ``load_from_*`` functions are mmengine's checkpoint loaders (one per scheme: local
files, http(s), ``open-mmlab://``, ``torchvision://``, ``mmcls://``, s3/petrel) reading
through it; :mod:`.stack_fixes` registers them in mmengine's ``CheckpointLoader``, which is
how ``init_model``, ``load_from``, ``--resume`` and ``tools/test.py`` (ours and mmseg's)
read checkpoints, the backbone's ``init_cfg`` (mmengine's ``PretrainedInit``) included.
"""
import _compat_pickle
import codecs
import collections
import io
import os
import pickle
import struct
import types
import urllib.error
import zipfile
from typing import Any, Callable, Dict

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import checkpoint as mmengine_checkpoint

from mmseg_incnext.utils.compat import tensor_rebuilders

HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint whose pickle needs objects outside the allow-list."""


def refuse_unsafe(name: str, err: Exception) -> UnsafeCheckpointError:
    """The error for a file whose pickle names a global outside the allow-list."""
    return UnsafeCheckpointError(
        f'Refusing to load {name}: it is not a plain weights file or training checkpoint. '
        f'{str(err).splitlines()[0]}. Unpickling objects outside the allow-list could run '
        'arbitrary code. Released .pth/.safetensors weights and checkpoints written by '
        'mmengine always load; if this file comes from elsewhere, do not load it unless you '
        'can re-create it from its source.')


def history_buffer_method(owner: Any, name: str) -> Callable:
    """Stand-in for ``builtins.getattr``, which mmengine checkpoints use.

    Pickle protocol 2 writes ``HistoryBuffer._statistics_methods`` as ``getattr(HistoryBuffer,
    'mean')`` and so on. Only those four lookups are answered: a general ``getattr`` would
    let a file reach any method of any allowed object.
    """
    if owner is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise UnsafeCheckpointError(
        f'checkpoint uses getattr({getattr(owner, "__name__", type(owner).__name__)}, {name!r}); '
        'only HistoryBuffer statistics methods may be looked up')


def latin1_encode(text: str, encoding: str = 'utf-8') -> bytes:
    """Stand-in for ``_codecs.encode``: pickle protocol 2 writes bytes as
    ``encode(text, 'latin1')``; other codecs and non-text arguments are refused."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != 'iso8859-1':
        raise UnsafeCheckpointError(f'checkpoint calls _codecs.encode with {encoding!r}; only '
                                    'latin1, as pickle uses for bytes, is allowed')
    return text.encode('latin1')


def empty_bytes(*args: Any) -> bytes:
    """Stand-in for ``builtins.bytes``: pickle protocol 2 writes ``b''`` as ``bytes()``."""
    if args:
        raise UnsafeCheckpointError(f'checkpoint calls bytes{args!r}; only bytes() is allowed')
    return b''


def _numpy_globals() -> Dict[str, Any]:
    # numpy 1 pickles arrays as numpy.core.multiarray._reconstruct and numpy 2 as
    # numpy._core.multiarray._reconstruct; both names resolve to the running numpy's function,
    # taken from its own pickling so no module path is assumed.
    reconstruct = np.ndarray((0, )).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    entries: Dict[str, Any] = {'numpy.ndarray': np.ndarray, 'numpy.dtype': np.dtype}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries[f'{module}._reconstruct'] = reconstruct
        entries[f'{module}.scalar'] = scalar
    for code in '?bhilqBHILQefdgFDGUSVMm':
        dtype_class = type(np.dtype(code))
        if dtype_class is not np.dtype:
            entries[f'{dtype_class.__module__}.{dtype_class.__qualname__}'] = dtype_class
    return entries


def _torch_globals() -> Dict[str, Any]:
    entries: Dict[str, Any] = {
        'torch.Size': torch.Size,
        'torch.device': torch.device,
        'torch.Tensor': torch.Tensor,
        'torch.nn.parameter.Parameter': torch.nn.Parameter,
        'torch._tensor._rebuild_from_type_v2': torch._tensor._rebuild_from_type_v2,
        **tensor_rebuilders(),
    }
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            entries[f'torch.{name}'] = getattr(torch, name)
    return entries


def _allowed_globals() -> Dict[str, Any]:
    return {
        **_torch_globals(),
        **_numpy_globals(),
        'collections.OrderedDict': collections.OrderedDict,
        'builtins.set': set,
        'builtins.frozenset': frozenset,
        'builtins.slice': slice,
        'builtins.complex': complex,
        'builtins.bytearray': bytearray,
        'builtins.bytes': empty_bytes,
        'builtins.getattr': history_buffer_method,
        '_codecs.encode': latin1_encode,
        'mmengine.logging.history_buffer.HistoryBuffer': HistoryBuffer,
    }


ALLOWED_GLOBALS: Dict[str, Any] = _allowed_globals()
_BUILD_TYPES = (np.ndarray, collections.OrderedDict, HistoryBuffer)


def _check_build_target(instance: Any, state: Any) -> None:
    """BUILD sets state on the object below it; only the kinds checkpoints build are allowed.

    A dtype's state could turn a numeric dtype into one holding raw object pointers, so it
    may differ from the dtype's own state in byte order only.
    """
    if isinstance(instance, np.dtype):
        own = instance.__reduce__()[2]
        if (not isinstance(state, tuple) or len(state) != len(own)
                or state[:1] + state[2:] != own[:1] + own[2:]):
            raise UnsafeCheckpointError(f'Its pickle sets the state of dtype {instance} to '
                                        f'{state!r}, which is not a plain dtype')
    elif not isinstance(instance, _BUILD_TYPES):
        raise UnsafeCheckpointError(f'Its pickle sets the state of a '
                                    f'{type(instance).__name__}, which checkpoints never do')


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the globals in :data:`ALLOWED_GLOBALS` and sets state
    (``BUILD``) only on arrays, plain dtypes, ordered dicts and ``HistoryBuffer``.

    Every way a pickle can reach a callable (``GLOBAL``, ``STACK_GLOBAL``, ``INST`` and the
    extension registry) goes through :meth:`find_class`, so nothing else can be called. The
    pure-Python unpickler is used because the C one offers no hook on ``BUILD``; torch keeps
    tensor data out of the pickle, so it stays small.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 writes Python 2 names (``__builtin__``); map them as pickle itself does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = ALLOWED_GLOBALS.get(f'{module}.{name}')
        if found is None:
            raise UnsafeCheckpointError(f'Its pickle needs {module}.{name}, which is not on '
                                        'the allow-list')
        return found

    def load(self) -> Any:
        try:
            return super().load()
        except (KeyError, IndexError, TypeError, ValueError, struct.error) as err:
            # The pure-Python unpickler reports an unknown opcode as a KeyError, and so on.
            raise pickle.UnpicklingError(
                f'corrupt pickle ({type(err).__name__}: {err})') from err

    def load_build(self) -> None:
        _check_build_target(self.stack[-2], self.stack[-1])
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


def _restricted_load(file, **kwargs) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# torch.load takes a pickle module; this one only offers the restricted unpickler.
restricted_pickle = types.ModuleType(f'{__name__}.restricted_pickle')
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.loads = _restricted_loads
restricted_pickle.UnpicklingError = pickle.UnpicklingError


def safe_torch_load(source, map_location=None, name: str = None) -> Any:
    """``torch.load`` of a path or file object that refuses any global off the allow-list.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside :data:`ALLOWED_GLOBALS`.
        CheckpointError: the file is corrupt, truncated or not a PyTorch checkpoint.
    """
    name = name or str(source)
    if _is_torchscript_archive(source):
        raise UnsafeCheckpointError(
            f'Refusing to load {name}: it is a TorchScript archive (torch.jit.save), whose '
            'code would run on loading. Load it with torch.jit.load if you trust its source.')
    try:
        # weights_only=False only because torch refuses a custom pickle module otherwise;
        # the restricted unpickler is what keeps code from running.
        return torch.load(source, map_location=map_location, pickle_module=restricted_pickle,
                          weights_only=False)
    except UnsafeCheckpointError as err:
        raise refuse_unsafe(name, err) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, pickle.UnpicklingError,
            OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CheckpointError(f'Cannot read checkpoint {name}: the file is corrupt, truncated '
                              f'or not a PyTorch checkpoint ({type(err).__name__}: {err})') from err


def _is_torchscript_archive(source) -> bool:
    """Whether ``source`` is a zip with TorchScript's ``constants.pkl``, which torch.load
    hands to ``torch.jit.load`` without our unpickler."""
    position = source.tell() if hasattr(source, 'tell') else None
    try:
        with zipfile.ZipFile(source) as archive:
            return any(entry.endswith('constants.pkl') for entry in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    finally:
        if position is not None:
            source.seek(position)


def load_from_local(filename: str, map_location=None, logger=None) -> Any:
    """mmengine's loader for local files, through :func:`safe_torch_load`; a
    ``.safetensors`` file (as timm publishes weights) through safetensors."""
    filename = os.path.expanduser(filename)
    if os.path.isdir(filename):
        raise CheckpointError(f'Checkpoint path is a directory, not a file: {filename}')
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'Checkpoint file not found: {filename}')
    if filename.endswith('.safetensors'):
        return _load_safetensors(filename)
    return safe_torch_load(filename, map_location=map_location)


def _load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f'Cannot read {path} as safetensors (corrupt or truncated '
                              f'file?): {err}') from err


def load_from_http(url: str, map_location=None, model_dir: str = None, logger=None) -> Any:
    """mmengine's loader for http(s) URLs: downloaded once into torch.hub's cache, then
    read through :func:`safe_torch_load`."""
    try:
        path = download_to_hub_cache(url, model_dir)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        cache = model_dir or os.path.join(torch.hub.get_dir(), 'checkpoints')
        raise CheckpointError(
            f'Could not download the checkpoint {url}: {err}. On an offline machine, download '
            f'it elsewhere and either put it in {cache} or give its path instead (e.g. '
            '--cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.pth)') from err
    return safe_torch_load(path, map_location, name=url)


def download_to_hub_cache(url: str, model_dir: str = None) -> str:
    """The local copy of ``url`` in torch.hub's checkpoint folder, downloading it if absent."""
    folder = model_dir or os.path.join(torch.hub.get_dir(), 'checkpoints')
    path = os.path.join(folder, os.path.basename(url.split('?')[0]))
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        torch.hub.download_url_to_file(url, path, progress=False)
    return path


def load_from_openmmlab(filename: str, map_location=None) -> Any:
    """mmengine's ``open-mmlab://`` / ``openmmlab://`` loader (names from mmengine's table,
    extended by ``$MMENGINE_HOME/open_mmlab.json``: URLs, or paths under that folder)."""
    prefix = 'open-mmlab://' if filename.startswith('open-mmlab://') else 'openmmlab://'
    name = filename[len(prefix):]
    name = mmengine_checkpoint.get_deprecated_model_names().get(name, name)
    location = mmengine_checkpoint.get_external_models()[name]
    if location.startswith(('http://', 'https://')):
        return load_from_http(location, map_location)
    return load_from_local(os.path.join(mmengine_checkpoint._get_mmengine_home(), location),
                           map_location)


def load_from_torchvision(filename: str, map_location=None) -> Any:
    """mmengine's ``torchvision://`` / ``modelzoo://`` loader: the URL torchvision gives the
    name, through :func:`load_from_http`."""
    name = filename.split('://', 1)[1]
    return load_from_http(mmengine_checkpoint.get_torchvision_models()[name], map_location)


def load_from_mmcls(filename: str, map_location=None) -> Any:
    """mmengine's ``mmcls://`` loader: the URL of mmengine's mmcls table, through
    :func:`load_from_http`, keeping the backbone's weights as mmengine does."""
    url = mmengine_checkpoint.get_mmcls_models()[filename[len('mmcls://'):]]
    return mmengine_checkpoint._process_mmcls_checkpoint(load_from_http(url, map_location))


def load_from_file_backend(filename: str, map_location=None, logger=None) -> Any:
    """mmengine's ``s3://`` / ``petrel://`` loader, reading through ours."""
    from mmengine.fileio import get
    return safe_torch_load(io.BytesIO(get(filename)), map_location, name=filename)


def refuse_pavi(filename: str, map_location=None, logger=None) -> Any:
    """mmengine's ``pavi://`` loader: refused, see the message."""
    raise CheckpointError(f'{filename}: pavi:// checkpoints cannot be read through the '
                          'allow-list unpickler; download the file and pass its path')
