"""Deploy-time folding (:meth:`InceptionNeXt.switch_to_deploy`,
:mod:`mmseg_incnext.models.backbones.fusion`): the same eval-mode outputs with fewer layers,
and a model that refuses to train afterwards."""
import os

import pytest
import torch
import torch.nn as nn

import mmseg_incnext  # noqa: F401  (registers the backbone)
from mmseg.registry import MODELS
from mmseg_incnext.models.backbones.fusion import fold_norm_before_pointwise_conv
from tests.helpers import REPO_ROOT, seeded_timm_model


def randomise_out_norms(model):
    with torch.no_grad():
        for i in model.out_indices:
            norm = getattr(model, f'norm{i}')
            norm.running_mean.normal_(0, 0.2)
            norm.running_var.uniform_(0.5, 1.5)
            norm.weight.normal_(1.0, 0.1)
            norm.bias.normal_(0, 0.1)
    return model


def seeded_backbone(arch, seed=0, **kwargs):
    """Our backbone with randomised weights, BN statistics and layer scales (eval mode)."""
    reference = seeded_timm_model(arch, seed=seed)
    model = MODELS.build(dict(type='InceptionNeXt', arch=arch, **kwargs))
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith('head.')}
    model.load_state_dict(state, strict=False)
    return randomise_out_norms(model).eval()


def assert_same_outputs(expected, got, atol=1e-5):
    assert len(expected) == len(got)
    for stage, (e, g) in enumerate(zip(expected, got)):
        assert e.shape == g.shape, stage
        torch.testing.assert_close(g, e, atol=atol, rtol=1e-5, msg=f'stage {stage}')


@pytest.mark.parametrize('arch,channels_last', [('atto', True), ('tiny', True),
                                                ('atto', False)])
def test_deployed_model_matches_the_plain_one(arch, channels_last):
    model = seeded_backbone(arch, seed=3, channels_last=channels_last)
    inputs = [torch.randn(2, 3, 64, 96), torch.randn(1, 3, 67, 45)]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    assert model.switch_to_deploy() is model and not model.training
    state = model.state_dict()
    assert not any(k.startswith('stem.1') or k.endswith('gamma') or '.blocks.0.norm.' in k
                   for k in state), 'folded layers are gone'
    assert 'stages.1.downsample.0.running_mean' in state and 'norm3.running_mean' in state
    assert isinstance(model.stages[2].blocks[0].norm, nn.Identity)
    with torch.no_grad():
        for x, e in zip(inputs, expected):
            assert_same_outputs(e, model(x))
    assert model.switch_to_deploy() is model  # a second call changes nothing
    with torch.no_grad():
        assert_same_outputs(expected[0], model(inputs[0]))


def test_deployed_model_refuses_training_and_keeps_unfoldable_norms():
    model = seeded_backbone('atto', seed=4, norm_cfg=dict(type='GN', num_groups=4),
                            out_norm_cfg=dict(type='BN'))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    model.switch_to_deploy()
    assert isinstance(model.stem[1], nn.GroupNorm)  # statistics from the input: kept
    assert isinstance(model.stages[0].blocks[0].norm, nn.GroupNorm)
    assert model.stages[0].blocks[0].gamma is None  # the layer scale folds anyway
    with torch.no_grad():
        assert_same_outputs(expected, model(x))
    with pytest.raises(RuntimeError, match='deploy mode'):
        model.train()


def test_a_norm_folds_only_into_a_following_1x1_dense_conv():
    norm = nn.BatchNorm2d(4).eval()
    with pytest.raises(ValueError, match='1x1'):
        fold_norm_before_pointwise_conv(norm, nn.Conv2d(4, 4, 3))
    assert not fold_norm_before_pointwise_conv(nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 1))


def test_deployed_segmentor_backbone_gives_the_same_logits():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmseg_incnext.runner.device import replace_sync_bn
    cfg = Config.fromfile(os.path.join(REPO_ROOT, 'configs/fpn/incnext_t_ade20k.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.arch = 'atto'
    cfg.model.backbone.layer_scale_init_value = 0.5
    cfg.model.neck.in_channels = [40, 80, 160, 320]
    replace_sync_bn(cfg.model)
    init_default_scope('mmseg')
    segmentor = MODELS.build(cfg.model).eval()
    randomise_out_norms(segmentor.backbone)
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        expected = segmentor(x, mode='tensor')
        segmentor.backbone.switch_to_deploy()
        got = segmentor(x, mode='tensor')
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match='deploy mode'):
        segmentor.train()


def test_torch_compile_traces_train_and_deployed_eval_without_graph_breaks():
    torch._dynamo.reset()
    model = seeded_backbone('atto', seed=12).train()
    x = torch.randn(2, 3, 67, 45)
    assert torch._dynamo.explain(model)(x).graph_break_count == 0
    model.switch_to_deploy()
    with torch.no_grad():
        assert torch._dynamo.explain(model)(x).graph_break_count == 0
        compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
        assert_same_outputs(model(x), compiled(x))
    torch._dynamo.reset()
