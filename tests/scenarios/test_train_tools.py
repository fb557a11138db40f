"""tools/train.py, test.py, dist_train.sh, and mmseg's own tools, on a tiny ADE20K copy."""
import os
import subprocess
import sys

import pytest
from mmseg_incnext.utils.checkpoint_safety import safe_torch_load
from tests.helpers import (HUNG_AFTER_S, MMSEG_TOOLS, REPO_ROOT, free_port, miou,
                           run_tool as run, write_tiny_config)


@pytest.fixture(scope='module')
def tiny_upernet(tmp_path_factory, tiny_ade20k, released_weights):
    folder = tmp_path_factory.mktemp('upernet')
    return write_tiny_config(str(folder), 'configs/upernet/incnext_t_ade20k.py', tiny_ade20k,
                             released_weights('tiny'))


@pytest.fixture(scope='module')
def trained_upernet(tiny_upernet, tmp_path_factory):
    """tools/train.py's run: its work dir, its iteration-2 checkpoint and the mIoU of the
    validation after iteration 2 (of the weights that checkpoint holds)."""
    work = str(tmp_path_factory.mktemp('trained_upernet'))
    out = run([sys.executable, 'tools/train.py', tiny_upernet, '--work-dir', work])
    assert 'Loaded 316/336 backbone tensors' in out  # released weights, output norms new
    assert 'Iter(train) [2/2]' in out
    checkpoint = os.path.join(work, 'iter_2.pth')
    assert os.path.isfile(checkpoint)
    return work, checkpoint, miou(out)


def test_our_test_and_mmseg_test_agree(tiny_upernet, trained_upernet, tmp_path):
    """One checkpoint, our tools/test.py and mmseg's: the same mIoU, that of the validation
    in training (the same weights on the same images). --tta is tested once, on the ONNX
    file against PyTorch (tests/test_deploy/test_onnx_export.py)."""
    _, checkpoint, validated = trained_upernet
    ours = miou(run([sys.executable, 'tools/test.py', tiny_upernet, checkpoint, '--work-dir',
                     str(tmp_path / 'ours')]))
    theirs = miou(run([sys.executable, os.path.join(MMSEG_TOOLS, 'test.py'), tiny_upernet,
                       checkpoint, '--work-dir', str(tmp_path / 'mmseg')]))
    assert ours == pytest.approx(theirs, abs=0.01)
    assert ours == pytest.approx(validated, abs=0.01)


def test_resume(tiny_upernet, trained_upernet):
    work, _, _ = trained_upernet
    out = run([sys.executable, 'tools/train.py', tiny_upernet, '--work-dir', work, '--resume',
               '--cfg-options', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
               'default_hooks.checkpoint.interval=3'])
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [3/3]' in out and 'Iter(train) [1/3]' not in out
    resumed = safe_torch_load(os.path.join(work, 'iter_3.pth'))
    assert resumed['meta']['iter'] == 3


def test_mmseg_own_tools_work_unmodified(tiny_upernet, tmp_path):
    work = str(tmp_path / 'work')
    out = run([sys.executable, os.path.join(MMSEG_TOOLS, 'train.py'), tiny_upernet,
               '--work-dir', work])
    validated = miou(out)
    # mmseg's test.py reads the checkpoint through mmengine's loader, which the plugin
    # (imported through the config's custom_imports) routes to the allow-list unpickler.
    out = run([sys.executable, os.path.join(MMSEG_TOOLS, 'test.py'), tiny_upernet,
               os.path.join(work, 'iter_2.pth'), '--work-dir', work])
    assert miou(out) == pytest.approx(validated, abs=0.01)


def test_dist_train_and_test_two_processes_on_cpu(tmp_path, tiny_ade20k, released_weights):
    config = write_tiny_config(str(tmp_path), 'configs/fpn/incnext_t_ade20k.py', tiny_ade20k,
                               released_weights('tiny'))
    work = str(tmp_path / 'work')
    out = run(['bash', 'tools/dist_train.sh', config, '2', '--work-dir', work, '--auto-scale-lr'],
              env=dict(PORT=str(free_port()), OMP_NUM_THREADS='1'))
    assert 'Distributed training: True' in out and 'GPU number: 2' in out  # world size
    # 2 processes x 2 images against the paper's 32: the lr is scaled by 4 / 32.
    assert 'current batch size is 4. Scaling the original LR by 0.125' in out
    assert 'Iter(train) [2/2]' in out
    checkpoint = os.path.join(work, 'iter_2.pth')
    assert os.path.isfile(checkpoint)
    # torchrun exits 0 only if both ranks exited 0; the log of each run has one line
    # per rank creating its process group.
    assert out.count('No CUDA device') == 2

    out = run(['bash', 'tools/dist_test.sh', config, checkpoint, '2', '--work-dir', work],
              env=dict(PORT=str(free_port()), OMP_NUM_THREADS='1'))
    assert 'GPU number: 2' in out
    # Two ranks, each testing its share of the images, and one process testing them all.
    single = run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', work])
    assert miou(out) == pytest.approx(miou(single), abs=0.01)


def test_missing_data_root_fails_before_building(tmp_path, released_weights):
    config = write_tiny_config(str(tmp_path), 'configs/fpn/incnext_t_ade20k.py',
                               str(tmp_path / 'no_such_dataset'), released_weights('tiny'))
    work = tmp_path / 'work'
    result = subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir', str(work)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=HUNG_AFTER_S)
    assert result.returncode != 0
    assert 'Dataset not found' in result.stderr and 'no_such_dataset' in result.stderr
    assert 'prepare_ade20k.py' in result.stderr
    assert not work.exists()  # stopped before the Runner made its work dir
