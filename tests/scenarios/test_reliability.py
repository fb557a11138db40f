"""Long-job reliability: exact resume after SIGKILL, atomic checkpoints, rank loss, NaN
loss, and refusing unsafe checkpoints everywhere (bad data: test_data_check.py)."""
import glob
import json
import os
import shutil
import signal
import sys

import pytest
import torch

import mmseg_incnext  # noqa: F401
from mmseg_incnext.utils.atomic_files import atomic_write
from mmseg_incnext.utils.checkpoint_io import AtomicLocalBackend, latest_complete_checkpoint
from mmseg_incnext.utils.checkpoint_safety import UnsafeCheckpointError, safe_torch_load
from tests.helpers import (REPO_ROOT, WritesFile, free_port, miou, run_command, run_tool,
                           run_tools_in_one_process, write_tiny_config)

FPN = 'configs/fpn/incnext_t_ade20k.py'
HOOKS = ("custom_imports = dict(imports=['mmseg_incnext', 'mmseg_incnext.utils.stack_fixes', "
         "'tests.fault_hooks'])\n"
         "randomness = dict(seed=0, deterministic=True)\n"
         "custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='ResumeRandomStateHook')"
         "{extra}]\n")


# The test configs import tests.fault_hooks; tools/*.py put tools/, not the repo, on sys.path.
WITH_TESTS = {'PYTHONPATH': REPO_ROOT}


def config_with(tmp_path, data, weights, iters=4, extra_hooks='', base=FPN):
    extra = HOOKS.format(extra=''.join(', ' + h for h in extra_hooks.split(';') if h))
    folder = tmp_path / f'cfg{len(list(tmp_path.iterdir()))}'
    folder.mkdir()
    # mmengine keeps one visualizer per name and process: runs sharing a process would log
    # their scalars into the first one's folder.
    extra += f"visualizer = dict(name='visualizer_{tmp_path.name}_{folder.name}')\n"
    return write_tiny_config(str(folder), base, data, weights, iters=iters, extra=extra)


def train(config, work, *args, env=None, check=True):
    return run_command([sys.executable, 'tools/train.py', config, '--work-dir', str(work), *args],
                       env={**WITH_TESTS, **(env or {})}, check=check)


