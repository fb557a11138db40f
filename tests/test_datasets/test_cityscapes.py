"""Cityscapes: tools/prepare_cityscapes.py on synthetic official archives, the UperNet
Cityscapes configs against mmseg's recipe, and a tiny run of them with our tools and mmseg's."""
import os
import re
import shutil
import sys
import zipfile

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmseg_incnext.datasets import cityscapes_prep
from mmseg_incnext.datasets.cityscapes import CLASSES, ID_TO_TRAIN_ID
from mmseg_incnext.datasets.cityscapes_prep import (ArchiveContentsError, CityscapesLabelError,
                                                    MissingArchiveError, OutputConflictError,
                                                    convert)
from mmseg_incnext.datasets.config_check import check_data, split_specs
from mmseg_incnext.datasets.synthetic import make_synthetic_cityscapes, zip_synthetic_cityscapes
from tests.helpers import MMSEG_TOOLS, REPO_ROOT, miou, run_command, run_tools_in_one_process

# Stack-independent (label tables and file conversion): run once, by the current stack.
pytestmark = pytest.mark.stack_independent

MMSEG_DIR = os.path.dirname(__import__('mmseg').__file__)
MMSEG_RECIPE = os.path.join(MMSEG_DIR, '.mim', 'configs', 'upernet',
                            'upernet_r50_4xb2-80k_cityscapes-512x1024.py')
CONFIGS = {size: f'configs/upernet/incnext_{size}_cityscapes.py' for size in 'tsb'}
ARCHS = {'t': 'tiny', 's': 'small', 'b': 'base'}
# The benchmark's 19 classes: label id -> train id; every other id 0..33 becomes 255.
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def prepare(*args):
    return run_command([sys.executable, 'tools/prepare_cityscapes.py', *args])


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
    """Cityscapes as unpacked from the archives: 2 train cities, 1 val, 1 test; 2 images
    each (64x128), every label id 0..33 in every annotation."""
    return make_synthetic_cityscapes(str(tmp_path_factory.mktemp('cityscapes_raw')))


@pytest.fixture(scope='module')
def archives(raw, tmp_path_factory):
    return zip_synthetic_cityscapes(raw, str(tmp_path_factory.mktemp('archives')))


@pytest.fixture(scope='module')
def prepared(archives, tmp_path_factory):
    """tools/prepare_cityscapes.py's run on the two zips: (result, output root)."""
    out = str(tmp_path_factory.mktemp('prepared') / 'cityscapes')
    return prepare(*archives, '--out', out), out


def raw_pairs(raw, split):
    """(image, labelIds, key) of every raw sample of a split."""
    folder = os.path.join(raw, 'gtFine', split)
    for city in sorted(os.listdir(folder)):
        for name in sorted(os.listdir(os.path.join(folder, city))):
            if name.endswith('_gtFine_labelIds.png'):
                stem = name[:-len('_gtFine_labelIds.png')]
                yield (os.path.join(raw, 'leftImg8bit', split, city, stem + '_leftImg8bit.png'),
                       os.path.join(folder, city, name), (split, city, stem))


def test_label_table_is_the_benchmarks():
    from mmseg.datasets import CityscapesDataset
    assert CLASSES == CityscapesDataset.METAINFO['classes']
    assert sorted(ID_TO_TRAIN_ID) == list(range(34))
    assert {i: t for i, t in ID_TO_TRAIN_ID.items() if t != 255} == TRAIN_IDS


def test_archives_convert_to_the_exact_train_ids(raw, prepared):
    result, out = prepared
    # The synthetic copy is not the real dataset: after converting, the counts are wrong.
    assert result.returncode != 0
    assert 'train: 4 images with annotations, expected 2975' in result.stderr
    assert 'val: 2 images with annotations, expected 500' in result.stderr
    assert 'wrote 4 train and 2 val pairs' in result.stdout
    assert sorted(os.listdir(os.path.join(out, 'gtFine'))) == ['train', 'val']  # no test split
    for split in ('train', 'val'):
        for image, label_ids, key in raw_pairs(raw, split):
            image_out, train_ids_out = cityscapes_prep.output_paths(out, key)
            assert open(image_out, 'rb').read() == open(image, 'rb').read()
            ids = np.asarray(Image.open(label_ids))
            train_ids = np.asarray(Image.open(train_ids_out))
            assert train_ids.dtype == np.uint8 and train_ids.shape == ids.shape == (64, 128)
            assert set(np.unique(ids)) == set(range(34))
            for label_id in range(34):
                assert set(np.unique(train_ids[ids == label_id])) == \
                    {TRAIN_IDS.get(label_id, 255)}, (train_ids_out, label_id)


