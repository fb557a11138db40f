"""The InceptionNeXt backbone: registry, parity with timm, shapes and config keys."""
import pytest
import torch
import torch.nn as nn

import mmseg_incnext  # noqa: F401  (registers the backbone)
from mmseg.registry import MODELS
from mmseg_incnext import InceptionNeXt
from tests.helpers import seeded_timm_model, timm_stage_outputs


def build(**kwargs):
    cfg = dict(type='InceptionNeXt', arch='atto', out_norm_cfg=None)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_registered_in_mmseg_models():
    model = MODELS.build(dict(type='InceptionNeXt', arch='tiny', out_indices=(0, 1, 2, 3)))
    assert isinstance(model, InceptionNeXt)
    assert MODELS.get('InceptionNeXt') is InceptionNeXt


@pytest.mark.parametrize('path', [dict(channels_last=False), dict()])
@pytest.mark.parametrize('arch', ['atto', 'tiny', 'small', 'base'])
def test_features_match_timm_with_same_weights(arch, path):
    reference = seeded_timm_model(arch, seed=1)
    ours = build(arch=arch, **path).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith('head.')}
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 64, 96)
    expected = timm_stage_outputs(reference, x)
    stem_calls = []
    ours.stem.register_forward_hook(lambda *args: stem_calls.append(1))
    with torch.no_grad():
        got = ours(x)
    assert len(stem_calls) == 1
    assert len(got) == 4
    for stage, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape, stage
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5, msg=f'stage {stage}')


@pytest.mark.parametrize('size,expected', [
    ((64, 64), [(16, 16), (8, 8), (4, 4), (2, 2)]),
    ((67, 45), [(17, 12), (9, 6), (5, 3), (3, 2)]),
    ((20, 33), [(5, 9), (3, 5), (2, 3), (1, 2)]),
])
def test_output_strides_for_any_input_size(size, expected):
    model = build().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[-2:]) for o in outs] == expected
    assert [o.shape[1] for o in outs] == [40, 80, 160, 320]


def test_padding_is_a_noop_for_multiples_of_32():
    """Bottom/right padding does not move content: away from the border (farther than
    stage 0's receptive field, 2 blocks x band radius 4), a padded input gives the same
    features. With a real layer scale, so the blocks are far from identity."""
    torch.manual_seed(0)
    model = build(layer_scale_init_value=0.5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model(x)[0]
        bigger = model(torch.nn.functional.pad(x, (0, 5, 0, 7)))[0]
    assert bigger.shape[-2:] == (18, 18)  # ceil(71 / 4), ceil(69 / 4)
    torch.testing.assert_close(full[..., :8, :8], bigger[..., :8, :8])
    assert not torch.allclose(full[..., -1, -1], bigger[..., 15, 15])  # the border differs


def test_out_indices_negative_and_subset():
    model = build(out_indices=(-1, 1)).eval()
    assert model.out_indices == (1, 3)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [80, 320]
    assert hasattr(model, 'norm1') and hasattr(model, 'norm3') and not hasattr(model, 'norm0')


@pytest.mark.parametrize('bad', [(0, 4), (-5, ), (1, -3)])
def test_out_indices_validated(bad):
    with pytest.raises((IndexError, ValueError), match='out_indices'):
        build(out_indices=bad)


def test_unknown_arch_is_named():
    with pytest.raises(KeyError, match="'huge'"):
        build(arch='huge')


def test_custom_arch_dict():
    model = build(arch=dict(depths=(1, 1, 2, 1), dims=(32, 64, 96, 128), band_kernel_size=7,
                            branch_ratio=0.25, mlp_ratios=2)).eval()
    mixer = model.stages[2].blocks[0].token_mixer
    assert mixer.dwconv_w.kernel_size == (1, 7) and mixer.dwconv_hw.in_channels == 24
    assert model.stages[2].blocks[0].mlp.fc1.out_channels == 192
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64, 96, 128]
    with pytest.raises(KeyError, match='dims'):
        build(arch=dict(depths=(1, 1)))
    with pytest.raises(KeyError, match='kernel'):
        build(arch=dict(depths=(1, ), dims=(32, ), kernel=3))
    with pytest.raises(ValueError, match='same'):
        build(arch=dict(depths=(1, 1), dims=(32, )))


def test_out_norm_cfg_builds_per_stage_norms():
    model = build(out_norm_cfg=dict(type='SyncBN', requires_grad=True))
    assert all(isinstance(getattr(model, f'norm{i}'), nn.SyncBatchNorm) for i in range(4))
    model = build(out_norm_cfg=None)
    assert all(isinstance(getattr(model, f'norm{i}'), nn.Identity) for i in range(4))


