"""Each config has its own work dir under our tools and mmseg's, and --resume refuses a
checkpoint that another model wrote
(mmseg_incnext.engine.hooks.training_hooks.ResumeSameModelHook)."""
import glob
import os
import shutil
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_incnext.runner.complexity import PAPER_MODEL_SIZES
from mmseg_incnext.utils.checkpoint_safety import (CheckpointError, UnsafeCheckpointError,
                                                   safe_torch_load)
from tests.helpers import (MMSEG_TOOLS, REPO_ROOT, run_tool, run_tools_in_one_process,
                           write_tiny_config)

# Stack-independent (mmengine's and mmseg's work-dir logic, the same versions on both
# stacks): run once, by the current stack.
pytestmark = pytest.mark.stack_independent

TRAIN_TOOLS = {'ours': os.path.join(REPO_ROOT, 'tools', 'train.py'),
               'mmseg': os.path.join(MMSEG_TOOLS, 'train.py')}
# Every training config (mmdeploy's deploy configs under configs/deploy/ are not ones).
SHIPPED = sorted(os.path.relpath(path, REPO_ROOT) for path in
                 glob.glob(os.path.join(REPO_ROOT, 'configs', '*', '*.py'))
                 if os.path.basename(os.path.dirname(path)) not in ('_base_', 'deploy'))
FPN, UPERNET = 'configs/fpn/incnext_t_ade20k.py', 'configs/upernet/incnext_t_ade20k.py'

# every run as the suite imports: the checkout first on sys.path
ON_PATH = {'PYTHONPATH': REPO_ROOT}


def test_shipped_configs_are_found():
    paper = {os.path.join('configs', *name.split('/')) for name in PAPER_MODEL_SIZES}
    assert paper <= set(SHIPPED) and 'configs/demo/incnext_atto_fpn_synthetic.py' in SHIPPED, \
        SHIPPED


@pytest.mark.parametrize('tool', sorted(TRAIN_TOOLS))
def test_each_config_has_its_own_work_dir(tmp_path, tool):
    """The real train.py decides: ``work_dirs/<config folder>_<config name>`` for each
    shipped config, and --work-dir before it."""
    extra = ['--skip-data-check'] if tool == 'ours' else []
    # an unknown start method stops each run in the Runner's setup_env, right after it made
    # its work dir (before the logger, the environment report and the model)
    stop = ['--cfg-options', 'env_cfg.mp_cfg.mp_start_method=stop-here']
    commands = [[TRAIN_TOOLS[tool], os.path.join(REPO_ROOT, config), *extra, *stop]
                for config in SHIPPED]
    commands.append([TRAIN_TOOLS[tool], os.path.join(REPO_ROOT, UPERNET), *extra, '--work-dir',
                     'chosen', *stop])
    runs = run_tools_in_one_process(commands, env=ON_PATH, cwd=tmp_path,
                                    check=False)
    assert all(r.error == "ValueError: cannot find context for 'stop-here'" for r in runs), \
        [r.error for r in runs]
    expected = {'_'.join(config[:-len('.py')].split(os.sep)[1:]) for config in SHIPPED}
    assert len(expected) == len(SHIPPED)
    assert set(os.listdir(tmp_path / 'work_dirs')) == expected
    assert os.path.isdir(tmp_path / 'chosen')


def tiny(folder, base, tiny_ade20k, weights):
    os.makedirs(folder, exist_ok=True)
    return write_tiny_config(str(folder), base, tiny_ade20k, weights)


@pytest.fixture(scope='module')
def fpn_run(tmp_path_factory, tiny_ade20k, released_weights):
    """A tiny FPN-T trained 2 iterations by tools/train.py into a work dir."""
    root = tmp_path_factory.mktemp('fpn_run')
    config = tiny(root / 'fpn', FPN, tiny_ade20k, released_weights('atto'))
    work = root / 'work'
    run_tool([sys.executable, 'tools/train.py', config, '--work-dir', str(work)], env=ON_PATH)
    return config, work


def checkpoints(folder):
    """The checkpoints and the last_checkpoint pointer of a work dir, with their bytes. (A
    refused run, like any, still adds its log folder and dumps its config there: mmengine's
    Runner writes them when it is built, before any hook runs.)"""
    paths = glob.glob(os.path.join(folder, '*.pth')) + [os.path.join(folder, 'last_checkpoint')]
    return {path: open(path, 'rb').read() for path in paths}


