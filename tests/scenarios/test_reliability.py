"""Long-job reliability: exact resume after SIGKILL, atomic checkpoints, rank loss, NaN
loss, and refusing unsafe checkpoints everywhere (bad data: test_data_check.py)."""
import glob
import json
import os
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


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, uninterrupted, tiny_ade20k,
                                                       released_weights):
    config = config_with(tmp_path, tiny_ade20k, released_weights('atto'),
                         extra_hooks="dict(type='KillProcessHook', at_iter=3)")
    work = tmp_path / 'work'
    killed = train(config, work, '--cfg-options', 'default_hooks.checkpoint.interval=2',
                   check=False)
    assert killed.returncode == -signal.SIGKILL
    assert os.path.isfile(work / 'iter_2.pth') and not os.path.exists(work / 'iter_4.pth')

    resumed_config = config_with(tmp_path, tiny_ade20k, released_weights('atto'))
    out = train(resumed_config, work, '--resume', '--cfg-options',
                'default_hooks.checkpoint.interval=2').stdout
    expected, got = weights(uninterrupted / 'iter_4.pth'), weights(work / 'iter_4.pth')
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    reference = logged_losses(uninterrupted)
    assert len(reference) == 4
    assert logged_losses(work) == reference
    del out


def test_truncated_checkpoint_is_never_resumed(tmp_path, uninterrupted, tiny_ade20k,
                                               released_weights):
    work = tmp_path / 'work'
    work.mkdir()
    for name in ('iter_2.pth', 'iter_4.pth'):
        (work / name).write_bytes((uninterrupted / name).read_bytes())
    data = (uninterrupted / 'iter_4.pth').read_bytes()
    (work / 'iter_6.pth').write_bytes(data[:len(data) // 3])  # a save cut short by a kill
    (work / 'last_checkpoint').write_text(str(work / 'iter_6.pth'))
    assert latest_complete_checkpoint(str(work)) == str(work / 'iter_4.pth')
    config = config_with(tmp_path, tiny_ade20k, released_weights('atto'), iters=5)
    out = train(config, work, '--resume').stdout
    assert 'resumed epoch: 0, iter: 4' in out


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


def test_non_finite_loss_stops_training_naming_the_iteration(tmp_path, tiny_ade20k,
                                                             released_weights):
    config = config_with(tmp_path, tiny_ade20k, released_weights('atto'),
                         extra_hooks="dict(type='PoisonWeightsHook', at_iter=2)")
    result = train(config, tmp_path / 'work', check=False)
    assert result.returncode != 0
    assert 'FloatingPointError: Non-finite loss nan at iteration 2' in result.stderr


def test_code_running_checkpoint_refused_by_every_entry_point(tmp_path, uninterrupted,
                                                              tiny_ade20k, released_weights):
    marker = tmp_path / 'code_ran'
    evil = dict(safe_torch_load(uninterrupted / 'iter_4.pth'))
    evil['meta'] = WritesFile(str(marker))
    work = tmp_path / 'work'
    work.mkdir()
    torch.save(evil, work / 'iter_6.pth')
    config = config_with(tmp_path, tiny_ade20k, released_weights('atto'), iters=8)

    from mmseg.apis import init_model
    with pytest.raises(UnsafeCheckpointError, match='not a plain weights file'):
        init_model(config, str(work / 'iter_6.pth'), device='cpu')

    (work / 'last_checkpoint').write_text(str(work / 'iter_6.pth'))
    runs = run_tools_in_one_process([
        ['tools/test.py', config, str(work / 'iter_6.pth'), '--work-dir', str(work)],
        ['tools/train.py', config, '--work-dir', str(work), '--resume']],
        env=WITH_TESTS, check=False)
    for run in runs:
        assert 'not a plain weights file' in (run.error or ''), run.output[-3000:]
    assert not marker.exists()


def test_a_file_failing_mid_run_is_named_with_the_checkpoint_to_resume(
        tmp_path, uninterrupted, tiny_ade20k, released_weights):
    import shutil
    data = tmp_path / 'ade'
    shutil.copytree(tiny_ade20k, data)
    for image in (data / 'images' / 'training').iterdir():  # e.g. a storage failure
        image.write_bytes(image.read_bytes()[:600])
    work = tmp_path / 'work'
    work.mkdir()
    for name in ('iter_2.pth', 'iter_4.pth'):
        shutil.copy(uninterrupted / name, work / name)
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    config = config_with(tmp_path, str(data), released_weights('atto'), iters=6)
    # --skip-data-check: the files go bad after the check; loading in a worker process
    result = train(config, work, '--resume', '--skip-data-check', '--cfg-options',
                   'train_dataloader.num_workers=1', check=False)
    assert result.returncode != 0
    assert f'Training stopped: Data pipeline failed on {data / "images" / "training"}' \
        in result.stderr, result.stderr[-3000:]
    assert f'--resume continues from {work / "iter_4.pth"}' in result.stderr
    assert 'Iter(train) [5/6]' not in result.stdout
