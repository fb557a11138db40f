"""Pretrained initialisation through mmengine's PretrainedInit: every checkpoint format, and
clear errors on bad ones. Local files are read as our configs read them, with
stack_fixes' loaders."""
import os

import pytest
import torch
from mmengine.logging import MMLogger

import mmseg_incnext
import mmseg_incnext.utils.stack_fixes  # noqa: F401  (as custom_imports in our configs)
from mmseg.registry import MODELS
from mmseg_incnext.models.backbones import weights
from mmseg_incnext.models.backbones.arch import ARCH_SETTINGS
from mmseg_incnext.models.backbones.weights import RELEASE_URLS, CheckpointError
from tests.helpers import save_checkpoint_formats, seeded_timm_model, timm_stage_outputs


@pytest.fixture(scope='module')
def tiny_reference(tmp_path_factory):
    model = seeded_timm_model('atto', seed=3)
    folder = tmp_path_factory.mktemp('ckpts')
    return model, save_checkpoint_formats(model, str(folder))


def build_pretrained(checkpoint, arch='atto', **kwargs):
    model = MODELS.build(dict(type='InceptionNeXt', arch=arch, out_norm_cfg=None,
                              init_cfg=dict(type='Pretrained', checkpoint=checkpoint), **kwargs))
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('fmt', ['release_pth', 'safetensors', 'mmseg', 'official_training'])
def test_each_format_reproduces_timm_features(tiny_reference, fmt):
    reference, paths = tiny_reference
    model = build_pretrained(paths[fmt])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, want in zip(model(x), timm_stage_outputs(reference, x)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_missing_output_norms_are_reported_not_fatal(tiny_reference, tmp_path):
    reference, paths = tiny_reference
    log_file = tmp_path / 'init.log'
    MMLogger.get_instance('incnext-init-test', log_file=str(log_file))  # the current logger
    model = MODELS.build(dict(type='InceptionNeXt', arch='atto', init_cfg=dict(
        type='Pretrained', checkpoint=paths['release_pth'])))
    model.init_weights()
    log = log_file.read_text()
    assert 'Loaded 220/240 backbone tensors' in log
    assert 'missing keys in source state_dict: norm0.weight' in log
    assert 'unexpected key' not in log  # the classifier is dropped, not reported
    assert torch.all(model.norm0.weight == 1)
    torch.testing.assert_close(model.stem[0].weight, reference.stem[0].weight)


def test_wrong_arch_is_an_error_naming_both(tmp_path):
    path = str(tmp_path / 'tiny.pth')
    torch.save(seeded_timm_model('tiny').state_dict(), path)
    with pytest.raises(CheckpointError, match=r"InceptionNeXt-base.*arch 'tiny'"):
        build_pretrained(path, arch='base')


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        build_pretrained(str(tmp_path / 'nope.pth'))


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all' * 10])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / 'corrupt.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match='corrupt'):
        build_pretrained(str(path))


def test_truncated_checkpoint(tiny_reference, tmp_path):
    _, paths = tiny_reference
    data = open(paths['release_pth'], 'rb').read()
    path = tmp_path / 'truncated.pth'
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='corrupt'):
        build_pretrained(str(path))


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / 'model.safetensors'
    path.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"broken json')
    with pytest.raises(CheckpointError, match='safetensors'):
        build_pretrained(str(path))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_code_executing_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / 'executed'
    path = tmp_path / 'evil.pth'
    torch.save({'stem.0.weight': _RunsCode(str(marker))}, str(path))
    with pytest.raises(CheckpointError, match='not a plain weights file'):
        build_pretrained(str(path))
    assert not marker.exists()


def test_pickle_of_non_weights_is_refused(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([1, 2, 3], str(path))
    with pytest.raises(RuntimeError, match='No state_dict found'):
        build_pretrained(str(path))
    path = tmp_path / 'config.pth'
    torch.save({'lr': 0.1, 'name': 'x'}, str(path))
    with pytest.raises(CheckpointError, match='not tensors'):
        build_pretrained(str(path))
    path = tmp_path / 'other.pth'
    torch.save({'conv.weight': torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match='shares no parameter names'):
        build_pretrained(str(path))


def test_unreachable_url_says_which_and_how_to_go_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    url = 'http://127.0.0.1:9/inceptionnext_atto.pth'
    with pytest.raises(CheckpointError) as info:
        build_pretrained(url)
    assert url in str(info.value) and 'give its path instead' in str(info.value)


@pytest.mark.parametrize('source', [RELEASE_URLS['atto'], 'inceptionnext://atto'])
def test_release_served_from_cache_loads(tiny_reference, tmp_path, monkeypatch, source):
    """A release, by URL or by name, whose file is already in torch.hub's cache loads
    offline."""
    reference, paths = tiny_reference
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    os.link(paths['release_pth'], cache / os.path.basename(RELEASE_URLS['atto']))
    model = build_pretrained(source)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[-1], timm_stage_outputs(reference, x)[-1],
                                   atol=1e-5, rtol=1e-5)


def test_release_url_table():
    assert set(RELEASE_URLS) == set(ARCH_SETTINGS) == {'atto', 'tiny', 'small', 'base'}
    assert RELEASE_URLS['tiny'].endswith('/inceptionnext_tiny.pth')
    assert all(u.startswith('https://github.com/sail-sg/inceptionnext/releases/') for u in
               RELEASE_URLS.values())
    assert mmseg_incnext.RELEASE_URLS is RELEASE_URLS
    assert {weights.release_url(f'inceptionnext://{arch}') for arch in ARCH_SETTINGS} == set(
        RELEASE_URLS.values())


def test_unknown_release_name_lists_the_released_ones(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))  # nothing may be fetched
    with pytest.raises(CheckpointError, match=r"inceptionnext://huge: no released InceptionNeXt "
                       r"is named 'huge'; the released ones are inceptionnext://atto, "
                       r"inceptionnext://tiny, inceptionnext://small, inceptionnext://base"):
        build_pretrained('inceptionnext://huge')
    assert not os.listdir(tmp_path)


