"""configs/mask2former/: mmseg's Swin Mask2Former recipe with InceptionNeXt; the error
without mmdet (mmseg_incnext.models.mask2former); a tiny run of our tools and mmseg's; the ONNX
export of tools/export_onnx.py (mmseg_incnext.deploy.mask2former_export)."""
import os
import re
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from tests.helpers import (ATTO_DIMS, MMSEG_TOOLS, REPO_ROOT, miou, run_command,
                           run_tools_in_one_process, write_tiny_config)

MMSEG_CONFIGS = os.path.join(os.path.dirname(__import__('mmseg').__file__), '.mim', 'configs')
SWIN_T = os.path.join(MMSEG_CONFIGS, 'mask2former',
                      'mask2former_swin-t_8xb2-160k_ade20k-512x512.py')
ARCHS = {'t': 'tiny', 's': 'small', 'b': 'base'}
DIMS = {'t': [96, 192, 384, 768], 's': [96, 192, 384, 768], 'b': [128, 256, 512, 1024]}
# InceptionNeXt-atto and a shallow head with few queries and sampled points, for speed.
SHRINK = dict(backbone=dict(arch='atto'),
              decode_head=dict(in_channels=ATTO_DIMS, num_queries=8,
                               pixel_decoder=dict(encoder=dict(num_layers=1)),
                               transformer_decoder=dict(num_layers=3),
                               train_cfg=dict(num_points=256)))
# Makes `import mmdet` fail in a subprocess as it does where mmdet is not installed.
WITHOUT_MMDET = "import sys; sys.modules['mmdet'] = None\n"


def config_path(size):
    return os.path.join(REPO_ROOT, 'configs', 'mask2former', f'incnext_{size}_ade20k.py')


