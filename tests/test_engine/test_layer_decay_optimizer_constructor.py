"""The layer-decay optimizer constructor
(mmseg_incnext.engine.optimizers.layer_decay_optimizer_constructor): the lr and weight decay
of every parameter of each arch against the rule written out here, the config that uses it,
and its errors."""
import os
import re
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from torch.nn.modules.batchnorm import _BatchNorm

import mmseg_incnext  # noqa: F401  (registers the backbone and the constructor)
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg_incnext.models.backbones.arch import ARCH_SETTINGS
from tests.helpers import MMSEG_TOOLS, REPO_ROOT, miou, run_tool, write_tiny_config

CONSTRUCTOR = 'InceptionNeXtLayerDecayOptimizerConstructor'
LR, WD, DECAY = 1e-3, 0.05, 0.9
# The smallest layer-wise num_layers per arch: stage 2's last id (3 + (depth - 1) // 3) + 1.
MIN_LAYER_WISE = {'atto': 5, 'tiny': 6, 'small': 12, 'base': 12}
# What the UperNet configs add (configs/_base_/upernet_ade20k_160k.py); the FPN ones add none.
OUR_EXEMPTIONS = dict(norm_decay_mult=0.0, custom_keys={'.gamma': dict(decay_mult=0.0)})
HEADS = r'(decode_head|auxiliary_head)\.'

# The expected layer id of each parameter, by name, as a function of num_layers N and the
# name's match; every parameter must match exactly one pattern.
RULES = {
    'layer_wise': [
        (r'backbone\.stem\.[01]\.', lambda n, m: 0),
        (r'backbone\.stages\.0\.blocks\.\d+\.', lambda n, m: 1),
        (r'backbone\.stages\.1\.(downsample\.[01]|blocks\.\d+)\.', lambda n, m: 2),
        (r'backbone\.stages\.2\.downsample\.[01]\.', lambda n, m: 3),
        (r'backbone\.stages\.2\.blocks\.(\d+)\.', lambda n, m: 3 + int(m[1]) // 3),
        (r'backbone\.stages\.3\.(downsample\.[01]|blocks\.\d+)\.', lambda n, m: n),
        (r'backbone\.norm[0-3]\.', lambda n, m: n + 1),
        (HEADS, lambda n, m: n + 1),
    ],
    'stage_wise': [
        (r'backbone\.(stem|stages\.[123]\.downsample)\.[01]\.', lambda n, m: 0),
        (r'backbone\.stages\.([0-3])\.blocks\.\d+\.', lambda n, m: int(m[1]) + 1),
        (r'backbone\.norm[0-3]\.', lambda n, m: n + 1),
        (HEADS, lambda n, m: n + 1),
    ],
}

_MODELS = {}


def segmentor(arch, **backbone):
    """A small UperNet (16-channel heads) on InceptionNeXt-``arch``, built by the registry."""
    key = (arch, tuple(sorted(backbone.items())))
    if key not in _MODELS:
        init_default_scope('mmseg')
        dims = list(ARCH_SETTINGS[arch]['dims'])
        norm = dict(type='BN', requires_grad=True)
        _MODELS[key] = MODELS.build(dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                                   seg_pad_val=255, size=(64, 64)),
            backbone=dict(type='InceptionNeXt', arch=arch, norm_cfg=norm, out_norm_cfg=norm,
                          **backbone),
            decode_head=dict(type='UPerHead', in_channels=dims, in_index=[0, 1, 2, 3],
                             pool_scales=(1, 2, 3, 6), channels=16, num_classes=4,
                             norm_cfg=norm, align_corners=False),
            auxiliary_head=dict(type='FCNHead', in_channels=dims[2], in_index=2, channels=8,
                                num_convs=1, concat_input=False, num_classes=4,
                                norm_cfg=norm, align_corners=False,
                                loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))))
    return _MODELS[key]


