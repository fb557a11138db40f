"""The fused inference copy of the backbone
(:mod:`mmseg_incnext.models.backbones.inceptionnext_fused`): its outputs, and when the
backbone runs it and builds it again."""
import logging
import os

import pytest
import torch

import mmseg_incnext  # noqa: F401  (registers the backbone)
from mmseg.registry import MODELS
from mmseg_incnext.models.backbones import (FusedInceptionNeXt, fuse_for_inference,
                                           fuse_segmentor)
from tests.helpers import REPO_ROOT, seeded_timm_model

SIZES = [(64, 96), (67, 45), (20, 33), (33, 67)]


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
    """Our backbone with randomised weights, BN statistics and layer scales (eval mode),
    running its plain path unless ``fast_inference=True`` is passed."""
    reference = seeded_timm_model(arch, seed=seed)
    kwargs.setdefault('fast_inference', False)
    model = MODELS.build(dict(type='InceptionNeXt', arch=arch, **kwargs))
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith('head.')}
    model.load_state_dict(state, strict=False)
    return randomise_out_norms(model).eval()


def assert_same_outputs(expected, got):
    assert len(expected) == len(got)
    for stage, (e, g) in enumerate(zip(expected, got)):
        assert e.shape == g.shape, stage
        assert (e - g).abs().max().item() <= 1e-4, f'stage {stage}'


@pytest.mark.parametrize('arch', ['atto', 'tiny'])
@pytest.mark.parametrize('size', SIZES)
def test_fused_matches_plain_eval(arch, size):
    model = seeded_backbone(arch, seed=3)
    fused = fuse_for_inference(model)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = model(x)
    assert_same_outputs(expected, fused(x))
    # channels_last input and plain-NCHW outputs give the same numbers too
    fused_nchw = fuse_for_inference(model, output_memory_format=torch.contiguous_format)
    got = fused_nchw(x.contiguous(memory_format=torch.channels_last))
    assert all(o.is_contiguous() for o in got)
    assert_same_outputs(expected, got)


def test_fused_matches_with_nchw_internal_layout():
    model = seeded_backbone('atto', seed=4)
    fused = fuse_for_inference(model, memory_format=torch.contiguous_format)
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        assert_same_outputs(model(x), fused(x))


def test_fused_is_sensitive_to_every_weight_kind():
    """A parity check that cannot pass by accident: perturbing a folded weight breaks it."""
    model = seeded_backbone('atto', seed=5)
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        expected = model(x)
        for name in ('stages.2.blocks.1.norm.running_var', 'stages.2.blocks.1.gamma',
                     'stages.2.downsample.0.bias', 'stem.1.running_mean', 'norm3.weight'):
            broken = seeded_backbone('atto', seed=5)
            broken.state_dict()[name].mul_(1.5).add_(0.1)
            got = fuse_for_inference(broken)(x)
            assert (got[3] - expected[3]).abs().max().item() > 1e-3, name


def test_downsample_with_zero_bn_scale_falls_back_and_stays_exact():
    model = seeded_backbone('atto', seed=6)
    with torch.no_grad():
        model.stages[1].downsample[0].weight[:3] = 0
    fused = fuse_for_inference(model)
    assert not fused.stages[1][0].folded and fused.stages[2][0].folded
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        assert_same_outputs(model(x), fused(x))


def test_out_indices_subset_skips_later_stages():
    model = seeded_backbone('atto', seed=7, out_indices=(0, 2))
    fused = fuse_for_inference(model)
    assert len(fused.stages) == 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_same_outputs(model(x), fused(x))


def test_original_weights_untouched():
    model = seeded_backbone('atto', seed=8)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model)
    with torch.no_grad():
        fused(torch.randn(1, 3, 64, 64))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert model.training  # its mode is not changed either
    assert all(not t.data_ptr() == s.data_ptr() for t in fused.buffers()
               for s in model.parameters())


