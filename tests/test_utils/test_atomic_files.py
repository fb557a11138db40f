"""Files appear whole or not at all, for bytes and for writers that open the file themselves
(a kill while fsyncing: tests/test_reliability.py)."""
import os

import pytest

from mmseg_incnext.utils.atomic_files import atomic_output, atomic_write

# Stack-independent (file writes): run once, by the current stack.
pytestmark = pytest.mark.stack_independent


def test_a_writer_opening_the_file_itself_replaces_it_whole(tmp_path):
    target = tmp_path / 'model.onnx'
    target.write_bytes(b'old')
    with atomic_output(str(target)) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith('.')
        assert not os.path.exists(tmp)  # left to the writer, as torch.onnx.export wants it
        with open(tmp, 'wb') as f:
            f.write(b'new')
        assert target.read_bytes() == b'old'
    assert target.read_bytes() == b'new'
    assert os.listdir(tmp_path) == ['model.onnx']


def test_an_error_in_the_block_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / 'model.onnx'
    target.write_bytes(b'old')
    with pytest.raises(ValueError, match='verification failed'):
        with atomic_output(str(target)) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'half')
            raise ValueError('verification failed')
    assert target.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['model.onnx']


def test_bytes_land_with_the_permissions_of_a_plain_write_in_a_new_folder(tmp_path):
    atomic = tmp_path / 'new' / 'folder' / 'iter_2.pth'
    atomic_write(str(atomic), b'checkpoint')
    plain = tmp_path / 'plain.pth'
    plain.write_bytes(b'checkpoint')
    assert atomic.read_bytes() == b'checkpoint'
    assert os.stat(atomic).st_mode == os.stat(plain).st_mode
