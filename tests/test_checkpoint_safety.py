"""Training checkpoints load under torch's weights_only=True once the plugin is imported."""
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

import mmseg_incnext  # noqa: F401
from mmseg_incnext.checkpoint_safety import UnsafeCheckpointError
from tests.helpers import train_toy_runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pickled_globals(path):
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith('data.pkl'))
        data = archive.read(name)
    return data


def test_checkpoint_hook_output_loads_with_weights_only(tmp_path):
    train_toy_runner(str(tmp_path), max_iters=2)
    path = tmp_path / 'iter_2.pth'
    assert b'getattr' not in pickled_globals(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint['meta']['iter'] == 2
    loss = checkpoint['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 2
    assert np.isfinite(loss.mean())


def test_resume_continues_from_saved_iteration(tmp_path):
    train_toy_runner(str(tmp_path), max_iters=2)
    runner = train_toy_runner(str(tmp_path), max_iters=4, resume=True)
    assert runner.iter == 4
    assert (tmp_path / 'iter_4.pth').exists()
    resumed = torch.load(tmp_path / 'iter_4.pth', weights_only=True)
    assert len(resumed['message_hub']['log_scalars']['train/loss'].data[0]) == 4


def test_checkpoint_written_without_plugin_still_loads(tmp_path):
    """mmengine alone pickles HistoryBuffer methods via builtins.getattr."""
    code = ('import sys; sys.path.insert(0, %r)\n'
            'from tests.helpers import train_toy_runner\n'
            'train_toy_runner(%r, max_iters=2)\n'
            "assert 'mmseg_incnext' not in sys.modules\n") % (REPO, str(tmp_path))
    subprocess.run([sys.executable, '-c', code], check=True, capture_output=True)
    path = tmp_path / 'iter_2.pth'
    assert b'getattr' in pickled_globals(path)
    checkpoint = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert checkpoint['meta']['iter'] == 2
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean


class _WritesFile:
    """Pickles as ``getattr(numpy.ndarray, 'tofile')(array, marker)``: with a plain
    ``getattr`` allowed, loading would write a file; any method could be reached so."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (np.ndarray.tofile, (np.zeros(1), self.marker))


def test_getattr_beyond_history_buffer_is_refused(tmp_path):
    marker = tmp_path / 'written'
    path = tmp_path / 'crafted.pth'
    torch.save({'state_dict': {}, 'meta': _WritesFile(str(marker))}, path)
    assert b'getattr' in pickled_globals(path)
    with pytest.raises(UnsafeCheckpointError, match='Refusing to load'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_history_buffer_method_lookup_is_restricted():
    from mmseg_incnext.checkpoint_safety import history_buffer_method
    assert history_buffer_method(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_method(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_method(os, 'system')