def build(model, decay_type, num_layers, lr=LR, wd=WD, **extra):
    init_default_scope('mmseg')
    return build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor=CONSTRUCTOR,
        optimizer=dict(type='AdamW', lr=lr, weight_decay=wd, eps=1e-30),
        paramwise_cfg=dict(decay_rate=DECAY, decay_type=decay_type, num_layers=num_layers,
                           **extra)))


def expected_layer_id(name, decay_type, num_layers):
    found = [rule(num_layers, m) for pattern, rule in RULES[decay_type]
             for m in [re.match(pattern, name)] if m]
    assert len(found) == 1, f'{name} matches {len(found)} rules'
    return found[0]


def expected_settings(model, decay_type, num_layers, lr=LR, wd=WD):
    """The rule's (lr, weight decay) of each trainable parameter, by name: no decay on
    biases, layer scales and norms."""
    norm_params = {f'{module_name}.{name}' for module_name, module in model.named_modules()
                   if isinstance(module, _BatchNorm) for name, _ in module.named_parameters()}
    expected = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            layer_id = expected_layer_id(name, decay_type, num_layers)
            exempt = name.endswith(('.bias', '.gamma')) or name in norm_params
            expected[name] = (lr * DECAY ** (num_layers + 1 - layer_id), 0.0 if exempt else wd)
    return expected


def check_every_parameter(model, optim_wrapper, decay_type, num_layers, lr=LR, wd=WD):
    """Each trainable parameter is in one group, once, with the rule's lr and weight decay;
    frozen ones are in none. Returns the lr of each parameter by name."""
    seen = {}
    for group in optim_wrapper.optimizer.param_groups:
        for param in group['params']:
            seen.setdefault(id(param), []).append((group['lr'], group['weight_decay']))
    expected = expected_settings(model, decay_type, num_layers, lr, wd)
    lrs = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert id(param) not in seen, f'frozen {name} is in a param group'
            continue
        assert len(seen.get(id(param), [])) == 1, f'{name} is in {seen.get(id(param))} groups'
        (got_lr, got_wd), = seen.pop(id(param))
        want_lr, want_wd = expected[name]
        assert got_lr == pytest.approx(want_lr, rel=1e-12), name
        assert got_wd == want_wd, name
        assert param.ndim > 1 or got_wd == 0.0, name  # mmseg's rule: no decay on 1-D tensors
        lrs[name] = got_lr
    assert not seen, 'param groups hold tensors that are not the model\'s parameters'
    return lrs


@pytest.mark.parametrize('exemptions', [{}, OUR_EXEMPTIONS], ids=['defaults', 'our_configs'])
@pytest.mark.parametrize('decay_type', ['layer_wise', 'stage_wise'])
@pytest.mark.parametrize('arch', ['atto', 'tiny', 'small', 'base'])
def test_every_parameter_gets_its_layers_lr_and_weight_decay(arch, decay_type, exemptions):
    model = segmentor(arch)
    num_layers = MIN_LAYER_WISE[arch]
    lrs = check_every_parameter(model, build(model, decay_type, num_layers, **exemptions),
                                decay_type, num_layers)
    depths = ARCH_SETTINGS[arch]['depths']
    # The rule's landmarks, spelled out: the stem lowest, the heads and output norms at lr.
    if decay_type == 'layer_wise':
        assert lrs['backbone.stem.0.weight'] == pytest.approx(LR * DECAY ** (num_layers + 1))
        last = f'backbone.stages.2.blocks.{depths[2] - 1}.mlp.fc1.weight'
        assert lrs[last] == pytest.approx(LR * DECAY ** 2)  # id N - 1: the minimum N
    else:
        assert lrs['backbone.stages.3.downsample.1.weight'] == lrs['backbone.stem.0.weight'] \
            == pytest.approx(LR * DECAY ** (num_layers + 1))
    assert lrs['backbone.stages.3.blocks.0.gamma'] == pytest.approx(
        LR * DECAY ** (1 if decay_type == 'layer_wise' else num_layers - 3))
    assert lrs['backbone.norm0.weight'] == lrs['decode_head.conv_seg.weight'] == LR
    assert lrs['auxiliary_head.conv_seg.bias'] == LR


