"""The deploy tests' shared runs, made once per session from the demo run in one process:
its fp32 export (verified by tools/export_onnx.py in ONNX Runtime, and in OpenVINO where it
is installed), its int8 file (tools/quantize_onnx.py), and the tool runs on both files the
test modules assert on."""
import importlib.util
import os
import re

import pytest

from tests.helpers import REPO_ROOT, run_tools_in_one_process

DEMO_CONFIG = os.path.join(REPO_ROOT, 'configs', 'demo', 'incnext_atto_fpn_synthetic.py')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
HAS_OPENVINO = importlib.util.find_spec('openvino') is not None
# tools/test.py settings run on the checkpoint and on its export (test_onnx_export.py)
TEST_SETTINGS = dict(
    whole=([], []),
    slide=([], ['model.test_cfg.mode=slide', 'model.test_cfg.crop_size=(64,64)',
                'model.test_cfg.stride=(48,48)']),
    tta=(['--tta'], ['test_dataloader.dataset.indices=1']))  # TTA runs 12 passes an image


def data_options(data_root):
    return [f'{loader}.dataset.data_root={data_root}' for loader in LOADERS]


def demo_cfg(data_root):
    """The demo config reading its data from ``data_root``."""
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO_CONFIG)
    for loader in LOADERS:
        cfg[loader].dataset.data_root = str(data_root)
    return cfg


def validation_images(work):
    return sorted((work / 'data' / 'images' / 'validation').iterdir())


def succeeded(deploy_runs, name):
    """The run ``name`` of :func:`deploy_runs`, which must have succeeded."""
    run = deploy_runs[name]
    assert run.error is None, f'{name}: {run.error}\n{run.output[-4000:]}'
    return run


@pytest.fixture(scope='session')
def demo_model(demo_run):
    from mmseg.apis import init_model

    import mmseg_incnext.utils.stack_fixes  # noqa: F401  (safe checkpoint reading)
    work, _ = demo_run
    return init_model(DEMO_CONFIG, str(work / 'iter_40.pth'), device='cpu')


@pytest.fixture(scope='session')
def deploy_runs(demo_run, tmp_path_factory):
    """The deploy tools on the demo checkpoint, one after another in one process: name ->
    ToolRun; 'folder' -> where each run wrote (a subfolder of its name).

    export: tools/export_onnx.py, 128x128 with free sizes; quantize: tools/quantize_onnx.py
    on 8 training images, checked on the 4 validation images; test_<setting>_<pth|onnx>:
    tools/test.py per TEST_SETTINGS; demo_<pth|onnx>: tools/image_demo.py; int8_test:
    tools/test.py on the int8 file; int8_refused: quantize_onnx.py asked for more agreement
    than any file has; int8_forms: with the form options; where OpenVINO is installed,
    openvino_test, openvino_demo and openvino_bf16 (its bf16 self-check)."""
    work, _ = demo_run
    folder = tmp_path_factory.mktemp('deploy')
    pth, onnx, int8 = (str(work / 'iter_40.pth'), str(folder / 'export' / 'demo.onnx'),
                       str(folder / 'quantize' / 'demo_int8.onnx'))
    data = ['--cfg-options', *data_options(work / 'data')]
    image = str(validation_images(work)[0])
    backends = ['onnxruntime'] + (['openvino'] if HAS_OPENVINO else [])
    runs = dict(
        export=['tools/export_onnx.py', DEMO_CONFIG, pth, '--out', onnx, '--shape', '128', '128',
                '--dynamic', '--backend', *backends],
        quantize=['tools/quantize_onnx.py', DEMO_CONFIG, onnx, '--out', int8, '--calib-images',
                  '8', '--val-images', '4', *data])
    for setting, (flags, options) in TEST_SETTINGS.items():
        for name, model in (('pth', pth), ('onnx', onnx)):
            runs[f'test_{setting}_{name}'] = [
                'tools/test.py', DEMO_CONFIG, model, '--work-dir', str(folder / 'test'), *flags,
                '--cfg-options', f'test_dataloader.dataset.data_root={work / "data"}', *options]
    for name, model in (('pth', pth), ('onnx', onnx)):
        runs[f'demo_{name}'] = ['tools/image_demo.py', DEMO_CONFIG, model, image, '--out-dir',
                                str(folder / f'demo_{name}'), '--device', 'cpu']
    runs.update(
        int8_test=['tools/test.py', DEMO_CONFIG, int8, '--work-dir', str(folder / 'int8_test'),
                   *data],
        int8_refused=['tools/quantize_onnx.py', DEMO_CONFIG, onnx, '--out',
                      str(folder / 'int8_refused' / 'int8.onnx'), '--calib-images', '2',
                      '--val-images', '1', '--min-agreement', '1.01', *data],
        int8_forms=['tools/quantize_onnx.py', DEMO_CONFIG, onnx, '--out',
                    str(folder / 'int8_forms' / 'int8.onnx'), '--calib-images', '2',
                    '--val-images', '2', '--min-agreement', '0.5', '--per-tensor',
                    '--float-parts', 'depthwise', *data])
    if HAS_OPENVINO:
        runs.update(
            openvino_test=['tools/test.py', DEMO_CONFIG, onnx, '--backend', 'openvino',
                           '--work-dir', str(folder / 'openvino_test'), *data],
            openvino_demo=['tools/image_demo.py', DEMO_CONFIG, onnx, image, '--out-dir',
                           str(folder / 'openvino_demo'), '--device', 'cpu', '--backend',
                           'openvino'],
            openvino_bf16=['tools/quantize_onnx.py', DEMO_CONFIG, onnx, '--precision', 'bf16',
                           '--backend', 'openvino', '--val-images', '4', *data])
    ended = dict(zip(runs, run_tools_in_one_process(list(runs.values()), check=False)))
    for name in ('export', 'quantize'):  # what every other run reads
        succeeded(ended, name)
    return dict(ended, folder=folder)


@pytest.fixture(scope='session')
def demo_onnx(deploy_runs):
    """The demo checkpoint's verified fp32 export: its path, the export's output."""
    output = deploy_runs['export'].output
    backends = 2 if HAS_OPENVINO else 1
    assert len(re.findall(r'labels equal', output)) == 3 * backends, output[-4000:]
    return deploy_runs['folder'] / 'export' / 'demo.onnx', output


@pytest.fixture(scope='session')
def quantized(deploy_runs):
    """The demo export's int8 file: its path, tools/quantize_onnx.py's output."""
    return deploy_runs['folder'] / 'quantize' / 'demo_int8.onnx', deploy_runs['quantize'].output