def build(cfg):
    """The segmentor of ``cfg`` through mmseg's registry (BN for SyncBN, no weights)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mmseg_incnext.runner.device import replace_sync_bn
    replace_sync_bn(cfg.model)
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


def without_dims(head):
    return {k: v for k, v in head.items() if k != 'in_channels'}


@pytest.mark.parametrize('size', sorted(ARCHS))
def test_config_is_swins_recipe_with_our_backbone(size):
    cfg = Config.fromfile(config_path(size))
    arch = ARCHS[size]
    assert cfg.work_dir == f'./work_dirs/mask2former_incnext_{size}_ade20k'
    assert cfg.custom_imports == dict(
        imports=['mmseg_incnext', 'mmseg_incnext.utils.stack_fixes',
                 'mmseg_incnext.models.mask2former'],
        allow_failed_imports=False)
    # The backbone of our UperNet config of this size (the paper's drop-path rates).
    upernet = Config.fromfile(os.path.join(REPO_ROOT, 'configs', 'upernet',
                                           f'incnext_{size}_ade20k.py'))
    assert cfg.model.backbone == upernet.model.backbone
    backbone = cfg.model.backbone
    assert backbone.type == 'InceptionNeXt' and backbone.arch == arch
    assert backbone.drop_path_rate == {'t': 0.2, 's': 0.3, 'b': 0.4}[size]
    assert backbone.layer_scale_init_value == 1e-6
    assert backbone.norm_cfg.type == backbone.out_norm_cfg.type == 'SyncBN'
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'inceptionnext://{arch}')
    # Runtime: our hooks, as in every InceptionNeXt config.
    runtime = Config.fromfile(os.path.join(REPO_ROOT, 'configs', '_base_', 'incnext_runtime.py'))
    assert cfg.custom_hooks == runtime.custom_hooks and cfg.env_cfg == runtime.env_cfg

    # The head, data, schedule and optimizer: mmseg's Swin-T Mask2Former config.
    swin = Config.fromfile(SWIN_T, import_custom_modules=False)
    head = cfg.model.decode_head
    assert head.in_channels == DIMS[size]
    assert without_dims(head) == without_dims(swin.model.decode_head)
    assert head.type == 'Mask2FormerHead' and head.num_classes == 150
    assert head.num_queries == 100 and head.feat_channels == head.out_channels == 256
    assert head.strides == [4, 8, 16, 32] and head.num_transformer_feat_level == 3
    assert head.pixel_decoder.type == 'mmdet.MSDeformAttnPixelDecoder'
    assert head.pixel_decoder.encoder.num_layers == 6
    assert head.transformer_decoder.num_layers == 9
    assert head.loss_cls.loss_weight == 2.0 and head.loss_cls.class_weight == [1.0] * 150 + [0.1]
    assert head.loss_mask.use_sigmoid and head.loss_mask.loss_weight == 5.0
    assert head.loss_dice.type == 'mmdet.DiceLoss' and head.loss_dice.loss_weight == 5.0
    assert head.train_cfg.num_points == 12544
    assert [c.weight for c in head.train_cfg.assigner.match_costs] == [2.0, 5.0, 5.0]
    assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.model.data_preprocessor.test_cfg == dict(size_divisor=32)
    resize, crop = cfg.train_pipeline[2:4]
    assert resize.type == 'RandomChoiceResize' and resize.max_size == 2048
    assert resize.scales == [int(512 * x * 0.1) for x in range(5, 21)]
    assert crop.crop_size == (512, 512) and crop.cat_max_ratio == 0.75
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_cfg.val_interval == 5000
    assert cfg.default_hooks.checkpoint.save_best == 'mIoU'
    (poly, ) = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.power == 0.9 and poly.eta_min == 0
    assert poly.begin == 0 and poly.end == 160000
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer == dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8,
                             betas=(0.9, 0.999))
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=0.01, norm_type=2)
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0


@pytest.mark.parametrize('size', sorted(ARCHS))
def test_parameter_groups_follow_swins_rules(size):
    """Every parameter's lr and weight decay, from the built model and the config's
    optimizer: the backbone at 0.1x lr; no decay on norms (the backbone's included), the
    layer scales and the query and level embeddings."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(config_path(size))
    model = build(cfg)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    lr, decay = 1e-4, 0.05
    norms = {id(p) for m in model.modules()
             if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
             for p in m.parameters(recurse=False)}
    embeddings = ('decode_head.query_embed.', 'decode_head.query_feat.',
                  'decode_head.level_embed.')
    expected, got = {}, {}
    for name, param in model.named_parameters():
        exempt = id(param) in norms or name.endswith('.gamma') or name.startswith(embeddings)
        expected[name] = (lr * (0.1 if name.startswith('backbone.') else 1.0),
                          0.0 if exempt else decay)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group['params']:
            got[names[id(param)]] = (pytest.approx(group['lr']), group['weight_decay'])
    assert got == expected
    blocks = sum(name.endswith('.gamma') for name in expected)
    assert blocks == {'t': 18, 's': 36, 'b': 36}[size]  # every block's layer scale counted
    pixel_decoder = model.decode_head.pixel_decoder
    assert [conv.conv.in_channels for conv in pixel_decoder.input_convs] == DIMS[size][:0:-1]
    assert pixel_decoder.lateral_convs[0].conv.in_channels == DIMS[size][0]


def test_without_mmdet_the_error_names_the_extra():
    """Where mmdet cannot be imported: building the config through mmseg's registry fails
    naming the extra, and so does mmseg's train.py; without our module in the config's
    custom_imports, mmseg's build would fail on an unrelated keyword."""
    script = WITHOUT_MMDET + f'''
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
import mmseg_incnext  # the backbone, without mmseg_incnext.models.mask2former
init_default_scope('mmseg')
cfg = Config.fromfile({config_path('t')!r}, import_custom_modules=False)
try:
    MODELS.build(cfg.model)
except TypeError as err:
    print('WITHOUT OUR MODULE:', err)
cfg = Config.fromfile({config_path('t')!r})
MODELS.build(cfg.model)
'''
    result = run_command([sys.executable, '-c', script])
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "WITHOUT OUR MODULE: BaseModule.__init__() got an unexpected keyword" in out, out
    message = ('ImportError: The Mask2Former configs need mmdet: '
               'pip install "mmseg-incnext[mask2former]" (mmdet==3.3.0). '
               "Importing mmdet failed: No module named 'mmdet.models'")
    assert message in out, out[-3000:]

    tool = os.path.join(MMSEG_TOOLS, 'train.py')
    result = run_command([sys.executable, '-c', WITHOUT_MMDET + f'''
import runpy
sys.path.insert(0, {os.path.dirname(tool)!r})
sys.argv = [{tool!r}, {config_path('t')!r}]
runpy.run_path(sys.argv[0], run_name='__main__')
'''])
    out = result.stdout + result.stderr
    assert result.returncode != 0 and message in out, out[-3000:]


@pytest.fixture(scope='module')
def tiny_mask2former(tmp_path_factory, tiny_ade20k, released_weights):
    """Mask2Former-T on 64x64 crops of the tiny ADE20K, 2 iterations, validated at the
    end, with the atto backbone and the shallow head of SHRINK."""
    folder = str(tmp_path_factory.mktemp('mask2former'))
    tiny = write_tiny_config(folder, 'configs/mask2former/incnext_t_ade20k.py',
                             tiny_ade20k, released_weights('atto'))
    path = os.path.join(folder, 'shrunk_' + os.path.basename(tiny))
    with open(path, 'w') as f:
        f.write(f'_base_ = [{tiny!r}]\nmodel = {SHRINK!r}\n')
    return path


@pytest.fixture(scope='module')
def tool_runs(tiny_mask2former, tmp_path_factory):
    """In one process: our tools/train.py (2 iterations), then mmseg's tools/test.py and our
    tools/export_onnx.py (free height and width) on its checkpoint: name -> output, and
    'onnx' -> the exported file."""
    folder = tmp_path_factory.mktemp('trained')
    checkpoint, onnx = str(folder / 'work' / 'iter_2.pth'), str(folder / 'mask2former.onnx')
    runs = dict(
        train=['tools/train.py', tiny_mask2former, '--work-dir', str(folder / 'work')],
        mmseg_test=[os.path.join(MMSEG_TOOLS, 'test.py'), tiny_mask2former, checkpoint,
                    '--work-dir', str(folder / 'test')],
        export=['tools/export_onnx.py', tiny_mask2former, checkpoint, '--out', onnx, '--shape',
                '64', '64', '--dynamic'])
    outputs = [run.output for run in run_tools_in_one_process(list(runs.values()))]
    return dict(zip(runs, outputs), onnx=onnx)


def test_our_train_runs_mask2former(tool_runs):
    out = tool_runs['train']
    assert 'Iter(train) [2/2]' in out and 'decode.loss_dice' in out, out[-3000:]
    assert 'Loaded 220/240 backbone tensors' in out  # released atto weights, output norms new


def test_mmsegs_test_tool_reproduces_our_trainers_validation(tool_runs):
    """mmseg's test.py on our train.py's checkpoint: the mIoU of the validation in training
    (the same weights on the same images)."""
    assert miou(tool_runs['mmseg_test']) == pytest.approx(miou(tool_runs['train']), abs=0.01)


def shrunk_model(size='t'):
    """The config's segmentor with SHRINK applied, in eval mode, its class and mask
    embeddings redrawn larger so that the classes' scores differ across the image."""
    cfg = Config.fromfile(config_path(size))
    cfg.merge_from_dict(dict(model=SHRINK))
    model = build(cfg).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in [model.decode_head.cls_embed, *model.decode_head.mask_embed]:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0, 0.5)
    return model