def test_groups_share_settings_and_frozen_stages_are_left_out():
    model = segmentor('atto', frozen_stages=1)
    optim_wrapper = build(model, 'layer_wise', 5)
    check_every_parameter(model, optim_wrapper, 'layer_wise', 5)
    groups = optim_wrapper.optimizer.param_groups
    settings = [(g['lr'], g['weight_decay']) for g in groups]
    assert len(settings) == len(set(settings))
    # ids 2..6, each with and without weight decay (frozen: the stem and stage 0, id 0, 1)
    assert sorted({g['layer_id'] for g in groups}) == [2, 3, 4, 5, 6]
    assert len(groups) == 10


def test_one_training_step_moves_each_parameter_by_its_lr():
    """AdamW's first step moves each element by lr * g / (|g| + eps) after the decoupled
    decay, so with eps ~ 0 the largest move of a parameter, decay taken out, is the lr the
    rule gives it."""
    model = segmentor('atto')
    model.train()
    optim_wrapper = build(model, 'stage_wise', 4)
    expected = expected_settings(model, 'stage_wise', 4)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.manual_seed(0)
    samples = []
    for _ in range(2):
        sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 4, (1, 64, 64))))
        sample.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
                        for _ in range(2)], data_samples=samples)
    losses = model.train_step(data, optim_wrapper)
    assert torch.isfinite(torch.as_tensor(losses['loss']))
    for name, param in model.named_parameters():
        lr, wd = expected[name]
        step = param.detach() - before[name] * (1 - lr * wd)
        assert step.abs().max().item() == pytest.approx(lr, rel=1e-3), name
    assert expected['backbone.stem.0.weight'][0] == pytest.approx(LR * DECAY ** 5)


def load(name):
    return Config.fromfile(os.path.join(REPO_ROOT, 'configs', 'upernet', name))


def test_config_adds_only_the_decay_to_the_paper_recipe():
    child, parent = load('incnext_t_ade20k_layer_decay.py'), load('incnext_t_ade20k.py')
    assert child.work_dir == './work_dirs/upernet_incnext_t_ade20k_layer_decay'
    child, parent = child.to_dict(), parent.to_dict()
    child.pop('work_dir'), parent.pop('work_dir')
    child_optim, parent_optim = child.pop('optim_wrapper'), parent.pop('optim_wrapper')
    assert child == parent
    assert child_optim.pop('constructor') == CONSTRUCTOR
    decay = {k: child_optim['paramwise_cfg'].pop(k)
             for k in ('decay_rate', 'decay_type', 'num_layers')}
    assert decay == dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6)
    assert child_optim == parent_optim


def test_config_builds_its_optimizer():
    cfg = load('incnext_t_ade20k_layer_decay.py')
    cfg.model.backbone.pop('init_cfg')
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    optimizer = cfg.optim_wrapper.optimizer
    lrs = check_every_parameter(model, optim_wrapper, 'stage_wise', 6, lr=optimizer.lr,
                                wd=optimizer.weight_decay)
    assert lrs['backbone.stem.0.weight'] == pytest.approx(6e-5 * 0.9 ** 7)
    assert lrs['backbone.stages.0.blocks.0.mlp.fc1.weight'] == pytest.approx(6e-5 * 0.9 ** 6)
    assert lrs['backbone.stages.3.blocks.2.mlp.fc2.weight'] == pytest.approx(6e-5 * 0.9 ** 3)
    assert lrs['decode_head.fpn_bottleneck.conv.weight'] == 6e-5


