"""The data check before a run: every fault named before the first iteration, on every
split and every rank; clean verdicts cached; --skip-data-check."""
import os
import shutil

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmseg_incnext.datasets.data_check import SplitSpec, scan_split
from mmseg_incnext.datasets.config_check import check_data
from tests.helpers import free_port, run_command, run_tools_in_one_process, write_tiny_config

FPN = 'configs/fpn/incnext_t_ade20k.py'
LOADERS = ['train_dataloader', 'val_dataloader']


def truncate(path):
    path.write_bytes(path.read_bytes()[:600])


def half_size(path):
    image = Image.open(path)
    image.resize((image.width // 2, image.height // 2), Image.NEAREST).save(path)


def colour_coded(path):
    Image.open(path).convert('RGB').save(path)


def label_200(path):
    label = np.asarray(Image.open(path)).copy()
    label[0, 0] = 200
    Image.fromarray(label).save(path)


# fault -> (folder of the file it damages, how, what the report says)
FAULTS = {
    'truncated image': ('images', truncate, 'does not decode'),
    'empty image': ('images', lambda p: p.write_bytes(b''), 'empty file'),
    'corrupt annotation': ('annotations', lambda p: p.write_bytes(b'not a png'),
                           'does not decode'),
    'annotation of another size': ('annotations', half_size, 'annotation is'),
    'colour-coded annotation': ('annotations', colour_coded, '3 channels (mode RGB)'),
    'label beyond the classes': ('annotations', label_200, 'values [200] (allowed 0..150'),
    'missing annotation': ('annotations', lambda p: p.unlink(), 'no annotation'),
}


def copy_data(tiny_ade20k, tmp_path):
    data = tmp_path / 'ade'
    shutil.copytree(tiny_ade20k, data)
    return data


def damage(data, split, fault):
    folder, how, _ = FAULTS[fault]
    target = sorted((data / folder / split).iterdir())[1]
    how(target)
    return target


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('MMSEG_INCNEXT_CACHE', str(tmp_path / 'cache'))


@pytest.mark.parametrize('split', ['training', 'validation'])
@pytest.mark.parametrize('fault', FAULTS)
def test_each_fault_is_named(tmp_path, tiny_ade20k, released_weights, split, fault):
    data = copy_data(tiny_ade20k, tmp_path)
    target = damage(data, split, fault)
    cfg = Config.fromfile(write_tiny_config(str(tmp_path), FPN, str(data),
                                            released_weights('atto')))
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        check_data(cfg, LOADERS)
    assert str(target) in str(err.value) and FAULTS[fault][2] in str(err.value)
    cfg.skip_data_check = True  # the config key turns the check off
    check_data(cfg, LOADERS)


def test_clean_verdict_is_cached_and_a_changed_file_is_rescanned(tmp_path, tiny_ade20k):
    data = copy_data(tiny_ade20k, tmp_path)
    spec = SplitSpec('train', str(data / 'images' / 'training'),
                     str(data / 'annotations' / 'training'), max_label=150)
    first, second = scan_split(spec), scan_split(spec)
    assert first.ok and not first.cached and first.pairs == 6
    assert second.ok and second.cached
    label = sorted((data / 'annotations' / 'training').iterdir())[0]
    os.utime(label, ns=(0, 0))  # same bytes, another mtime: scanned again
    third = scan_split(spec)
    assert third.ok and not third.cached
    truncate(sorted((data / 'images' / 'training').iterdir())[0])
    fourth = scan_split(spec)
    assert not fourth.ok and not fourth.cached and 'does not decode' in fourth.bad_files[0]
    assert not scan_split(spec).cached  # a failing verdict is never cached


def test_parallel_scan_reports_the_same_as_one_process(tmp_path, tiny_ade20k):
    data = copy_data(tiny_ade20k, tmp_path)
    images, labels = data / 'images' / 'training', data / 'annotations' / 'training'
    for i in range(70):  # enough pairs for the process pool
        for folder, suffix in ((images, '.jpg'), (labels, '.png')):
            shutil.copy(sorted(folder.iterdir())[0], folder / f'copy_{i:03d}{suffix}')
    truncate(images / 'copy_050.jpg')
    label_200(labels / 'copy_010.png')
    spec = SplitSpec('train', str(images), str(labels), max_label=150)
    one = scan_split(spec, workers=1, use_cache=False)
    two = scan_split(spec, workers=2, use_cache=False)
    assert one.bad_files == two.bad_files and len(two.bad_files) == 2


@pytest.fixture(scope='module')
def train_runs(tmp_path_factory, tiny_ade20k, released_weights):
    """tools/train.py twice in one process: on data with a bad training image and a bad
    validation annotation, and with --skip-data-check on a label beyond the classes:
    name -> (ToolRun, the bad files)."""
    runs, bad = {}, {}
    for name, faults, iters, flags in (
            ('checked', [('training', 'truncated image'),
                         ('validation', 'colour-coded annotation')], 2, []),
            ('skipped', [('training', 'label beyond the classes')], 1, ['--skip-data-check'])):
        folder = tmp_path_factory.mktemp(name)
        data = copy_data(tiny_ade20k, folder)
        bad[name] = [damage(data, split, fault) for split, fault in faults]
        config = write_tiny_config(str(folder), FPN, str(data), released_weights('atto'),
                                   iters=iters)
        runs[name] = ['tools/train.py', config, '--work-dir', str(folder / 'work'), *flags]
    ended = run_tools_in_one_process(list(runs.values()), check=False)
    return {name: (run, bad[name]) for name, run in zip(runs, ended)}


def test_train_stops_before_the_first_iteration_naming_every_bad_file(train_runs):
    run, bad = train_runs['checked']
    assert run.error is not None
    assert 'Bad files in the dataset (2)' in run.stderr
    assert all(str(path) in run.stderr for path in bad)
    assert 'Iter(train)' not in run.stdout


def test_skip_data_check_is_logged(train_runs):
    run, _ = train_runs['skipped']
    assert run.error is None, run.output[-3000:]
    assert 'Data check skipped' in run.output and 'Iter(train) [1/1]' in run.output


def test_distributed_launch_fails_on_every_rank_alike(tmp_path, tiny_ade20k, released_weights):
    data = copy_data(tiny_ade20k, tmp_path)
    target = damage(data, 'training', 'truncated image')
    config = write_tiny_config(str(tmp_path), FPN, str(data), released_weights('atto'))
    result = run_command(
        ['bash', 'tools/dist_train.sh', config, '2', '--work-dir', str(tmp_path / 'work')],
        env={'PORT': str(free_port()), 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # rank 0 scanned; both ranks raise its verdict, and neither starts training. The ranks
    # share one pipe: Python writes an uncaught error's type and message apart, so another
    # rank's lines may fall between them; the message itself is one write.
    verdict = 'Bad files in the dataset (1), found before the run started'
    assert output.count(verdict) == 2, output[-4000:]
    assert output.count(f'{target}: does not decode') >= 2
    assert 'Iter(train)' not in output
