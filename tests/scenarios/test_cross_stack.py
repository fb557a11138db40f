"""A checkpoint trained on one stack tests and resumes on the other, both ways.

Needs the other stack's interpreter: ``make test`` runs this from the legacy stack's suite
with ``MMSEG_INCNEXT_OTHER_PYTHON`` set to ``.venv/bin/python``; without it this test is
skipped, with it it must pass. numpy 1 pickles arrays as ``numpy.core.multiarray.*`` and
numpy 2 as ``numpy._core.multiarray.*``, so each direction reads names the other numpy
writes.
"""
import os
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import miou, run_tool, run_tools_in_one_process, write_tiny_config

OTHER_PYTHON = os.environ.get('MMSEG_INCNEXT_OTHER_PYTHON')
pytestmark = pytest.mark.skipif(
    not OTHER_PYTHON, reason='MMSEG_INCNEXT_OTHER_PYTHON not set (make test sets it)')


def numpy_major(python: str) -> int:
    return int(subprocess.check_output(
        [python, '-c', 'import numpy; print(numpy.__version__.split(".")[0])'], text=True))


def pickled_numpy_module(checkpoint: str) -> bytes:
    with zipfile.ZipFile(checkpoint) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith('data.pkl')))
    return next(name for name in (b'numpy.core.multiarray', b'numpy._core.multiarray')
                if name in pickled)


def test_checkpoint_crosses_stacks_both_ways(tmp_path, tiny_ade20k, released_weights):
    """legacy trains 2 iterations; current tests that checkpoint and resumes it to 3;
    legacy tests and resumes current's checkpoint: each stack reads what the other wrote."""
    assert os.access(OTHER_PYTHON, os.X_OK), f'no interpreter at {OTHER_PYTHON}'
    # the legacy stack has numpy 1, the current one numpy 2
    majors = {python: numpy_major(python) for python in (sys.executable, OTHER_PYTHON)}
    legacy, current = sorted(majors, key=majors.get)
    assert (majors[legacy], majors[current]) == (1, 2)
    config = write_tiny_config(str(tmp_path), 'configs/fpn/incnext_t_ade20k.py', tiny_ade20k,
                               released_weights('atto'))
    work = str(tmp_path / 'work')
    validated = miou(run_tool([legacy, 'tools/train.py', config, '--work-dir', work]))
    written = os.path.join(work, 'iter_2.pth')
    assert pickled_numpy_module(written) == b'numpy.core.multiarray'
    for writer, reader, iters in ((legacy, current, 3), (current, legacy, 4)):
        # the reader evaluates the checkpoint as the writer's last validation did, then
        # resumes it, in one process
        tested, resumed = run_tools_in_one_process([
            ['tools/test.py', config, written, '--work-dir', work],
            ['tools/train.py', config, '--work-dir', work, '--resume', '--cfg-options',
             f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
             f'default_hooks.checkpoint.interval={iters}']], python=reader)
        assert miou(tested.output) == pytest.approx(validated, abs=0.01)
        out = resumed.output
        assert f'resumed epoch: 0, iter: {iters - 1}' in out
        assert f'Iter(train) [{iters}/{iters}]' in out
        validated, written = miou(out), os.path.join(work, f'iter_{iters}.pth')
        if reader is current:
            assert pickled_numpy_module(written) == b'numpy._core.multiarray'