@pytest.mark.parametrize('arch', ['atto', 'tiny', 'small', 'base'])
@pytest.mark.parametrize('decay_type', ['layer_wise', 'stage_wise'])
def test_num_layers_too_small_for_the_arch(arch, decay_type):
    smallest = MIN_LAYER_WISE[arch] if decay_type == 'layer_wise' else 4
    with pytest.raises(ValueError, match=rf'num_layers={smallest - 1} is too small for '
                       rf'InceptionNeXt-{arch} .* {decay_type} decay: it needs at least '
                       rf'{smallest}'):
        build(segmentor(arch), decay_type, smallest - 1)


def test_unknown_decay_type():
    with pytest.raises(ValueError, match=r"decay_type must be one of \('layer_wise', "
                       r"'stage_wise'\), got 'layer_wise_vit'"):
        build(segmentor('atto'), 'layer_wise_vit', 5)


def test_backbone_that_is_not_inceptionnext():
    init_default_scope('mmseg')
    model = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='ResNetV1c', depth=18, norm_cfg=dict(type='BN')),
        decode_head=dict(type='FCNHead', in_channels=512, in_index=3, channels=8,
                         num_convs=1, num_classes=4)))
    with pytest.raises(TypeError, match='needs a segmentor whose backbone is InceptionNeXt, '
                       'got ResNetV1c in EncoderDecoder'):
        build(model, 'layer_wise', 6)
    with pytest.raises(TypeError, match='got none in Linear'):
        build(torch.nn.Linear(2, 2), 'layer_wise', 6)


def test_custom_arch_with_other_than_four_stages():
    init_default_scope('mmseg')
    backbone = MODELS.build(dict(type='InceptionNeXt', out_indices=(0, 1, 2), arch=dict(
        depths=(2, 2, 2), dims=(16, 32, 64), mlp_ratios=(4, 4, 4))))
    model = torch.nn.Module()
    model.backbone = backbone
    with pytest.raises(ValueError, match=r'defined for 4 stages; InceptionNeXt-custom has '
                       r'depths \(2, 2, 2\)'):
        build(model, 'stage_wise', 6)


@pytest.mark.parametrize('paramwise, error, message', [
    (dict(decay_rates=0.9), KeyError, r"unknown paramwise_cfg key\(s\) \['decay_rates'\]"),
    (dict(decay_rate=None), KeyError, r"needs paramwise_cfg key\(s\) \['decay_rate'\]"),
    (dict(num_layers=None), KeyError, r"needs paramwise_cfg key\(s\) \['num_layers'\]"),
    (dict(decay_rate=1.5), ValueError, r'decay_rate must be a number in \(0, 1\], got 1.5'),
    (dict(num_layers=6.0), TypeError, r'num_layers must be an int, got 6.0'),
])
def test_bad_paramwise_cfg(paramwise, error, message):
    cfg = dict(decay_rate=DECAY, decay_type='layer_wise', num_layers=6)
    cfg.update(paramwise)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    init_default_scope('mmseg')
    with pytest.raises(error, match=message):
        build_optim_wrapper(segmentor('atto'), dict(
            type='OptimWrapper', constructor=CONSTRUCTOR,
            optimizer=dict(type='AdamW', lr=LR, weight_decay=WD), paramwise_cfg=cfg))


def test_config_trains_with_mmsegs_tool(tiny_ade20k, released_weights, tmp_path):
    """The lr-decay variant, shrunk to 64-pixel crops and 2 iterations on synthetic ADE20K:
    mmseg's train.py (the constructor registered through the config's custom_imports) logs
    the decayed groups, trains and validates."""
    config = write_tiny_config(str(tmp_path), 'configs/upernet/incnext_t_ade20k_layer_decay.py',
                               tiny_ade20k, released_weights('atto'))
    out = run_tool([sys.executable, os.path.join(MMSEG_TOOLS, 'train.py'), config,
                    '--work-dir', str(tmp_path / 'work')])
    assert 'layer decay (stage_wise, 0.9, num_layers 6): layer 0: lr 2.87e-05' in out
    assert 'Iter(train) [2/2]' in out
    assert 0 <= miou(out) <= 100