def test_training_is_refused():
    fused = fuse_for_inference(seeded_backbone('atto'))
    assert not fused.training
    with pytest.raises(RuntimeError, match='inference-only'):
        fused.train()
    with pytest.raises(RuntimeError, match='inference-only'):
        fused(torch.randn(1, 3, 64, 64, requires_grad=True))
    assert not any(p.requires_grad for p in fused.parameters())
    # eval() and plain forwards with grad mode on are fine
    fused.eval()
    out = fused(torch.randn(1, 3, 64, 64))
    assert not out[0].requires_grad


def test_wrong_input_is_named():
    fused = fuse_for_inference(seeded_backbone('atto'))
    with pytest.raises(ValueError, match='expects an N x 3'):
        fused(torch.randn(1, 4, 64, 64))
    with pytest.raises(TypeError, match='InceptionNeXt'):
        fuse_for_inference(torch.nn.Conv2d(3, 3, 1))


def test_fuse_segmentor_in_place_and_refuses_train():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmseg_incnext.device_adaptation import replace_sync_bn
    cfg = Config.fromfile(os.path.join(REPO_ROOT, 'configs/fpn/incnext_t_ade20k.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.arch = 'atto'
    cfg.model.backbone.fast_inference = False  # the reference: the plain path
    cfg.model.neck.in_channels = [40, 80, 160, 320]
    replace_sync_bn(cfg.model)
    init_default_scope('mmseg')
    segmentor = MODELS.build(cfg.model).eval()
    randomise_out_norms(segmentor.backbone)
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        expected = segmentor(x, mode='tensor')
    assert fuse_segmentor(segmentor) is segmentor
    assert isinstance(segmentor.backbone, FusedInceptionNeXt)
    with torch.no_grad():
        got = segmentor(x, mode='tensor')
    assert (got - expected).abs().max().item() <= 1e-4
    with pytest.raises(RuntimeError, match='inference-only'):
        segmentor.train()


def count_stem_calls(model):
    """How often the model's own stem runs (the fused copy has its own): a list to read."""
    calls = []
    model.stem.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_backbone_runs_its_fused_copy_in_eval_mode_without_autograd_only():
    model = seeded_backbone('atto', seed=10, fast_inference=True)
    plain = seeded_backbone('atto', seed=10)
    stem_calls = count_stem_calls(model)
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        assert_same_outputs(plain(x), model(x))
        assert not stem_calls  # the fused copy ran
        with torch.inference_mode():
            assert_same_outputs(plain(x), model(x))
        assert not stem_calls
        model.train()(x)
        assert len(stem_calls) == 1  # train mode: the model's own layers
    out = model.eval()(x.requires_grad_(True))  # e.g. gradients w.r.t. the input
    assert len(stem_calls) == 2 and out[0].requires_grad


@pytest.fixture
def builds(monkeypatch):
    """Counts the fused copies the backbone builds."""
    from mmseg_incnext.models.backbones import inceptionnext
    calls = []
    fuse = inceptionnext.fuse_for_inference
    monkeypatch.setattr(inceptionnext, 'fuse_for_inference',
                        lambda *args, **kwargs: calls.append(1) or fuse(*args, **kwargs))
    return calls


def train_step_then_eval(model):
    model.train()
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    model.eval()


def write_through_data(model, state):
    """What mmengine's EMA hook does before validating: weights swapped in through
    ``.data`` (which no tensor version counts), then the loop's ``model.eval()``."""
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        tensor.data.copy_(state[name])
    model.eval()


def scale_in_place(model):
    with torch.no_grad():
        model.stages[2].blocks[1].norm.running_var.mul_(1.5)
        model.stages[2].blocks[1].gamma.mul_(1.5)
        model.norm3.weight.add_(0.1)


# Each leaves the model in eval mode; all but .double() change its weights.
CHANGES = {
    'load_state_dict': lambda model, other: model.load_state_dict(other),
    'load_state_dict(assign=True)':
        lambda model, other: model.load_state_dict(other, assign=True),
    'a training step, then eval()': lambda model, other: train_step_then_eval(model),
    'in-place edit under no_grad': lambda model, other: scale_in_place(model),
    '.data writes, then eval()': write_through_data,
    '.double()': lambda model, other: model.double(),
}


@pytest.fixture(scope='module')
def other_weights():
    return seeded_backbone('atto', seed=11).state_dict()


@pytest.mark.parametrize('change', CHANGES)
def test_fused_copy_follows_every_change_of_the_weights(change, builds, other_weights):
    """After each kind of change, inference (the fused copy) equals the same model's plain
    path (autograd on); the change moved the outputs (or their dtype), so a stale copy
    would fail."""
    model = seeded_backbone('atto', seed=10, fast_inference=True)
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        before = model(x)
        model(x)
    assert len(builds) == 1  # built once, then reused
    CHANGES[change](model, {k: v.clone() for k, v in other_weights.items()})
    assert not model.training
    x = x.to(next(model.parameters()).dtype)
    with torch.no_grad():
        after = model(x)
        model(x)
    assert len(builds) == 2
    if change == '.double()':
        assert after[3].dtype == torch.float64
    else:
        assert (after[3] - before[3]).abs().max().item() > 1e-3
    with torch.enable_grad():
        assert_same_outputs(model(x), after)


def test_fused_copy_of_an_mmengine_ema_model_follows_its_updates(other_weights):
    """mmengine's ExponentialMovingAverage writes its average through ``.data``; the
    averaged backbone's next ``eval()`` (as mmengine's loops call) refreshes its copy."""
    from mmengine.model import ExponentialMovingAverage
    model = seeded_backbone('atto', seed=10, fast_inference=True)
    ema = ExponentialMovingAverage(model, momentum=0.5).eval()
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        before = ema.module(x)
    model.load_state_dict(other_weights)
    ema.update_parameters(model)  # its first update copies the model
    ema.update_parameters(model)
    ema.eval()
    with torch.no_grad():
        after = ema.module(x)
    assert (after[3] - before[3]).abs().max().item() > 1e-3
    assert_same_outputs(ema.module(x), after)


def test_norms_that_cannot_fold_turn_fast_inference_off_with_one_log_line():
    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        torch.manual_seed(0)
        model = MODELS.build(dict(type='InceptionNeXt', arch='atto',
                                  norm_cfg=dict(type='GN', num_groups=8))).eval()
        x = torch.randn(1, 3, 67, 45)
        with torch.no_grad():
            got = [model(x), model(x)]
        untracked = MODELS.build(dict(
            type='InceptionNeXt', arch='atto',
            out_norm_cfg=dict(type='BN', track_running_stats=False)))
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records if 'fast_inference is off' in r.getMessage()]
    assert len(messages) == 2, messages  # one per model, none per forward
    assert 'off: norm_cfg=' in messages[0] and 'GroupNorm' in messages[0]
    assert 'off: out_norm_cfg=' in messages[1] and 'BatchNorm2d' in messages[1]
    assert not model.fast_inference and not untracked.fast_inference
    plain = MODELS.build(dict(type='InceptionNeXt', arch='atto', fast_inference=False,
                              norm_cfg=dict(type='GN', num_groups=8))).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert_same_outputs(plain(x), got[0])
    assert_same_outputs(got[0], got[1])
    with pytest.raises(TypeError, match='GroupNorm'):
        fuse_for_inference(model)


def test_torch_compile_traces_both_paths_without_graph_breaks():
    torch._dynamo.reset()
    model = seeded_backbone('atto', seed=12).train()
    x = torch.randn(2, 3, 67, 45)
    assert torch._dynamo.explain(model)(x).graph_break_count == 0
    fused = fuse_for_inference(model.eval())
    with torch.no_grad():
        assert torch._dynamo.explain(fused)(x).graph_break_count == 0
        compiled = torch.compile(fused, backend='aot_eager', fullgraph=True)
        assert_same_outputs(fused(x), compiled(x))
    torch._dynamo.reset()
