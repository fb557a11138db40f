"""Every route by which mmengine's ``CheckpointLoader`` reads a checkpoint goes through the
allow-list unpickler once :mod:`mmseg_incnext.utils.stack_fixes` is imported: a real mmengine
training checkpoint loads, a crafted pickle is refused without running.

Offline: http(s) URLs are served from a folder by a server on 127.0.0.1; ``torchvision://``
and ``mmcls://`` names resolve to internet URLs, whose files are put in torch.hub's cache
beforehand, where an earlier download would have left them.
"""
import functools
import http.server
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

import mmseg_incnext.utils.stack_fixes  # noqa: F401  (registers the loaders under test)
from mmseg_incnext.utils import checkpoint_safety
from mmseg_incnext.utils.checkpoint_safety import UnsafeCheckpointError, safe_torch_load
from tests.helpers import CRAFTED_PAYLOADS, train_toy_runner


@dataclass
class Places:
    """Where each route finds its files in one test: the served folder and its URL, and
    torch.hub's and mmengine's home folders (``TORCH_HOME``, ``MMENGINE_HOME``)."""
    served: Path
    url: str
    torch_home: Path
    mmengine_home: Path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def places(tmp_path, monkeypatch):
    served = tmp_path / 'served'
    served.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine'))
    for name in ('NO_PROXY', 'no_proxy'):
        monkeypatch.setenv(name, '127.0.0.1')
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Places(served, f'http://127.0.0.1:{server.server_address[1]}', tmp_path / 'torch',
                 tmp_path / 'mmengine')
    server.shutdown()
    server.server_close()
    thread.join()


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _serve(file: Path, places: Places) -> str:
    _copy(file, places.served / file.name)
    return f'{places.url}/{file.name}'


def _add_openmmlab_name(name: str, location: str, places: Places) -> None:
    """Add ``name`` to mmengine's table of ``open-mmlab://`` names, as a user does."""
    table = places.mmengine_home / 'open_mmlab.json'
    names = json.loads(table.read_text()) if table.exists() else {}
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(json.dumps({**names, name: location}))


def _in_hub_cache(url: str, file: Path, places: Places) -> None:
    _copy(file, places.torch_home / 'hub' / 'checkpoints' / os.path.basename(url))


def local(file: Path, places: Places) -> str:
    return str(file)


def http_url(file: Path, places: Places) -> str:
    return _serve(file, places)


def openmmlab_url(file: Path, places: Places) -> str:
    _add_openmmlab_name(f'incnext_tests/{file.stem}', _serve(file, places), places)
    return f'open-mmlab://incnext_tests/{file.stem}'


def openmmlab_home_file(file: Path, places: Places) -> str:
    location = f'incnext_tests/{file.name}'
    _copy(file, places.mmengine_home / location)
    _add_openmmlab_name(f'incnext_tests/{file.stem}', location, places)
    return f'openmmlab://incnext_tests/{file.stem}'


def torchvision_name(file: Path, places: Places) -> str:
    _in_hub_cache(mmengine_checkpoint.get_torchvision_models()['resnet18'], file, places)
    return 'torchvision://resnet18'


MMCLS_NAME = 'resnet50'


def mmcls_name(file: Path, places: Places) -> str:
    _in_hub_cache(mmengine_checkpoint.get_mmcls_models()[MMCLS_NAME], file, places)
    return f'mmcls://{MMCLS_NAME}'


# route -> what puts a file where the route reads it and returns the name to load
ROUTES: Dict[str, Callable[[Path, Places], str]] = {
    'local': local,
    'http': http_url,
    'open-mmlab:// URL': openmmlab_url,
    'openmmlab:// file in MMENGINE_HOME': openmmlab_home_file,
    'torchvision://': torchvision_name,
    'mmcls://': mmcls_name,
}


@pytest.fixture(scope='module')
def training_checkpoint(tmp_path_factory) -> Path:
    """What mmengine's CheckpointHook writes: weights, optimizer, scheduler, message hub."""
    work = tmp_path_factory.mktemp('toy')
    train_toy_runner(str(work), max_iters=2)
    return work / 'iter_2.pth'


def test_mmengine_gets_no_loader_of_its_own():
    """Every scheme reads through ours (a scheme a newer mmengine adds would show here),
    and nothing of mmengine is reassigned. inceptionnext:// is the backbone's own scheme,
    reading through our http loader."""
    from mmseg_incnext.models.backbones import weights
    for prefix, loader in CheckpointLoader._schemes.items():
        expected = weights if prefix == weights.RELEASE_SCHEME else checkpoint_safety
        assert loader.__module__ == expected.__name__, prefix
    assert mmengine_checkpoint.load_from_http.__module__ == 'mmengine.runner.checkpoint'


@pytest.mark.parametrize('route', [r for r in ROUTES if r != 'mmcls://'])
def test_training_checkpoint_loads(route, training_checkpoint, places):
    loaded = CheckpointLoader.load_checkpoint(ROUTES[route](training_checkpoint, places),
                                              map_location='cpu')
    written = torch.load(training_checkpoint, map_location='cpu', weights_only=False)
    assert loaded['meta']['iter'] == 2
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert loaded['state_dict'].keys() == written['state_dict'].keys()
    for key, value in written['state_dict'].items():
        assert torch.equal(loaded['state_dict'][key], value), key


def test_mmcls_checkpoint_loads_its_backbone(training_checkpoint, places, tmp_path):
    """mmcls:// keeps the weights under ``backbone.``, without the prefix, as mmengine does."""
    checkpoint = safe_torch_load(str(training_checkpoint))
    weights = checkpoint['state_dict']
    checkpoint['state_dict'] = {
        **{f'backbone.{k}': v for k, v in weights.items()}, 'head.fc.weight': torch.ones(3)}
    classifier = tmp_path / 'classifier_iter_2.pth'
    torch.save(checkpoint, classifier)
    loaded = CheckpointLoader.load_checkpoint(mmcls_name(classifier, places),
                                              map_location='cpu')
    assert list(loaded) == ['state_dict'] and loaded['state_dict'].keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(loaded['state_dict'][key], value), key


@pytest.mark.parametrize('payload', CRAFTED_PAYLOADS)
@pytest.mark.parametrize('route', ROUTES)
def test_crafted_pickle_is_refused_without_running(route, payload, places, tmp_path):
    marker = tmp_path / 'code_ran'
    crafted = tmp_path / f'crafted_{payload.__name__}.pth'
    torch.save({'state_dict': {'backbone.w': torch.ones(2)}, 'meta': payload(str(marker))},
               crafted)
    with pytest.raises(UnsafeCheckpointError, match='Refusing to load'):
        CheckpointLoader.load_checkpoint(ROUTES[route](crafted, places), map_location='cpu')
    assert not marker.exists()
