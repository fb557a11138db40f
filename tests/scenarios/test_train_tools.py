"""tools/train.py and test.py, and mmseg's own tools, on a tiny ADE20K copy (dist_train.sh
and dist_test.sh: tests/scenarios/test_reliability.py)."""
import os

import pytest

from mmseg_incnext.utils.checkpoint_safety import safe_torch_load
from tests.helpers import MMSEG_TOOLS, miou, run_tools_in_one_process, write_tiny_config


@pytest.fixture(scope='module')
def tool_runs(tmp_path_factory, tiny_ade20k, released_weights):
    """One chain in one process: mmseg's own tools/train.py, unmodified, on our UperNet
    config (2 iterations); our tools/test.py and mmseg's on its checkpoint; our
    tools/train.py resuming mmseg's run to iteration 3; and our train.py on an FPN config
    whose data root is missing. Returns the work dir, the config of the missing data, its
    work dir and name -> ToolRun."""
    folder = tmp_path_factory.mktemp('train_tools')
    upernet = write_tiny_config(str(folder), 'configs/upernet/incnext_t_ade20k.py',
                                tiny_ade20k, released_weights('atto'))
    (folder / 'missing').mkdir()
    missing = write_tiny_config(str(folder / 'missing'), 'configs/fpn/incnext_t_ade20k.py',
                                str(folder / 'no_such_dataset'), released_weights('atto'))
    work, missing_work = folder / 'work', folder / 'missing_work'
    checkpoint = str(work / 'iter_2.pth')
    runs = dict(
        mmseg_train=[os.path.join(MMSEG_TOOLS, 'train.py'), upernet, '--work-dir', str(work)],
        our_test=['tools/test.py', upernet, checkpoint, '--work-dir', str(folder / 'ours')],
        mmseg_test=[os.path.join(MMSEG_TOOLS, 'test.py'), upernet, checkpoint, '--work-dir',
                    str(folder / 'mmseg')],
        our_resume=['tools/train.py', upernet, '--work-dir', str(work), '--resume',
                    '--cfg-options', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
                    'default_hooks.checkpoint.interval=3'],
        missing_data=['tools/train.py', missing, '--work-dir', str(missing_work)])
    ended = dict(zip(runs, run_tools_in_one_process(list(runs.values()), check=False)))
    for name, run in ended.items():
        if name != 'missing_data':
            assert run.error is None, f'{name}: {run.error}\n{run.output[-4000:]}'
    return work, missing_work, ended


def test_mmsegs_train_runs_our_config(tool_runs):
    """mmseg's own tools/train.py, unmodified, on our config: the released weights loaded,
    2 iterations, the checkpoint written."""
    work, _, runs = tool_runs
    out = runs['mmseg_train'].output
    assert 'Loaded 220/240 backbone tensors' in out  # released atto weights, output norms new
    assert 'Iter(train) [2/2]' in out
    assert os.path.isfile(work / 'iter_2.pth')


def test_our_test_and_mmseg_test_agree(tool_runs):
    """One checkpoint, our tools/test.py and mmseg's: the same mIoU, that of the validation
    in training (the same weights on the same images). mmseg's test.py reads the checkpoint
    through mmengine's loader, which the config's custom_imports route to the allow-list
    unpickler. --tta is tested once, on the ONNX file against PyTorch
    (tests/test_deploy/test_onnx_export.py)."""
    _, _, runs = tool_runs
    ours, theirs = miou(runs['our_test'].output), miou(runs['mmseg_test'].output)
    assert ours == pytest.approx(theirs, abs=0.01)
    assert ours == pytest.approx(miou(runs['mmseg_train'].output), abs=0.01)


def test_our_train_resumes_mmsegs_run(tool_runs):
    work, _, runs = tool_runs
    out = runs['our_resume'].output
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [3/3]' in out and 'Iter(train) [1/3]' not in out
    resumed = safe_torch_load(str(work / 'iter_3.pth'))
    assert resumed['meta']['iter'] == 3


def test_missing_data_root_fails_before_building(tool_runs):
    _, missing_work, runs = tool_runs
    run = runs['missing_data']
    assert run.error is not None
    assert 'Dataset not found' in run.stderr and 'no_such_dataset' in run.stderr
    assert 'prepare_ade20k.py' in run.stderr
    assert not missing_work.exists()  # stopped before the Runner made its work dir
