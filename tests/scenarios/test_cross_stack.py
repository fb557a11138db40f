"""A checkpoint trained on one stack tests and resumes on the other, both ways.

Needs the legacy stack's interpreter (``make test`` sets ``MMSEG_INCNEXT_LEGACY_PYTHON`` to
``.venv-legacy/bin/python``); without it these tests are skipped, with it they must pass.
numpy 1 pickles arrays as ``numpy.core.multiarray.*`` and numpy 2 as
``numpy._core.multiarray.*``, so each direction reads names the other numpy writes.
"""
import os
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import HUNG_AFTER_S, REPO_ROOT, miou, write_tiny_config

LEGACY_PYTHON = os.environ.get('MMSEG_INCNEXT_LEGACY_PYTHON')
pytestmark = [
    pytest.mark.current_stack_only,  # the current stack's run drives both interpreters
    pytest.mark.skipif(not LEGACY_PYTHON,
                       reason='MMSEG_INCNEXT_LEGACY_PYTHON not set (make test sets it)'),
]


def stack_python(stack: str) -> str:
    if stack == 'current':
        return sys.executable
    assert os.access(LEGACY_PYTHON, os.X_OK), f'no legacy interpreter at {LEGACY_PYTHON}'
    return LEGACY_PYTHON


def numpy_major(python: str) -> int:
    return int(subprocess.check_output(
        [python, '-c', 'import numpy; print(numpy.__version__.split(".")[0])'], text=True))


def run(python, *args):
    result = subprocess.run([python, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=HUNG_AFTER_S)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


@pytest.mark.parametrize('writer,reader', [('legacy', 'current'), ('current', 'legacy')])
def test_checkpoint_crosses_stacks(tmp_path, tiny_ade20k, released_weights, writer, reader):
    writer_python, reader_python = stack_python(writer), stack_python(reader)
    writer_numpy = numpy_major(writer_python)
    assert writer_numpy != numpy_major(reader_python)
    config = write_tiny_config(str(tmp_path), 'configs/fpn/incnext_t_ade20k.py', tiny_ade20k,
                               released_weights('atto'))
    work = str(tmp_path / 'work')
    validated = miou(run(writer_python, 'tools/train.py', config, '--work-dir', work))
    checkpoint = os.path.join(work, 'iter_2.pth')
    with zipfile.ZipFile(checkpoint) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith('data.pkl')))
    assert (b'numpy.core.multiarray' if writer_numpy == 1 else b'numpy._core.multiarray') in pickled

    out = run(reader_python, 'tools/test.py', config, checkpoint, '--work-dir', work)
    # The other stack evaluates the checkpoint as the writer's validation after its last
    # iteration did.
    assert miou(out) == pytest.approx(validated, abs=0.01)
    out = run(reader_python, 'tools/train.py', config, '--work-dir', work, '--resume',
              '--cfg-options', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
              'default_hooks.checkpoint.interval=3')
    assert 'resumed epoch: 0, iter: 2' in out and 'Iter(train) [3/3]' in out