def test_prepared_data_passes_the_check_train_py_runs(prepared):
    _, out = prepared
    assert cityscapes_prep.check(out) == []
    cfg = Config.fromfile(os.path.join(REPO_ROOT, CONFIGS['t']))
    for loader in LOADERS:
        cfg[loader].dataset.data_root = out
    # The suffixes and the label range come from the config and CityscapesDataset.
    specs = split_specs(cfg, ['train_dataloader', 'val_dataloader'])
    assert [(s.img_dir, s.seg_dir, s.img_suffix, s.seg_suffix, s.max_label) for s in specs] \
        == [(s.img_dir, s.seg_dir, s.img_suffix, s.seg_suffix, s.max_label)
            for s in cityscapes_prep.split_specs(out)]
    assert specs[0].seg_suffix == '_gtFine_labelTrainIds.png' and specs[0].max_label == 18
    check_data(cfg, LOADERS)


def test_data_check_names_cityscapes_faults(prepared, tmp_path):
    _, prepared_root = prepared
    out = str(tmp_path / 'cityscapes')
    shutil.copytree(prepared_root, out)
    cfg = Config.fromfile(os.path.join(REPO_ROOT, CONFIGS['t']))
    for loader in LOADERS:
        cfg[loader].dataset.data_root = out
    val_key = ('val', 'frankfurt', 'frankfurt_000000_000019')
    label_path = cityscapes_prep.output_paths(out, val_key)[1]
    label = np.asarray(Image.open(label_path)).copy()
    label[5, 5] = 19  # one past the 19 classes
    Image.fromarray(label).save(label_path)
    missing = cityscapes_prep.output_paths(out, ('train', 'bochum', 'bochum_000000_000000'))[1]
    os.unlink(missing)
    with pytest.raises(FileNotFoundError) as err:
        check_data(cfg, LOADERS)
    assert f'no annotation {missing}' in str(err.value)
    assert 'tools/prepare_cityscapes.py leftImg8bit_trainvaltest.zip' in str(err.value)
    shutil.copy(cityscapes_prep.output_paths(
        prepared_root, ('train', 'bochum', 'bochum_000000_000000'))[1], missing)
    with pytest.raises(ValueError, match=rf'{label_path}: values \[19\] \(allowed 0\.\.18'):
        check_data(cfg, LOADERS)


def test_rerun_skips_equal_files_and_refuses_different_ones(raw, archives, tmp_path):
    out = str(tmp_path / 'out')
    assert convert(archives, out) == {'train': 4, 'val': 2}
    assert convert(archives, out) == {'train': 4, 'val': 2}  # same files: nothing to do
    key = ('train', 'aachen', 'aachen_000000_000019')
    image_out, label_out = cityscapes_prep.output_paths(out, key)
    label = np.asarray(Image.open(label_out)).copy()
    label[0, 0] = 0 if label[0, 0] else 1
    Image.fromarray(label).save(label_out)
    with pytest.raises(OutputConflictError, match=f'{label_out} exists and differs'):
        convert(archives, out)
    os.unlink(label_out)
    with open(image_out, 'ab') as f:
        f.write(b'more')
    with pytest.raises(OutputConflictError, match=f'{image_out} exists and differs'):
        convert(archives, out)
    assert not [name for name in os.listdir(os.path.dirname(label_out)) if name.startswith('.')]


def test_synthetic_tool_and_in_place_conversion(tmp_path):
    """docs/recipes.md's commands: tools/make_synthetic_cityscapes.py, then
    tools/prepare_cityscapes.py converting the unpacked folder in place."""
    root = str(tmp_path / 'cityscapes')
    run_command([sys.executable, 'tools/make_synthetic_cityscapes.py', root, '--per-city', '1'],
                check=True)
    before = {path: os.stat(path).st_mtime_ns for path, _, _ in raw_pairs(root, 'train')}
    assert len(before) == 2
    result = prepare(root, '--out', root, '--any-counts')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'wrote 2 train and 1 val pairs' in result.stdout
    assert f'Cityscapes is ready at {root}' in result.stdout
    assert {path: os.stat(path).st_mtime_ns for path in before} == before  # images untouched
    assert cityscapes_prep.check(root) == []


