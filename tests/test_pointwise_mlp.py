"""The block MLP's tiled CPU inference path
(:mod:`mmseg_incnext.models.backbones.pointwise_mlp`): when it runs, and that it computes
what the 1x1 convolutions compute."""
import pytest
import torch
import torch.nn.functional as F

import mmseg_incnext.models.backbones.pointwise_mlp as pointwise
from mmseg_incnext.models.backbones.pointwise_mlp import pointwise_mlp, uses_tiles


def mlp_weights(channels=8, hidden=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(hidden, channels, 1, 1, generator=gen) * 0.3,
            torch.randn(hidden, generator=gen),
            torch.randn(channels, hidden, 1, 1, generator=gen) * 0.3,
            torch.randn(channels, generator=gen))


def channels_last_map(*shape, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).contiguous(memory_format=torch.channels_last)


def reference_mlp(x, w1, b1, w2, b2):
    return F.conv2d(F.gelu(F.conv2d(x, w1, b1)), w2, b2)


def map_one_byte_over_the_narrow_limit(monkeypatch):
    """An 8-channel map, and the size of its hidden map at 32 channels, which is set one byte
    over the narrow blocks' limit."""
    x = channels_last_map(2, 8, 16, 16)
    hidden_bytes = 2 * 16 * 16 * 32 * 4
    monkeypatch.setattr(pointwise, 'NARROW_TILE_ABOVE_BYTES', hidden_bytes - 1)
    return x, hidden_bytes


def test_tiles_only_for_large_fp32_channels_last_cpu_maps(monkeypatch):
    x, _ = map_one_byte_over_the_narrow_limit(monkeypatch)
    assert uses_tiles(x, 32)
    assert not uses_tiles(x, 31)  # a smaller hidden map: convolutions
    assert not uses_tiles(x.contiguous(), 32)  # NCHW
    assert not uses_tiles(x.double(), 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not uses_tiles(x, 32)
    traced = []
    torch.jit.trace(lambda t: traced.append(uses_tiles(t, 32)) or t * 2, (x, ),
                    check_trace=False)
    assert traced == [False]  # an exported graph keeps the convolutions


def test_wide_blocks_tile_only_above_the_higher_threshold(monkeypatch):
    x, hidden_bytes = map_one_byte_over_the_narrow_limit(monkeypatch)
    monkeypatch.setattr(pointwise, 'TILE_ABOVE_BYTES', hidden_bytes)
    assert uses_tiles(x, 32)  # 8 channels are narrow
    monkeypatch.setattr(pointwise, 'NARROW_CHANNELS', 8)
    assert not uses_tiles(x, 32)  # now wide, and at its own limit
    assert uses_tiles(x, 33)


@pytest.mark.parametrize('shape, tiled', [
    ((1, 96, 128, 128), True),  # T's stage 1 at 512x512: a 24 MiB hidden map, 96 channels
    ((1, 192, 64, 64), False),  # its stage 2: 12 MiB
    ((16, 384, 14, 14), False),  # stage 3 at 224x224 batch 16: 18.4 MiB, but 384 channels
    ((16, 192, 28, 28), True),  # stage 2 there: 36.8 MiB, past the 32 MiB ceiling
])
def test_tiling_rule_at_the_sizes_users_run(shape, tiled):
    assert uses_tiles(channels_last_map(*shape), 4 * shape[1]) is tiled


def test_training_runs_the_convolutions(tiles):
    weights = [w.requires_grad_(True) for w in mlp_weights()]
    x = channels_last_map(2, 8, 9, 7)
    out = pointwise_mlp(x, *weights)
    assert not tiles and out.requires_grad
    torch.testing.assert_close(out, reference_mlp(x, *weights))


def test_tiled_inference_matches_convolutions_with_residual_and_no_biases(tiles):
    w1, _, w2, _ = mlp_weights()
    x, residual = channels_last_map(2, 8, 9, 7), channels_last_map(2, 8, 9, 7, seed=3)
    with torch.no_grad():
        got = pointwise_mlp(x, w1, None, w2, None, residual=residual)
    assert len(tiles) == 1 and got.is_contiguous(memory_format=torch.channels_last)
    expected = reference_mlp(x, w1, None, w2, None) + residual
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(residual, channels_last_map(2, 8, 9, 7, seed=3))  # untouched