def test_init_cfg_list_applies_other_entries_then_pretrained(tiny_reference):
    """mmengine's order: the other initializers first, then Pretrained over them."""
    reference, paths = tiny_reference
    model = MODELS.build(dict(type='InceptionNeXt', arch='atto', init_cfg=[
        dict(type='Constant', layer='BatchNorm2d', val=0.25, bias=0.5),
        dict(type='Pretrained', checkpoint=paths['release_pth'])]))
    model.init_weights()
    # The output norms are not in ImageNet weights: they keep the Constant init ...
    assert torch.all(model.norm0.weight == 0.25) and torch.all(model.norm3.bias == 0.5)
    # ... and every BatchNorm the checkpoint has comes from it.
    torch.testing.assert_close(model.stages[1].blocks[0].norm.weight,
                               reference.stages[1].blocks[0].norm.weight)
    torch.testing.assert_close(model.stem[1].bias, reference.stem[1].bias)


def test_init_cfg_prefix_and_map_location(tiny_reference, tmp_path):
    reference, paths = tiny_reference
    path = str(tmp_path / 'encoder.pth')
    torch.save({'state_dict': {f'encoder.{k}': v for k, v in reference.state_dict().items()}},
               path)
    located = []

    def map_location(storage, location):
        located.append(location)
        return storage
    model = MODELS.build(dict(type='InceptionNeXt', arch='atto', out_norm_cfg=None, init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='encoder', map_location=map_location)))
    model.init_weights()
    assert located  # the option reached torch.load
    torch.testing.assert_close(model.stages[2].blocks[1].mlp.fc2.weight,
                               reference.stages[2].blocks[1].mlp.fc2.weight)
    # Released weights have bare names: a prefix that matches nothing is an error naming it.
    model = MODELS.build(dict(type='InceptionNeXt', arch='atto', init_cfg=dict(
        type='Pretrained', checkpoint=paths['release_pth'], prefix='backbone')))
    with pytest.raises(AssertionError, match='backbone. is not in the pretrained model'):
        model.init_weights()


def test_init_weights_twice_keeps_the_weights(tiny_reference):
    """As in mmengine, a second call only warns: it must not reload over trained weights."""
    _, paths = tiny_reference
    for init_cfg in (None, dict(type='Pretrained', checkpoint=paths['release_pth'])):
        model = MODELS.build(dict(type='InceptionNeXt', arch='atto', init_cfg=init_cfg))
        model.init_weights()
        with torch.no_grad():
            model.stem[0].weight.add_(1.0)  # as training would
        trained = model.stem[0].weight.clone()
        model.init_weights()
        assert torch.equal(model.stem[0].weight, trained)


def test_segmentor_checkpoint_of_another_arch_names_it(tmp_path):
    """The shape check also guards a whole segmentor's load (load_from, tools/test.py)."""
    path = str(tmp_path / 'segmentor.pth')
    state = {f'backbone.{k}': v for k, v in seeded_timm_model('tiny').state_dict().items()}
    torch.save({'state_dict': state}, path)
    from mmengine.runner.checkpoint import load_checkpoint
    segmentor = torch.nn.Module()
    segmentor.backbone = MODELS.build(dict(type='InceptionNeXt', arch='atto'))
    with pytest.raises(CheckpointError, match=r"InceptionNeXt-atto.*arch 'tiny'"):
        load_checkpoint(segmentor, path)


def test_released_checkpoints_load_through_mmengine_scheme():
    from mmengine.runner.checkpoint import CheckpointLoader
    assert CheckpointLoader._get_checkpoint_loader('inceptionnext://tiny') is (
        weights.load_from_inceptionnext)