def rezip(source, target, rename=None, drop=(), replace=None):
    """A copy of the zip ``source``: members renamed, dropped or given new bytes."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, 'w') as new:
        for name in old.namelist():
            if name in drop:
                continue
            data = (replace or {}).get(name, old.read(name))
            new.writestr((rename or (lambda n: n))(name), data)
    return str(target)


def png_bytes(array, path):
    Image.fromarray(array).save(path)
    return open(path, 'rb').read()


def test_errors_name_the_archive_or_file(raw, archives, tmp_path):
    images, labels = archives
    out = str(tmp_path / 'out')
    with pytest.raises(MissingArchiveError, match='nowhere.zip not found'):
        convert([images, str(tmp_path / 'nowhere.zip')], out)
    with pytest.raises(MissingArchiveError, match='pass gtFine_trainvaltest.zip too'):
        convert([images], out)
    with pytest.raises(MissingArchiveError, match='pass leftImg8bit_trainvaltest.zip too'):
        convert([labels], out)
    coarse = rezip(labels, tmp_path / 'gtCoarse.zip',
                   rename=lambda n: n.replace('gtFine', 'gtCoarse'))
    with pytest.raises(ArchiveContentsError, match='gtCoarse.zip holds no Cityscapes train/val'):
        convert([images, coarse], out)
    truncated = tmp_path / 'gtFine_trainvaltest.zip'
    truncated.write_bytes(open(labels, 'rb').read()[:300])
    with pytest.raises(ArchiveContentsError, match='is not a valid zip file'):
        convert([images, str(truncated)], out)

    member = 'gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png'
    incomplete = rezip(labels, tmp_path / 'incomplete.zip', drop=(member, ))
    with pytest.raises(ArchiveContentsError, match='1 images and annotations do not pair') \
            as err:
        convert([images, incomplete], out)
    assert f'has no annotation {member}' in str(err.value)

    ids = np.full((64, 128), 7, np.uint8)
    ids[3, 3], ids[4, 4] = 34, 200
    unknown = rezip(labels, tmp_path / 'unknown.zip',
                    replace={member: png_bytes(ids, tmp_path / 'ids.png')})
    with pytest.raises(CityscapesLabelError,
                       match=rf'{member} in .*unknown.zip: values \[34, 200\] are no Cityscapes'):
        convert([images, unknown], out)
    coloured = rezip(labels, tmp_path / 'coloured.zip', replace={
        member: png_bytes(np.zeros((64, 128, 3), np.uint8), tmp_path / 'rgb.png')})
    with pytest.raises(ArchiveContentsError, match=f'{member} in .*coloured.zip has 3 channels'):
        convert([images, coloured], out)
    assert not os.path.exists(cityscapes_prep.output_paths(
        out, ('val', 'frankfurt', 'frankfurt_000000_000019'))[1])


def test_cli_reports_errors_by_name(archives, tmp_path):
    result = prepare(archives[0], '--out', str(tmp_path / 'out'))
    assert result.returncode != 0
    assert 'MissingArchiveError: no fine annotations' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('size', sorted(CONFIGS))
def test_config_matches_the_recipe(size):
    cfg = Config.fromfile(os.path.join(REPO_ROOT, CONFIGS[size]))
    recipe = Config.fromfile(MMSEG_RECIPE)
    # mmseg's UperNet Cityscapes schedule and data: 80K iterations of 4 GPUs x 2 images.
    assert cfg.crop_size == recipe.crop_size == (512, 1024)
    assert cfg.model.data_preprocessor.size == (512, 1024)
    assert cfg.train_cfg.max_iters == recipe.train_cfg.max_iters == 80000
    assert cfg.train_dataloader.batch_size == recipe.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 2 * 4
    for loader in LOADERS:
        # (inherited through `mmseg::`, the dataset carries mmseg's scope)
        assert {**cfg[loader].dataset, '_scope_': 'mmseg'} == {**recipe[loader].dataset,
                                                               '_scope_': 'mmseg'}
        assert cfg[loader].dataset.type == 'CityscapesDataset'
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 19
    assert cfg.work_dir == f'./work_dirs/upernet_incnext_{size}_cityscapes'
    # The paper's UperNet optimizer and backbone settings, as the ADE20K configs have them.
    ade20k = Config.fromfile(os.path.join(REPO_ROOT, f'configs/upernet/incnext_{size}_ade20k.py'))
    assert cfg.optim_wrapper == ade20k.optim_wrapper
    assert cfg.optim_wrapper.optimizer.lr == 6e-5
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 1500)
    assert (poly.type, poly.power, poly.begin, poly.end) == ('PolyLR', 1.0, 1500, 80000)
    assert cfg.model.backbone == ade20k.model.backbone
    assert cfg.model.backbone.init_cfg.checkpoint == f'inceptionnext://{ARCHS[size]}'
    assert cfg.custom_imports == ade20k.custom_imports
    for head in ('decode_head', 'auxiliary_head'):
        assert {**cfg.model[head], 'num_classes': 150} == ade20k.model[head]


@pytest.mark.parametrize('size', sorted(CONFIGS))
def test_config_builds_with_19_classes(size):
    from mmengine.registry import init_default_scope

    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(os.path.join(REPO_ROOT, CONFIGS[size]))
    cfg.model.backbone.pop('init_cfg')
    model = MODELS.build(cfg.model)
    assert model.backbone.arch_name == ARCHS[size]
    assert list(model.backbone.dims) == list(cfg.model.decode_head.in_channels)
    assert model.decode_head.conv_seg.out_channels == 19
    assert model.auxiliary_head.conv_seg.out_channels == 19


ATTO_MODEL = dict(
    backbone=dict(arch='atto'),
    decode_head=dict(in_channels=[40, 80, 160, 320], channels=32),
    auxiliary_head=dict(in_channels=160, channels=16))


def tiny_options(data_root, weights):
    """--cfg-options shrinking UperNet-T on Cityscapes to atto, 32x64 crops, 2 iterations."""
    options = [
        'model.backbone.arch=atto', f'model.backbone.init_cfg.checkpoint={weights}',
        'model.decode_head.in_channels=[40,80,160,320]', 'model.decode_head.channels=32',
        'model.auxiliary_head.in_channels=160', 'model.auxiliary_head.channels=16',
        'model.data_preprocessor.size=(32,64)',
        'train_dataloader.dataset.pipeline.2.scale=(128,64)',  # RandomResize
        'train_dataloader.dataset.pipeline.3.crop_size=(32,64)',  # RandomCrop
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
        'default_hooks.visualization.draw=False', 'randomness.seed=0',
    ]
    for loader in LOADERS:
        options += [f'{loader}.dataset.data_root={data_root}', f'{loader}.num_workers=0',
                    f'{loader}.persistent_workers=False']
    for loader in LOADERS[1:]:
        options.append(f'{loader}.dataset.pipeline.1.scale=(128,64)')  # Resize
    return ['--cfg-options', *options]


TOOLS = ('ours', 'mmseg')


def tool(tools, name):
    return os.path.join(os.path.join(REPO_ROOT, 'tools') if tools == 'ours' else MMSEG_TOOLS,
                        name)


@pytest.fixture(scope='module')
def trained(prepared, released_weights, tmp_path_factory):
    """The Cityscapes UperNet-T config (shrunk by --cfg-options) trained 2 iterations by
    our tools/train.py and by mmseg's, then tested by the same tools' test.py, and our
    checkpoint exported by tools/export_onnx.py, all in one process: tools -> (checkpoint,
    train output, test output), and 'export' -> (the ONNX file, the export's output)."""
    _, data_root = prepared
    options = tiny_options(data_root, released_weights('atto'))
    config = os.path.join(REPO_ROOT, CONFIGS['t'])
    works = {tools: str(tmp_path_factory.mktemp(f'trained_{tools}')) for tools in TOOLS}
    checkpoints = {tools: os.path.join(work, 'iter_2.pth') for tools, work in works.items()}
    export_folder = tmp_path_factory.mktemp('export')
    atto_config = export_folder / 'atto_cityscapes.py'
    atto_config.write_text(f"_base_ = [{config!r}]\nmodel = {ATTO_MODEL!r}\n"
                           "model['backbone']['init_cfg'] = None\n")
    onnx_path = export_folder / 'cityscapes.onnx'
    ended = run_tools_in_one_process([
        run for tools, work in works.items() for run in (
            [tool(tools, 'train.py'), config, '--work-dir', work, *options],
            [tool(tools, 'test.py'), config, checkpoints[tools], '--work-dir', work, *options])
    ] + [['tools/export_onnx.py', str(atto_config), checkpoints['ours'], '--out',
          str(onnx_path), '--shape', '64', '128', '--dynamic']])
    result = {tools: (checkpoints[tools], trained.output, tested.output)
              for tools, trained, tested in zip(TOOLS, ended[:4:2], ended[1:4:2])}
    return dict(result, export=(onnx_path, ended[-1].output))


@pytest.mark.parametrize('tools', TOOLS)
def test_trains_and_tests_on_synthetic_cityscapes(trained, tools):
    checkpoint, out, tested = trained[tools]
    assert 'Iter(train) [2/2]' in out
    assert os.path.isfile(checkpoint)
    if tools == 'ours':
        assert 'Data check: train_dataloader' in out and '4 image/annotation pairs' in out
    assert 'bicycle' in out and 'bicycle' in tested  # the per-class tables: Cityscapes' classes
    assert miou(tested) == pytest.approx(miou(out), abs=0.01)


def test_onnx_export_of_a_cityscapes_model_passes_its_self_check(trained):
    """tools/export_onnx.py on the trained atto model: ONNX Runtime reproduces PyTorch at
    the export size and two others, and the graph has Cityscapes' 19 classes."""
    import onnxruntime
    onnx_path, out = trained['export']
    assert len(re.findall(r'labels equal', out)) == 3, out[-3000:]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    logits, = session.run(None, {'images': np.zeros((1, 3, 48, 80), np.float32)})
    assert logits.shape == (1, 19, 48, 80)
