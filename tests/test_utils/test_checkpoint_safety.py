"""Checkpoints are read through the allow-list unpickler: mmengine's load, crafted ones don't.

These run on every stack CI tests (torch 2.1 with numpy 1 and the current torch with numpy 2):
the same crafted files must be refused on both, without running.
"""
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

import mmseg_incnext.utils.stack_fixes  # noqa: F401  (routes mmengine's loaders to safe_torch_load)
from mmseg_incnext.utils.checkpoint_safety import (UnsafeCheckpointError, history_buffer_method,
                                                   latin1_encode, restricted_pickle,
                                                   safe_torch_load)
from tests.helpers import CRAFTED_PAYLOADS, REPO_ROOT, run_command, RunsShell, train_toy_runner


def pickled_bytes(path):
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith('data.pkl'))
        return archive.read(name)


def test_mmengine_checkpoint_loads_with_numpy_and_history(tmp_path):
    train_toy_runner(str(tmp_path), max_iters=2)
    path = tmp_path / 'iter_2.pth'
    # What mmengine writes, unchanged by the plugin: protocol-2 getattr for the statistics.
    assert b'getattr' in pickled_bytes(path)
    checkpoint = safe_torch_load(str(path))
    assert checkpoint['meta']['iter'] == 2
    loss = checkpoint['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 2
    assert np.isfinite(loss.mean())
    assert checkpoint['optimizer']['state'][0]['exp_avg'].shape == (1, 2)


def test_resume_continues_from_saved_iteration(tmp_path):
    train_toy_runner(str(tmp_path), max_iters=2)
    runner = train_toy_runner(str(tmp_path), max_iters=4, resume=True)
    assert runner.iter == 4
    resumed = CheckpointLoader.load_checkpoint(str(tmp_path / 'iter_4.pth'), map_location='cpu')
    assert len(resumed['message_hub']['log_scalars']['train/loss'].data[0]) == 4


def test_checkpoint_written_without_plugin_loads(tmp_path):
    code = ('import sys; sys.path.insert(0, %r)\n'
            'from tests.helpers import train_toy_runner\n'
            'train_toy_runner(%r, max_iters=2)\n'
            "assert 'mmseg_incnext' not in sys.modules\n") % (REPO_ROOT, str(tmp_path))
    run_command([sys.executable, '-c', code], check=True)
    checkpoint = CheckpointLoader.load_checkpoint(str(tmp_path / 'iter_2.pth'),
                                                  map_location='cpu')
    assert checkpoint['meta']['iter'] == 2
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean


def test_numpy_1_and_numpy_2_names_both_resolve():
    """A checkpoint names numpy's reconstructors by the writer's numpy version; pickles as
    numpy 1 and numpy 2 write them (protocol 2, as torch does) load under either."""
    data = pickle.dumps({'a': np.arange(3.0), 's': np.float64(2.5)}, protocol=2)
    numpy1 = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    numpy2 = numpy1.replace(b'numpy.core.multiarray', b'numpy._core.multiarray')
    assert b'numpy.core.multiarray' in numpy1 and b'numpy._core.multiarray' in numpy2
    for variant in (numpy1, numpy2):
        loaded = restricted_pickle.loads(variant)
        assert loaded['a'].tolist() == [0.0, 1.0, 2.0] and loaded['s'] == 2.5


@pytest.mark.parametrize('payload', CRAFTED_PAYLOADS)
def test_crafted_pickles_are_refused_without_running(tmp_path, payload):
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'crafted.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': payload(str(marker))}, path)
    refused = 'Refusing to load .*(not on the allow-list|only HistoryBuffer)'
    with pytest.raises(UnsafeCheckpointError, match=refused):
        safe_torch_load(str(path))
    with pytest.raises(UnsafeCheckpointError, match='Refusing to load'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


def test_crafted_legacy_format_pickle_is_refused(tmp_path):
    """torch's pre-1.6 (non-zip) format goes through the same unpickler."""
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'legacy.pth'
    torch.save({'meta': RunsShell(str(marker))}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(str(path))
    assert not marker.exists()
    torch.save({'w': torch.arange(4.)}, path, _use_new_zipfile_serialization=False)
    assert safe_torch_load(str(path))['w'].tolist() == [0., 1., 2., 3.]


def test_torchscript_archive_is_refused(tmp_path):
    """torch.load hands TorchScript zips to torch.jit.load, which runs their code."""
    path = tmp_path / 'scripted.pth'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeCheckpointError, match='TorchScript archive'):
        safe_torch_load(str(path))
    with open(path, 'rb') as f, pytest.raises(UnsafeCheckpointError, match='TorchScript'):
        safe_torch_load(f)


class _SetsState:
    """Pickles as ``target`` followed by BUILD with ``state``."""

    def __init__(self, target_reduce, state):
        self.target_reduce, self.state = target_reduce, state

    def __reduce__(self):
        return self.target_reduce + (self.state, )


def test_state_can_only_be_set_on_what_checkpoints_build():
    # A dtype state with an object field and its object flag cleared: numpy would read raw
    # bytes as object pointers.
    with pytest.raises(UnsafeCheckpointError, match='not a plain dtype'):
        restricted_pickle.loads(pickle.dumps(
            _SetsState((np.dtype, ('f8', False, True)),
                       (3, '|', None, ('a', ), {'a': (np.dtype('O'), 0)}, 8, 1, 0)), protocol=2))
    # A plain dtype's own state (any byte order) is what checkpoints carry.
    assert restricted_pickle.loads(pickle.dumps(np.dtype('>f4'), protocol=2)) == np.dtype('>f4')


@pytest.mark.skipif(not hasattr(torch.serialization, 'safe_globals'),
                    reason='torch before 2.5 has no weights_only allow-list to extend')
def test_torch_weights_only_would_apply_the_crafted_dtype_state():
    """Why the allow-list unpickler reads every checkpoint on newer torch too: torch's own,
    told about numpy's dtypes as mmengine checkpoints need, applies the state refused above.
    If this fails, torch checks dtype states and its weights_only can replace ours there."""
    import io as _io
    object_dtype = _SetsState((np.dtype, ('O8', False, True)), None)  # no BUILD: no check
    crafted = _SetsState((np.dtype, ('f8', False, True)),
                         (3, '|', None, ('a', ), {'a': (object_dtype, 0)}, 8, 1, 0))
    buffer = _io.BytesIO()
    torch.save({'dtype': crafted}, buffer)
    numpy_globals = [np.ndarray, np.dtype] + [type(np.dtype(code)) for code in 'fd']
    buffer.seek(0)
    with torch.serialization.safe_globals(numpy_globals):
        loaded = torch.load(buffer, weights_only=True)['dtype']
    assert loaded.names == ('a', ) and not loaded.hasobject
    buffer.seek(0)
    with pytest.raises(UnsafeCheckpointError, match='not a plain dtype'):
        safe_torch_load(buffer)


def test_build_on_an_allowed_function_is_refused():
    """BUILD on an allowed function would add attributes to it for the whole process."""
    import io as _io
    # GLOBAL torch._utils._rebuild_tensor_v2, a dict state, BUILD: written by hand since no
    # object pickles that way.
    data = (b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00\x00dump_patches'
            b'\x88sb.')
    with pytest.raises(UnsafeCheckpointError, match='sets the state of a function'):
        restricted_pickle.Unpickler(_io.BytesIO(data)).load()
    assert not hasattr(torch._utils._rebuild_tensor_v2, 'dump_patches')


def test_stand_ins_answer_only_what_checkpoints_use():
    assert history_buffer_method(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_method(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_method(os, 'system')
    assert latin1_encode('\xff\x00', 'latin1') == b'\xff\x00'
    with pytest.raises(pickle.UnpicklingError):
        latin1_encode('text', 'rot13')


def test_importing_the_package_changes_nothing_but_the_registries():
    """Importing the package adds only the inceptionnext:// scheme; importing stack_fixes
    routes mmengine's loaders and writes through ours, through mmengine's registries."""
    code = (
        'import copyreg\n'
        'from mmengine.fileio.backends import registry_utils\n'
        'from mmengine.runner.checkpoint import CheckpointLoader\n'
        'from mmengine.runner import checkpoint\n'
        'def state():\n'
        '    return (dict(CheckpointLoader._schemes), dict(registry_utils.backends),\n'
        '            dict(registry_utils.prefix_to_backends), dict(copyreg.dispatch_table),\n'
        '            checkpoint.load_from_http)\n'
        'import mmseg.models  # the dependencies, which register their own pickling\n'
        'before = state()\n'
        'import mmseg_incnext\n'
        'from mmseg.registry import MODELS\n'
        "assert MODELS.get('InceptionNeXt') is mmseg_incnext.InceptionNeXt\n"
        'after = state()\n'
        "added = after[0].pop('inceptionnext://')  # our scheme, the one addition\n"
        "assert added.__name__ == 'load_from_inceptionnext', added\n"
        'assert after == before, "import mmseg_incnext changed the process"\n'
        'import mmseg_incnext.utils.stack_fixes\n'
        'from mmseg_incnext.utils.checkpoint_safety import load_from_local\n'
        "assert CheckpointLoader._schemes[''] is load_from_local\n"
        "assert registry_utils.prefix_to_backends[''].__name__ == 'AtomicLocalBackend'\n"
        'assert checkpoint.load_from_http is before[4], "stack_fixes reassigned mmengine"\n')
    run_command([sys.executable, '-c', code], check=True)
