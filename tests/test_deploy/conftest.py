"""The deploy tests' shared files, made once per session from the demo run: its model, its
fp32 export (verified by tools/export_onnx.py in ONNX Runtime, and in OpenVINO where it is
installed) and its int8 file (tools/quantize_onnx.py)."""
import importlib.util
import os
import re
import sys

import pytest

from tests.helpers import REPO_ROOT, run_tool

DEMO_CONFIG = os.path.join(REPO_ROOT, 'configs', 'demo', 'incnext_atto_fpn_synthetic.py')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def data_options(data_root):
    return [f'{loader}.dataset.data_root={data_root}' for loader in LOADERS]


@pytest.fixture(scope='session')
def demo_model(demo_run):
    from mmseg.apis import init_model

    import mmseg_incnext.utils.stack_fixes  # noqa: F401  (safe checkpoint reading)
    work, _ = demo_run
    return init_model(DEMO_CONFIG, str(work / 'iter_40.pth'), device='cpu')


@pytest.fixture(scope='session')
def demo_onnx(demo_run, tmp_path_factory):
    """tools/export_onnx.py on the demo checkpoint, 128x128 with free sizes; its output."""
    work, _ = demo_run
    path = tmp_path_factory.mktemp('onnx') / 'demo.onnx'
    backends = ['onnxruntime'] + (['openvino'] if importlib.util.find_spec('openvino') else [])
    output = run_tool([sys.executable, 'tools/export_onnx.py', DEMO_CONFIG,
                       str(work / 'iter_40.pth'), '--out', str(path), '--shape', '128', '128',
                       '--dynamic', '--backend', *backends])
    assert len(re.findall(r'labels equal', output)) == 3 * len(backends)
    return path, output


@pytest.fixture(scope='session')
def quantized(demo_run, demo_onnx, tmp_path_factory):
    """tools/quantize_onnx.py on 8 training images, checked on the 4 validation images."""
    work, _ = demo_run
    out = tmp_path_factory.mktemp('int8') / 'demo_int8.onnx'
    output = run_tool([sys.executable, 'tools/quantize_onnx.py', DEMO_CONFIG, str(demo_onnx[0]),
                       '--out', str(out), '--calib-images', '8', '--val-images', '4',
                       '--cfg-options', *data_options(work / 'data')])
    return out, output