def logged_losses(work):
    losses = {}
    for path in glob.glob(os.path.join(str(work), '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'loss' in record:
                    losses[record['iter']] = record['loss']
    return losses


def weights(path):
    return safe_torch_load(path)['state_dict']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, tiny_ade20k, released_weights):
    tmp = tmp_path_factory.mktemp('uninterrupted')
    config = config_with(tmp, tiny_ade20k, released_weights('atto'))
    work = tmp / 'work'
    train(config, work, '--cfg-options', 'default_hooks.checkpoint.interval=2')
    return work


@pytest.fixture(scope='module')
def failure_runs(tmp_path_factory, uninterrupted, tiny_ade20k, released_weights):
    """A run SIGKILLed before iteration 3 (its own process), then in one process: its resume,
    and runs on the uninterrupted run's checkpoints, each given a fault: a truncated newest
    checkpoint (resume), a code-running one (test and resume), NaN weights at iteration 2, and
    training images cut short after the data check (resume). Returns name -> ToolRun, and
    'killed' (that run's result), 'killed_checkpoints' (its checkpoints before the resume),
    'newest_complete' (the truncated work dir's newest complete checkpoint before its run),
    'folder' (with each run's work dir under its name), 'unsafe_config' and 'bad_data'."""
    tmp = tmp_path_factory.mktemp('failures')
    weights = released_weights('atto')
    every_2 = ['--cfg-options', 'default_hooks.checkpoint.interval=2']

    def config(iters=4, hooks='', data=tiny_ade20k):
        return config_with(tmp, str(data), weights, iters=iters, extra_hooks=hooks)

    def work_with_checkpoints(name, newest):
        work = tmp / name
        work.mkdir()
        for checkpoint in ('iter_2.pth', 'iter_4.pth'):
            shutil.copy(uninterrupted / checkpoint, work / checkpoint)
        (work / 'last_checkpoint').write_text(str(work / newest))
        return work

    killed = train(config(hooks="dict(type='KillProcessHook', at_iter=3)"), tmp / 'killed',
                   *every_2, check=False)
    killed_checkpoints = sorted(path.name for path in (tmp / 'killed').glob('*.pth'))

    truncated = work_with_checkpoints('truncated', 'iter_6.pth')
    data = (uninterrupted / 'iter_4.pth').read_bytes()
    (truncated / 'iter_6.pth').write_bytes(data[:len(data) // 3])  # a save cut short by a kill
    newest_complete = latest_complete_checkpoint(str(truncated))

    unsafe = work_with_checkpoints('unsafe', 'iter_6.pth')
    evil = dict(safe_torch_load(uninterrupted / 'iter_4.pth'))
    evil['meta'] = WritesFile(str(tmp / 'code_ran'))
    torch.save(evil, unsafe / 'iter_6.pth')
    unsafe_config = config(iters=8)

    bad_data = tmp / 'ade'
    shutil.copytree(tiny_ade20k, bad_data)
    for image in (bad_data / 'images' / 'training').iterdir():  # e.g. a storage failure
        image.write_bytes(image.read_bytes()[:600])
    data_failing = work_with_checkpoints('data_failing', 'iter_4.pth')

    runs = dict(
        resumed=['tools/train.py', config(), '--work-dir', str(tmp / 'killed'), '--resume',
                 *every_2],
        truncated=['tools/train.py', config(iters=5), '--work-dir', str(truncated), '--resume'],
        unsafe_test=['tools/test.py', unsafe_config, str(unsafe / 'iter_6.pth'), '--work-dir',
                     str(unsafe)],
        unsafe_resume=['tools/train.py', unsafe_config, '--work-dir', str(unsafe), '--resume'],
        non_finite=['tools/train.py', config(hooks="dict(type='PoisonWeightsHook', at_iter=2)"),
                    '--work-dir', str(tmp / 'non_finite')],
        # --skip-data-check: the files went bad after the check; loading in a worker process
        data_failing=['tools/train.py', config(iters=6, data=bad_data), '--work-dir',
                      str(data_failing), '--resume', '--skip-data-check', '--cfg-options',
                      'train_dataloader.num_workers=1'])
    ended = run_tools_in_one_process(list(runs.values()), env=WITH_TESTS, check=False)
    ended = dict(zip(runs, ended))
    return dict(ended, killed=killed, killed_checkpoints=killed_checkpoints,
                newest_complete=newest_complete, folder=tmp, unsafe_config=unsafe_config,
                bad_data=bad_data)


def test_sigkill_then_resume_matches_uninterrupted_run(uninterrupted, failure_runs):
    work = failure_runs['folder'] / 'killed'
    assert failure_runs['killed'].returncode == -signal.SIGKILL
    assert failure_runs['killed_checkpoints'] == ['iter_2.pth']
    resumed = failure_runs['resumed']
    assert resumed.error is None, resumed.output[-4000:]
    assert 'resumed epoch: 0, iter: 2' in resumed.stdout
    expected, got = weights(uninterrupted / 'iter_4.pth'), weights(work / 'iter_4.pth')
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    reference = logged_losses(uninterrupted)
    assert len(reference) == 4
    assert logged_losses(work) == reference


def test_truncated_checkpoint_is_never_resumed(failure_runs):
    work = failure_runs['folder'] / 'truncated'
    assert failure_runs['newest_complete'] == str(work / 'iter_4.pth')
    run = failure_runs['truncated']
    assert run.error is None, run.output[-4000:]
    assert 'resumed epoch: 0, iter: 4' in run.stdout


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    from mmengine.fileio import get_file_backend

    import mmseg_incnext.utils.stack_fixes  # noqa: F401  (what turns atomic writes on)
    assert isinstance(get_file_backend(str(tmp_path / 'x.pth')), AtomicLocalBackend)
    target = tmp_path / 'iter_8.pth'
    atomic_write(str(target), b'complete old checkpoint')

    def crash(fd):
        raise KeyboardInterrupt('killed while saving')
    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(target), b'half of a new one')
    assert target.read_bytes() == b'complete old checkpoint'
    assert sorted(os.listdir(tmp_path)) == ['iter_8.pth']  # no temporary left behind


def test_losing_a_rank_ends_the_job_and_dist_resume_and_test_work(tmp_path, tiny_ade20k,
                                                                  released_weights):
    config = config_with(tmp_path, tiny_ade20k, released_weights('atto'), iters=6,
                         extra_hooks="dict(type='KillProcessHook', at_iter=4, rank=1)")
    work = tmp_path / 'work'
    # No hang: the surviving rank must end with the job (the timeout fails the test).
    result = run_command(
        ['bash', 'tools/dist_train.sh', config, '2', '--work-dir', str(work), '--cfg-options',
         'default_hooks.checkpoint.interval=2'],
        env={'PORT': str(free_port()), 'OMP_NUM_THREADS': '1'})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'rank      : 1' in output and 'SIGKILL' in output, output[-3000:]
    assert latest_complete_checkpoint(str(work)) == str(work / 'iter_2.pth')

    resumed = config_with(tmp_path, tiny_ade20k, released_weights('atto'), iters=4)
    # unbuffered: each rank's log lines reach the shared pipe whole
    out = run_tool(['bash', 'tools/dist_train.sh', resumed, '2', '--work-dir', str(work),
                    '--resume', '--auto-scale-lr'],
                   env=dict(PORT=str(free_port()), OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1'))
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Distributed training: True' in out and 'GPU number: 2' in out  # world size
    # 2 processes x 2 images against the paper's 32: the lr is scaled by 4 / 32.
    assert 'current batch size is 4. Scaling the original LR by 0.125' in out
    # torchrun exits 0 only if both ranks did; each rank logs creating its process group.
    assert out.count('No CUDA device') == 2
    checkpoint = str(work / 'iter_4.pth')
    assert os.path.isfile(checkpoint)

    out = run_tool(['bash', 'tools/dist_test.sh', resumed, checkpoint, '2', '--work-dir',
                    str(work)], env=dict(PORT=str(free_port()), OMP_NUM_THREADS='1'))
    assert 'GPU number: 2' in out
    # Two ranks, each testing its share of the images, and one process testing them all.
    single = run_tool([sys.executable, 'tools/test.py', resumed, checkpoint, '--work-dir',
                       str(work)], env=WITH_TESTS)
    assert miou(out) == pytest.approx(miou(single), abs=0.01)


def test_non_finite_loss_stops_training_naming_the_iteration(failure_runs):
    run = failure_runs['non_finite']
    assert (run.error or '').startswith('FloatingPointError: Non-finite loss nan at '
                                        'iteration 2 '), run.output[-4000:]


def test_code_running_checkpoint_refused_by_every_entry_point(failure_runs):
    from mmseg.apis import init_model
    unsafe = failure_runs['folder'] / 'unsafe'
    with pytest.raises(UnsafeCheckpointError, match='not a plain weights file'):
        init_model(failure_runs['unsafe_config'], str(unsafe / 'iter_6.pth'), device='cpu')
    for name in ('unsafe_test', 'unsafe_resume'):
        run = failure_runs[name]
        assert 'not a plain weights file' in (run.error or ''), run.output[-3000:]
    assert not (failure_runs['folder'] / 'code_ran').exists()


def test_a_file_failing_mid_run_is_named_with_the_checkpoint_to_resume(failure_runs):
    run, work = failure_runs['data_failing'], failure_runs['folder'] / 'data_failing'
    images = failure_runs['bad_data'] / 'images' / 'training'
    assert run.error is not None
    assert f'Training stopped: Data pipeline failed on {images}' in run.stderr, \
        run.stderr[-3000:]
    assert f'--resume continues from {work / "iter_4.pth"}' in run.stderr
    assert 'Iter(train) [5/6]' not in run.stdout
