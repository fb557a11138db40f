"""The ADE20K configs: they build, match the paper's recipe and model sizes."""
import os

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_incnext  # noqa: F401
from mmseg.registry import MODELS
from mmseg_incnext.runner.complexity import PAPER_MODEL_SIZES, count_params_and_macs
from mmseg_incnext.models.backbones.weights import RELEASE_URLS, release_url
from tests.helpers import REPO_ROOT

ARCHS = {'t': 'tiny', 's': 'small', 'b': 'base'}
CONFIGS = sorted(PAPER_MODEL_SIZES)


def load(name):
    return Config.fromfile(os.path.join(REPO_ROOT, 'configs', name))


@pytest.mark.parametrize('name', CONFIGS)
def test_model_size_matches_paper(name):
    init_default_scope('mmseg')
    params_m, gmacs, height, width = PAPER_MODEL_SIZES[name]
    params, macs, backbone_macs = count_params_and_macs(load(name), (height, width))
    assert abs(params / 1e6 - params_m) / params_m <= 0.02, params
    assert abs(macs / 1e9 - gmacs) / gmacs <= 0.02, macs
    assert 0 < backbone_macs < macs


@pytest.mark.parametrize('name', CONFIGS)
def test_recipe_matches_paper(name):
    cfg = load(name)
    size = name.split('_')[1]
    backbone = cfg.model.backbone
    assert cfg.custom_imports['imports'] == ['mmseg_incnext', 'mmseg_incnext.utils.stack_fixes']
    assert backbone.type == 'InceptionNeXt' and backbone.arch == ARCHS[size]
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=f'inceptionnext://{ARCHS[size]}')
    assert release_url(backbone.init_cfg.checkpoint) == RELEASE_URLS[ARCHS[size]]
    assert backbone.norm_cfg.type == 'SyncBN' and backbone.out_norm_cfg.type == 'SyncBN'
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    dims = [96, 192, 384, 768] if size in 'ts' else [128, 256, 512, 1024]
    assert list(cfg.model.get('neck', cfg.model.decode_head).in_channels) == dims
    if name.startswith('upernet'):
        assert backbone.drop_path_rate == {'t': 0.2, 's': 0.3, 'b': 0.4}[size]
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
        assert optimizer.lr == 6e-5 and optimizer.weight_decay == 0.01
        warmup, poly = cfg.param_scheduler
        assert warmup.type == 'LinearLR' and warmup.end == 1500
        assert poly.type == 'PolyLR' and poly.power == 1.0 and poly.end == 160000
        aux = cfg.model.auxiliary_head
        assert aux.type == 'FCNHead' and aux.in_index == 2
        assert aux.in_channels == cfg.model.decode_head.in_channels[2]
    else:
        assert backbone.drop_path_rate == {'t': 0.1, 's': 0.2, 'b': 0.2}[size]
        assert cfg.train_cfg.max_iters == 40000
        assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 32
        assert optimizer.lr == 2e-4 and optimizer.weight_decay == 1e-4
        (poly, ) = cfg.param_scheduler
        assert poly.type == 'PolyLR' and poly.power == 0.9 and poly.end == 40000
        assert cfg.model.neck.type == 'FPN' and cfg.model.decode_head.type == 'FPNHead'


def test_configs_build_with_their_backbone_dims():
    init_default_scope('mmseg')
    for name in ('upernet/incnext_b_ade20k.py', 'fpn/incnext_s_ade20k.py'):
        cfg = load(name)
        cfg.model.backbone.pop('init_cfg')
        model = MODELS.build(cfg.model)
        assert type(model.backbone).__name__ == 'InceptionNeXt'
        assert list(model.backbone.dims) == list(
            cfg.model.decode_head.in_channels if name.startswith('upernet')
            else cfg.model.neck.in_channels)


def test_model_size_of_a_head_that_cannot_run_on_meta():
    """Mask2Former reads tensor values while it runs, so it is counted on the CPU: all its
    parameters, the backbone's MACs those of the same backbone under FPN, and a head's."""
    shape = (64, 64)
    mask2former = load('mask2former/incnext_t_ade20k.py')
    size = count_params_and_macs(mask2former, shape)
    fpn = count_params_and_macs(load('fpn/incnext_t_ade20k.py'), shape)
    assert size.backbone_macs == fpn.backbone_macs
    assert size.macs > size.backbone_macs
    mask2former.model.backbone.pop('init_cfg')
    mask2former.model.pop('data_preprocessor')
    init_default_scope('mmseg')
    model = MODELS.build(mask2former.model)
    assert size.params == sum(p.numel() for p in model.parameters())