def test_mask2former_logits_are_the_heads_predict():
    """The module the exporter runs: mmseg's Mask2FormerHead.predict of images whose
    padded size is their size; other segmentors are exported as they are."""
    from mmseg_incnext.deploy.mask2former_export import Mask2FormerLogits, exportable
    model = shrunk_model()
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    metas = [dict(img_shape=(64, 96), pad_shape=(64, 96))] * 2
    with torch.no_grad():
        features = model.extract_feat(images)
        expected = model.decode_head.predict(features, metas, None)
        got = exportable(model).decode_head(features)
    assert got.shape == expected.shape == (2, 150, 64, 96)
    assert torch.allclose(got, expected, atol=1e-6)
    assert expected.argmax(1).unique().numel() > 1  # not a constant map
    assert exportable(model).decode_head.head is not model.decode_head  # a copy

    upernet = build(Config.fromfile(os.path.join(REPO_ROOT, 'configs', 'upernet',
                                                 'incnext_t_ade20k.py')))
    assert exportable(upernet) is upernet
    with pytest.raises(TypeError, match='expected mmseg Mask2FormerHead, got UPerHead'):
        Mask2FormerLogits(upernet.decode_head)


def test_export_onnx_tool_verifies_a_trained_mask2former(tool_runs):
    """tools/export_onnx.py on our train.py's checkpoint, free height and width: written
    only after ONNX Runtime reproduced PyTorch on three sizes (one odd), as it prints."""
    output = tool_runs['export']
    assert os.path.isfile(tool_runs['onnx'])
    figures = re.findall(r'(\d+)x3x(\d+)x(\d+): max abs logit diff ([0-9.e+-]+), '
                         r'labels equal ([0-9.]+)%', output)
    assert [f[:3] for f in figures] == [('1', '64', '64'), ('2', '96', '128'),
                                        ('1', '69', '48')], output[-3000:]
    assert all(float(f[3]) <= 1e-3 and float(f[4]) >= 99.9 for f in figures), figures
