"""tools/train.py and test.py, and mmseg's own tools, on a tiny ADE20K copy (dist_train.sh
and dist_test.sh: tests/scenarios/test_reliability.py)."""
import os
import sys

import pytest
from mmseg_incnext.utils.checkpoint_safety import safe_torch_load
from tests.helpers import (MMSEG_TOOLS, miou, run_command, run_tool as run,
                           run_tools_in_one_process, write_tiny_config)


@pytest.fixture(scope='module')
def tiny_upernet(tmp_path_factory, tiny_ade20k, released_weights):
    folder = tmp_path_factory.mktemp('upernet')
    return write_tiny_config(str(folder), 'configs/upernet/incnext_t_ade20k.py', tiny_ade20k,
                             released_weights('atto'))


@pytest.fixture(scope='module')
def trained_upernet(tiny_upernet, tmp_path_factory):
    """mmseg's own tools/train.py, unmodified, on our config: its work dir, its iteration-2
    checkpoint and the mIoU of the validation after iteration 2 (of those weights)."""
    work = str(tmp_path_factory.mktemp('trained_upernet'))
    out = run([sys.executable, os.path.join(MMSEG_TOOLS, 'train.py'), tiny_upernet,
               '--work-dir', work])
    assert 'Loaded 220/240 backbone tensors' in out  # released atto weights, output norms new
    assert 'Iter(train) [2/2]' in out
    checkpoint = os.path.join(work, 'iter_2.pth')
    assert os.path.isfile(checkpoint)
    return work, checkpoint, miou(out)


def test_our_test_and_mmseg_test_agree(tiny_upernet, trained_upernet, tmp_path):
    """One checkpoint, our tools/test.py and mmseg's: the same mIoU, that of the validation
    in training (the same weights on the same images). mmseg's test.py reads the checkpoint
    through mmengine's loader, which the config's custom_imports route to the allow-list
    unpickler. --tta is tested once, on the ONNX file against PyTorch
    (tests/test_deploy/test_onnx_export.py)."""
    _, checkpoint, validated = trained_upernet
    ours, theirs = (miou(run.output) for run in run_tools_in_one_process([
        ['tools/test.py', tiny_upernet, checkpoint, '--work-dir', str(tmp_path / 'ours')],
        [os.path.join(MMSEG_TOOLS, 'test.py'), tiny_upernet, checkpoint, '--work-dir',
         str(tmp_path / 'mmseg')]]))
    assert ours == pytest.approx(theirs, abs=0.01)
    assert ours == pytest.approx(validated, abs=0.01)


def test_our_train_resumes_mmsegs_run(tiny_upernet, trained_upernet):
    work, _, _ = trained_upernet
    out = run([sys.executable, 'tools/train.py', tiny_upernet, '--work-dir', work, '--resume',
               '--cfg-options', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
               'default_hooks.checkpoint.interval=3'])
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [3/3]' in out and 'Iter(train) [1/3]' not in out
    resumed = safe_torch_load(os.path.join(work, 'iter_3.pth'))
    assert resumed['meta']['iter'] == 3


def test_missing_data_root_fails_before_building(tmp_path, released_weights):
    config = write_tiny_config(str(tmp_path), 'configs/fpn/incnext_t_ade20k.py',
                               str(tmp_path / 'no_such_dataset'), released_weights('atto'))
    work = tmp_path / 'work'
    result = run_command([sys.executable, 'tools/train.py', config, '--work-dir', str(work)])
    assert result.returncode != 0
    assert 'Dataset not found' in result.stderr and 'no_such_dataset' in result.stderr
    assert 'prepare_ade20k.py' in result.stderr
    assert not work.exists()  # stopped before the Runner made its work dir