@pytest.fixture(scope='module')
def resume_runs(tmp_path_factory, fpn_run, tiny_ade20k, released_weights):
    """In one process: our train.py and mmseg's resuming the FPN's work dir with an UperNet
    config of the same file name (refused); our train.py resuming a copy of that work dir
    with a copy of the FPN config and another init checkpoint (the same model). Returns
    name -> ToolRun, the work dir's checkpoints before, and the two configs and work dirs."""
    fpn_config, work = fpn_run
    root = tmp_path_factory.mktemp('resume_runs')
    upernet_config = tiny(root / 'upernet', UPERNET, tiny_ade20k, released_weights('atto'))
    resumed_work = root / 'work'
    shutil.copytree(work, resumed_work)
    (resumed_work / 'last_checkpoint').write_text(str(resumed_work / 'iter_2.pth'))
    copy = root / 'copy' / os.path.basename(fpn_config)
    copy.parent.mkdir()
    shutil.copy(fpn_config, copy)
    init = root / 'init.pth'
    shutil.copy(released_weights('atto'), init)
    before = checkpoints(work)
    runs = {tool: [TRAIN_TOOLS[tool], upernet_config, '--work-dir', str(work), '--resume']
            for tool in sorted(TRAIN_TOOLS)}
    runs['same_model'] = [
        'tools/train.py', str(copy), '--work-dir', str(resumed_work), '--resume',
        '--cfg-options', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
        'default_hooks.checkpoint.interval=3', f'model.backbone.init_cfg.checkpoint={init}']
    ended = run_tools_in_one_process(list(runs.values()), env=ON_PATH, check=False)
    return dict(zip(runs, ended)), before, dict(upernet=upernet_config, copy=str(copy),
                                                resumed_work=resumed_work)


@pytest.mark.parametrize('tool', sorted(TRAIN_TOOLS))
def test_resume_of_another_model_stops_naming_both(fpn_run, resume_runs, tool):
    fpn_config, work = fpn_run
    runs, before, paths = resume_runs
    upernet_config = paths['upernet']
    # The same file name as the FPN's: the message must tell them apart by path.
    assert os.path.basename(upernet_config) == os.path.basename(fpn_config)
    run = runs[tool]
    out = run.output
    assert run.error is not None
    assert f'--resume refused: {work / "iter_2.pth"} was written by another model' in out, \
        out[-4000:]
    assert f'written by: {fpn_config} (EncoderDecoder: backbone InceptionNeXt-atto, neck FPN,' \
        in out
    assert f'this run:   {upernet_config} (EncoderDecoder: backbone InceptionNeXt-atto, ' \
        'decode_head UPerHead (150 classes), auxiliary_head FCNHead (150 classes))' in out
    assert f'work dir:   {work}' in out and 'Pass --work-dir' in out and 'drop --resume' in out
    assert 'resumed epoch' not in out and 'Iter(train)' not in out
    assert checkpoints(work) == before


def test_refused_before_any_weight_is_copied(tmp_path, fpn_run, tiny_ade20k, released_weights):
    """Through mmengine's Runner.resume, with a checkpoint that has no record of its config
    (as one written without the hook): the run is named by mmengine's run name."""
    _, work = fpn_run
    checkpoint = safe_torch_load(str(work / 'iter_2.pth'))
    del checkpoint['meta']['written_by']
    unrecorded = str(tmp_path / 'unrecorded.pth')
    torch.save(checkpoint, unrecorded)

    cfg = Config.fromfile(tiny(tmp_path / 'upernet', UPERNET, tiny_ade20k,
                               released_weights('atto')))
    cfg.work_dir, cfg.resume, cfg.load_from = str(tmp_path / 'work'), True, unrecorded
    runner = Runner.from_cfg(cfg)
    weights = {k: v.clone() for k, v in runner.model.state_dict().items()}
    run_name = checkpoint['meta']['experiment_name']
    assert run_name.startswith('tiny_incnext_t_ade20k_')
    with pytest.raises(CheckpointError, match=f"written by: run '{run_name}'"):
        runner.resume(unrecorded)
    state = runner.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())


def test_resume_refuses_a_config_mmengine_would_execute(tmp_path, fpn_run):
    """Runner.resume runs meta['config'] through Config.fromstring: refused before that."""
    fpn_config, work = fpn_run
    checkpoint = safe_torch_load(str(work / 'iter_2.pth'))
    marker = tmp_path / 'EXECUTED'
    checkpoint['meta']['config'] = f"x = open({str(marker)!r}, 'w').write('ran')"
    crafted = str(tmp_path / 'crafted.pth')
    torch.save(checkpoint, crafted)
    cfg = Config.fromfile(fpn_config)
    cfg.work_dir, cfg.resume, cfg.load_from = str(tmp_path / 'work'), True, crafted
    cfg.visualizer.name = f'visualizer_{tmp_path.name}'  # not the instance an earlier test made
    runner = Runner.from_cfg(cfg)
    with pytest.raises(UnsafeCheckpointError, match=r'holds meta\["config"\]'):
        runner.resume(crafted)
    assert not marker.exists()


def test_same_model_resumes_from_another_config_file(resume_runs):
    """Another path, another init checkpoint: still the same model, so it resumes."""
    runs, _, paths = resume_runs
    run = runs['same_model']
    assert run.error is None, run.output[-4000:]
    assert 'resumed epoch: 0, iter: 2' in run.output and 'Iter(train) [3/3]' in run.output
    meta = safe_torch_load(str(paths['resumed_work'] / 'iter_3.pth'))['meta']
    assert meta['written_by']['config'] == paths['copy']
