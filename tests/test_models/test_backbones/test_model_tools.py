"""The backbone as the tools researchers read a model with see it: forward hooks on every
layer, torch.fx tracing and FX quantization, and the hook-based FLOP and parameter counters
(thop, ptflops, torchinfo), next to timm's InceptionNeXt."""
import pytest
import timm
import torch
import torch.nn as nn

import mmseg_incnext  # noqa: F401  (registers the backbone)
from mmseg.registry import MODELS

# The paper's Table 4 (224x224, GMACs with the classifier head, which adds under 0.01G).
PAPER_GMACS = {'tiny': 4.2, 'small': 8.4, 'base': 14.9}
LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.GELU)


def build(arch='atto', **kwargs):
    return MODELS.build(dict(dict(type='InceptionNeXt', arch=arch, out_norm_cfg=None), **kwargs))


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_a_forward_hook_on_every_layer_fires_once_per_forward(mode):
    model = build(layer_scale_init_value=0.5, drop_path_rate=0.1).train(mode == 'train')
    calls = {}
    for name, module in model.named_modules():
        if isinstance(module, LAYERS):
            module.register_forward_hook(
                lambda *args, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    with torch.set_grad_enabled(mode == 'train'):
        model(torch.randn(2, 3, 64, 64))
    expected = {n for n, m in model.named_modules() if isinstance(m, LAYERS)}
    assert set(calls) == expected and set(calls.values()) == {1}
    assert 'stages.0.blocks.0.mlp.fc1' in calls and 'stages.3.blocks.1.norm' in calls


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_fx_symbolic_trace_gives_the_same_model(mode):
    torch.manual_seed(0)
    model = build(layer_scale_init_value=0.5, out_norm_cfg=dict(type='BN'))
    model.train(mode == 'train')
    traced = torch.fx.symbolic_trace(model)
    called = {n.target for n in traced.graph.nodes if n.op == 'call_module'}
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs <= called
    x = torch.randn(2, 3, 67, 45)  # not a multiple of 32: the padding runs in the graph
    torch.manual_seed(1)
    expected = model(x)
    torch.manual_seed(1)
    for e, g in zip(expected, traced(x)):
        torch.testing.assert_close(g, e)
    with pytest.raises(ValueError, match='in_channels=3'):
        traced(torch.randn(1, 4, 64, 64))  # the input check is part of the graph


def test_fx_int8_quantization_runs_every_conv_quantized():
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.manual_seed(0)
    model = build(out_norm_cfg=dict(type='BN'), channels_last=False).eval()
    x = torch.randn(1, 3, 64, 64)
    prepared = prepare_fx(model, get_default_qconfig_mapping('x86'), example_inputs=(x, ))
    with torch.no_grad():
        prepared(x)
        quantized = convert_fx(prepared)
        expected, got = model(x), quantized(x)
    float_convs = [n for n, m in quantized.named_modules() if type(m) is nn.Conv2d]
    assert not float_convs
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        assert torch.corrcoef(torch.stack([g.flatten(), e.flatten()]))[0, 1] > 0.9


def counts(tool, model):
    """(MACs, parameters) of ``model`` at 1 x 3 x 224 x 224 as ``tool`` reports them."""
    x = torch.randn(1, 3, 224, 224)
    if tool == 'thop':
        import thop
        macs, params = thop.profile(model, inputs=(x, ), verbose=False)
        return macs, params
    if tool == 'ptflops':
        from ptflops import get_model_complexity_info
        macs, params = get_model_complexity_info(model, (3, 224, 224), as_strings=False,
                                                 backend='pytorch', print_per_layer_stat=False,
                                                 verbose=False)
        return macs, params
    import torchinfo
    stats = torchinfo.summary(model, input_data=x, verbose=0)
    return stats.total_mult_adds, stats.total_params


@pytest.mark.parametrize('tool', ['thop', 'ptflops', 'torchinfo'])
@pytest.mark.parametrize('arch', ['atto', 'tiny', 'small', 'base'])
def test_hook_based_counters_see_the_whole_backbone(tool, arch):
    ours = build(arch).eval()
    reference = timm.create_model(f'inception_next_{arch}', features_only=True).eval()
    macs, params = counts(tool, ours)
    ref_macs, ref_params = counts(tool, reference)
    assert params == pytest.approx(ref_params, rel=0.02)
    assert macs == pytest.approx(ref_macs, rel=0.02)
    if arch in PAPER_GMACS:
        assert macs / 1e9 == pytest.approx(PAPER_GMACS[arch], rel=0.02)
