"""OpenVINO runs the demo model's ONNX export: fp32 with PyTorch's logits at three sizes (the
export's own check), PyTorch's mIoU and labels through tools/test.py, tools/image_demo.py and
whole and sliding-window inference; the int8 QDQ file and bf16 pass the self-check
tools/quantize_onnx.py applies; bad backend choices exit with the reason."""
import argparse
import re
import sys

import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('openvino')

from mmseg_incnext.deploy import quantize  # noqa: E402
from mmseg_incnext.deploy.onnx_runtime import init_onnx_model, open_graph  # noqa: E402
from mmseg_incnext.deploy.openvino_runtime import bf16_is_native  # noqa: E402
from tests.helpers import miou  # noqa: E402
from tests.test_deploy.conftest import (DEMO_CONFIG, demo_cfg, succeeded,  # noqa: E402
                                        validation_images)

# The int8 file's loss on the demo model's 4 held-out images: 0.78 mIoU in ONNX Runtime and
# 1.25 in OpenVINO (64.51 -> 63.26, labels 99.28%) on the current stack; bound with margin.
MAX_MIOU_LOSS = 2.0
SELF_CHECK = re.compile(r'self-check on (\d+) held-out images: (\w+) labels equal fp32 on '
                        r'([0-9.]+)% of the pixels \(mIoU fp32 ([0-9.]+), \w+ ([0-9.]+)\)')


def held_out_miou(demo_output: str) -> float:
    """PyTorch's mIoU on the demo's validation images (= its test set), as the demo printed."""
    return float(re.search(r'held-out mIoU: ([0-9.]+)', demo_output).group(1))


def test_the_export_is_verified_in_openvino_at_three_sizes(demo_onnx):
    _, output = demo_onnx
    figures = re.findall(r'OpenVINO, (\d+)x3x(\d+)x(\d+): max abs logit diff ([0-9.e+-]+), '
                         r'labels equal ([0-9.]+)%', output)
    assert [f[:3] for f in figures] == [('1', '128', '128'), ('2', '96', '192'),
                                        ('1', '101', '91')], output
    assert all(float(f[3]) <= 1e-3 and float(f[4]) >= 99.9 for f in figures), figures


def test_tools_test_in_openvino_gives_pytorchs_miou(demo_run, deploy_runs):
    _, demo_output = demo_run
    output = succeeded(deploy_runs, 'openvino_test').output
    assert 'OpenVINO CPU: fp32 asked, compiled in fp32' in output
    assert miou(output) == pytest.approx(held_out_miou(demo_output), abs=0.02)


def test_whole_and_sliding_windows_give_pytorchs_labels(demo_run, demo_model, demo_onnx):
    from mmengine.config import ConfigDict
    from mmseg.apis import inference_model
    work, _ = demo_run
    model = init_onnx_model(DEMO_CONFIG, str(demo_onnx[0]), backend='openvino')
    assert type(model).__name__ == 'OnnxSegmentor' and model.backend == 'openvino'
    image = str(validation_images(work)[1])
    whole = demo_model.test_cfg
    slide = ConfigDict(mode='slide', crop_size=(64, 64), stride=(48, 48))
    try:
        for test_cfg in (whole, slide):
            model.test_cfg = demo_model.test_cfg = test_cfg
            with torch.no_grad():
                expected = inference_model(demo_model, image).pred_sem_seg.data
                got = inference_model(model, image).pred_sem_seg.data
            assert got.shape == expected.shape
            assert (got == expected).float().mean() >= 0.999, test_cfg
    finally:
        demo_model.test_cfg = whole  # the session's model


def test_image_demo_in_openvino_writes_pytorchs_labels(demo_run, demo_model, deploy_runs):
    import cv2
    from mmseg.apis import inference_model

    from mmseg_incnext.runner.visualization import read_image
    work, _ = demo_run
    image = validation_images(work)[0]
    succeeded(deploy_runs, 'openvino_demo')
    labels = cv2.imread(str(deploy_runs['folder'] / 'openvino_demo' / f'{image.stem}_labels.png'),
                        cv2.IMREAD_UNCHANGED)
    with torch.no_grad():  # the PyTorch model on the image as the demo reads it
        expected = inference_model(demo_model, read_image(str(image))).pred_sem_seg.data[0]
    assert labels.shape == expected.shape
    assert (labels == expected.numpy()).mean() >= 0.999