def test_block_norm_cfg_is_used():
    model = build(norm_cfg=dict(type='SyncBN'))
    assert isinstance(model.stem[1], nn.SyncBatchNorm)
    assert isinstance(model.stages[1].downsample[0], nn.SyncBatchNorm)
    assert isinstance(model.stages[3].blocks[0].norm, nn.SyncBatchNorm)


def train_one_step(model, weight_decay=0.05):
    """One AdamW step on the mean of the outputs, with weight decay (which moves every
    parameter the optimizer holds, even one whose gradient is zero)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=weight_decay)
    model.train()
    loss = sum(o.mean() for o in model(torch.randn(2, 3, 64, 64)))
    loss.backward()
    optimizer.step()


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_stages_keep_weights_and_statistics_through_a_training_step():
    torch.manual_seed(0)
    model = build(frozen_stages=2, out_norm_cfg=dict(type='BN'), layer_scale_init_value=0.5)
    frozen = {'stem': model.stem, 'stages.0': model.stages[0], 'stages.1': model.stages[1],
              'norm0': model.norm0, 'norm1': model.norm1}
    trained = {'stages.2': model.stages[2], 'norm2': model.norm2}
    before = {name: snapshot(m) for name, m in {**frozen, **trained}.items()}
    train_one_step(model)
    for name, module in frozen.items():
        for key, value in module.state_dict().items():
            if not key.endswith('num_batches_tracked'):
                assert torch.equal(value, before[name][key]), f'{name}.{key} changed'
    for name, module in trained.items():
        changed = [k for k, v in module.state_dict().items()
                   if not torch.equal(v, before[name][k])]
        assert changed, f'{name} did not train'
    assert not model.stem.training and model.stages[2].training
    with pytest.raises(ValueError, match='frozen_stages=5'):
        build(frozen_stages=5)


def test_norm_eval_keeps_batchnorm_statistics_through_a_training_step():
    torch.manual_seed(0)
    model = build(norm_eval=True, out_norm_cfg=dict(type='BN'), layer_scale_init_value=0.5)
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns.items()}
    weight_before = model.stages[1].blocks[0].mlp.fc1.weight.detach().clone()
    train_one_step(model)
    for name, bn in bns.items():
        assert not bn.training, name
        assert torch.equal(bn.running_mean, before[name][0]), name
        assert torch.equal(bn.running_var, before[name][1]), name
    assert not torch.equal(model.stages[1].blocks[0].mlp.fc1.weight, weight_before)


@pytest.mark.parametrize('channels_last', [True, False])
def test_with_cp_matches_plain_forward_and_backward(channels_last, monkeypatch):
    from mmseg_incnext.models.backbones import inceptionnext
    calls, checkpoint = [], inceptionnext.cp.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)
    monkeypatch.setattr(inceptionnext.cp, 'checkpoint', counting_checkpoint)
    torch.manual_seed(0)
    plain = build(layer_scale_init_value=0.5, channels_last=channels_last)
    checkpointed = build(layer_scale_init_value=0.5, with_cp=True, channels_last=channels_last)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    outs = [m(x) for m in (plain, checkpointed)]
    for o1, o2 in zip(*outs):
        torch.testing.assert_close(o1, o2)
    assert len(calls) == sum(checkpointed.arch['depths'])  # each block, once, checkpointed
    sum(o.sum() for o in outs[0]).backward()
    sum(o.sum() for o in outs[1]).backward()
    for (name, p1), p2 in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=name)


def test_drop_path_and_layer_scale():
    model = build(drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for s in model.stages for b in s.blocks]
    assert isinstance(model.stages[0].blocks[0].drop_path, nn.Identity)  # rate 0
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert rates == sorted(rates)
    assert model.stages[0].blocks[0].gamma is not None
    assert build(layer_scale_init_value=0).stages[0].blocks[0].gamma is None


def test_drop_path_only_acts_in_training_and_survives_checkpointing():
    torch.manual_seed(0)
    plain = build(drop_path_rate=0.0, layer_scale_init_value=0.5)
    dropping = build(drop_path_rate=0.5, layer_scale_init_value=0.5)
    dropping.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain.eval()(x), dropping.eval()(x)):
            torch.testing.assert_close(a, b)  # eval: no stochastic depth
    checkpointed = build(drop_path_rate=0.5, layer_scale_init_value=0.5, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    results = []
    for model in (dropping.train(), checkpointed.train()):
        torch.manual_seed(7)
        inp = x.clone().requires_grad_(True)
        outs = model(inp)
        sum(o.sum() for o in outs).backward()
        results.append((outs, inp.grad))
    (outs, dx), (outs_cp, dx_cp) = results
    for a, b in zip(outs, outs_cp):
        torch.testing.assert_close(a, b)
    # recomputation under checkpointing replays the same drop-path mask
    torch.testing.assert_close(dx, dx_cp)
    with torch.no_grad():
        torch.manual_seed(7)
        undropped = plain.train()(x)
    assert any(not torch.allclose(a, b) for a, b in zip(outs, undropped))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_training_keeps_small_layer_scales(dtype):
    """Under autocast the default 1e-6 layer scale multiplies the output in fp32, as in the
    reference, so fc1's gradient stays close to fp32's. bf16 is the CPU autocast type every
    torch supports."""
    try:
        with torch.autocast('cpu', dtype=dtype):
            pass
    except RuntimeError as err:  # torch < 2.2 has no fp16 autocast on the CPU
        pytest.skip(f'this torch has no CPU autocast to {dtype}: {err}')
    torch.manual_seed(0)
    model = build(arch='atto').train()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    loss_scale = 2.0 ** 16  # as AmpOptimWrapper's GradScaler does, so fp16 grads are normal
    for autocast in (False, True):
        model.zero_grad()
        with torch.autocast('cpu', dtype=dtype, enabled=autocast):
            loss = sum(o.float().square().mean() for o in model(x))
        (loss * loss_scale).backward()
        grads.append(model.stages[0].blocks[0].mlp.fc1.weight.grad / loss_scale)
    exact, half = grads
    assert exact.abs().max() > 0
    assert (half - exact).norm() / exact.norm() < 0.2


@pytest.mark.parametrize('channels_last', [True, False])
def test_training_forward_and_gradients_match_timm(channels_last):
    """Train mode (batch-statistics BN): the outputs, every parameter's gradient, the
    input's gradient and the BN statistics equal timm's for the same weights."""
    reference = seeded_timm_model('atto', seed=2).train()
    ours = build(channels_last=channels_last).train()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items()
                          if not k.startswith('head.')})
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    upstream = [torch.randn(2, c, 64 // s, 64 // s)
                for c, s in zip((40, 80, 160, 320), (4, 8, 16, 32))]
    results = []
    for model in (reference, ours):
        inp = x.clone().requires_grad_(True)
        outs = (model.forward_intermediates(inp, intermediates_only=True)
                if model is reference else model(inp))
        sum((o * g).sum() for o, g in zip(outs, upstream)).backward()
        results.append((outs, inp.grad, {n: p.grad for n, p in model.named_parameters()}))
    (ref_outs, ref_dx, ref_grads), (outs, dx, grads) = results
    for o, e in zip(outs, ref_outs):
        torch.testing.assert_close(o, e, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dx, ref_dx, atol=1e-5, rtol=1e-4)
    assert set(grads) == {k for k in ref_grads if not k.startswith('head.')}
    for name, grad in grads.items():
        if name == 'stem.0.bias' or ('token_mixer' in name and name.endswith('.bias')):
            # A bias right before a train-mode BN has a zero gradient: both are rounding noise.
            assert grad.abs().max() < 1e-3 and ref_grads[name].abs().max() < 1e-3, name
            continue
        scale = ref_grads[name].abs().max().item()
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-5 * max(scale, 1.), rtol=1e-4,
                                   msg=name)
    for name, buf in ours.named_buffers():  # BN running statistics were updated alike
        torch.testing.assert_close(buf, reference.state_dict()[name], msg=name)


def test_wrong_input_channels_is_a_clear_error():
    model = build(in_channels=4)
    with pytest.raises(ValueError, match='in_channels=4'):
        model(torch.randn(1, 3, 64, 64))
    assert model(torch.randn(1, 4, 64, 64))[0].shape[1] == 40


def test_default_init_is_truncated_normal():
    model = build(arch='tiny')
    model.init_weights()
    # PyTorch's default for the stem (fan-in 48) would have std 0.083 and non-zero bias.
    assert 0.015 < model.stem[0].weight.std().item() < 0.025
    assert model.stem[0].bias.abs().max().item() == 0
    assert model.stages[2].blocks[0].mlp.fc1.bias.abs().max().item() == 0