def test_the_int8_qdq_file_runs_int8_in_openvino_and_passes_the_self_check(
        demo_run, demo_onnx, quantized):
    work, demo_output = demo_run
    int8_file, _ = quantized
    graph = open_graph(str(int8_file), 'openvino')
    precisions = {op.get_rt_info()['runtimePrecision'].astype(str).lower()
                  for op in graph.compiled.get_runtime_model().get_ordered_ops()}
    assert {'i8', 'u8'} <= precisions, precisions  # OpenVINO's own int8 kernels run
    cfg = demo_cfg(work / 'data')
    items, classes, ignore_index = quantize._check_images(cfg, quantize._test_pipeline(cfg), 4,
                                                          0, set())
    check = quantize.self_check(cfg, str(demo_onnx[0]), str(int8_file), items, classes,
                                ignore_index, backend='openvino')
    assert (check.images, check.reduced, check.backend) == (4, 'int8', 'openvino')
    assert 0.98 <= check.label_agreement < 1
    assert check.miou_fp32 == pytest.approx(held_out_miou(demo_output), abs=0.02)
    assert check.miou_fp32 - MAX_MIOU_LOSS <= check.miou_reduced <= check.miou_fp32 + 0.5


def test_the_bf16_self_check_says_whether_bf16_is_native(demo_run, deploy_runs):
    _, demo_output = demo_run
    output = succeeded(deploy_runs, 'openvino_bf16').output
    machine = torch.backends.cpu.get_cpu_capability()
    if bf16_is_native():
        assert 'bf16 asked, compiled in bf16 (bf16 native on this CPU' in output
    else:
        assert (f'bf16 asked, compiled in fp32: this CPU has no native bf16 ({machine}; '
                'OpenVINO CPU capabilities') in output, output
    images, reduced, agreement, miou_fp32, miou_bf16 = SELF_CHECK.search(output).groups()
    assert (images, reduced) == ('4', 'bf16')
    assert float(agreement) >= (98 if bf16_is_native() else 100)
    assert float(miou_fp32) == pytest.approx(held_out_miou(demo_output), abs=0.02)
    assert float(miou_fp32) - MAX_MIOU_LOSS <= float(miou_bf16) <= float(miou_fp32) + 0.5


def backend_args(backend=None, precision='fp32'):
    return argparse.Namespace(backend=backend, precision=precision)


def test_bad_backend_choices_exit_with_the_reason(demo_onnx, monkeypatch):
    from mmseg_incnext.runner.arguments import check_backend_arguments
    with pytest.raises(SystemExit, match=r"runs precisions \('fp32',\), got 'bf16' \(bf16 "
                       'runs in --backend openvino'):
        check_backend_arguments(backend_args(precision='bf16'), onnx=True)
    with pytest.raises(SystemExit, match='--backend and --precision run an .onnx model'):
        check_backend_arguments(backend_args('openvino'), onnx=False)
    with pytest.raises(ValueError, match=r"backend must be one of \('onnxruntime', "
                       r"'openvino'\), got 'tensorrt'"):
        open_graph(str(demo_onnx[0]), 'tensorrt')
    args = backend_args()
    check_backend_arguments(args, onnx=True)
    assert args.backend == 'onnxruntime'
    # as where openvino is not installed
    monkeypatch.setitem(sys.modules, 'openvino', None)
    with pytest.raises(SystemExit, match=r'pip install -e .\[openvino\]'):
        check_backend_arguments(backend_args('openvino'), onnx=True)


def test_the_benchmark_has_openvino_rows_beside_onnx_runtimes():
    from mmseg_incnext.runner.benchmark.contenders import openvino_comparisons
    for comparison, head in zip(openvino_comparisons(), ('UperNet', 'FPN')):
        names = [m.name for m in comparison.models]
        assert names == [f'{head}-T (ours)', f'{head}-T (ours, bf16 autocast)',
                         f'{head}-T (ours, ONNX Runtime)', f'{head}-T (ours, ONNX Runtime int8)',
                         f'{head}-T (ours, OpenVINO fp32)', f'{head}-T (ours, OpenVINO bf16)',
                         f'{head}-T (ours, OpenVINO int8)',
                         f'{head}-T (ours, OpenVINO int8) control copy']
        # the number format whose peak gives each row's hardware floor
        assert [m.arithmetic for m in comparison.models] == [
            'fp32', 'bf16', 'fp32', 'int8', 'fp32', 'bf16', 'int8', 'int8']
        assert comparison.config == f'configs/{head.lower()}/incnext_t_ade20k.py'
        assert set(comparison.references) == {'PyTorch', 'ORT fp32', 'ORT int8'}
        ((model, copy), ) = comparison.controls
        assert (model.name, copy.name) == (names[-2], names[-1])
