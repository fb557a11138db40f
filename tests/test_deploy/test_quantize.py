"""Calibrated int8 quantization of the demo model's ONNX export: the self-check's figures,
the file running in tools/test.py and tools/image_demo.py, no file below the agreement
asked for, and the named errors."""
import os
import re
import shutil
import sys

import pytest

pytest.importorskip('onnxruntime')

from mmseg_incnext.deploy import quantize  # noqa: E402
from tests.helpers import miou  # noqa: E402
from tests.test_deploy.conftest import demo_cfg, succeeded  # noqa: E402

# Loss of the 40-iteration demo model (fp32 64.41 on its 4 held-out images) with 8
# calibration images: 0.1-0.6 mIoU over seeds and methods; bound with margin.
MAX_MIOU_LOSS = 1.5
SELF_CHECK = re.compile(r'self-check on (\d+) held-out images: int8 labels equal fp32 on '
                        r'([0-9.]+)% of the pixels \(mIoU fp32 ([0-9.]+), int8 ([0-9.]+)\)')


@pytest.fixture(scope='module')
def fp32_onnx(demo_onnx):
    """The demo model's fp32 export (tests/test_deploy/conftest.py)."""
    return demo_onnx[0]


def test_self_check_prints_agreement_and_both_mious(demo_run, fp32_onnx, quantized):
    import onnx
    _, demo_output = demo_run
    path, output = quantized
    graph = onnx.load(str(path)).graph
    assert {'QuantizeLinear', 'DequantizeLinear'} <= {node.op_type for node in graph.node}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)
    assert path.stat().st_size < 0.5 * fp32_onnx.stat().st_size
    assert 'int8 form: qdq, per-channel' in output
    assert 'calibration: minmax, 8 of 12 training images (seed 0), 8 inputs' in output
    assert f'wrote {path}' in output
    images, agreement, miou_fp32, miou_int8 = SELF_CHECK.search(output).groups()
    assert int(images) == 4
    assert 98 <= float(agreement) < 100
    # the fp32 file is exact, so its mIoU is the PyTorch model's, printed by the demo
    held_out = float(re.search(r'held-out mIoU: ([0-9.]+)', demo_output).group(1))
    assert float(miou_fp32) == pytest.approx(held_out, abs=0.02)
    assert float(miou_fp32) - MAX_MIOU_LOSS <= float(miou_int8) <= float(miou_fp32) + 0.5


def test_int8_file_in_tools_test(quantized, deploy_runs):
    """An int8 file runs in tools/test.py as the fp32 export does (slide, TTA and the image
    demo go through the same segmentor: tests/test_deploy/test_onnx_export.py)."""
    _, output = quantized
    whole = succeeded(deploy_runs, 'int8_test')
    # the demo's test set is its validation set: the same 4 images as the self-check
    assert miou(whole.output) == float(SELF_CHECK.search(output).group(4))


def test_agreement_below_the_minimum_exits_and_leaves_no_file(deploy_runs):
    refused, folder = deploy_runs['int8_refused'], deploy_runs['folder'] / 'int8_refused'
    assert re.search(r'AgreementError: int8 labels equal the fp32 labels on [0-9.]+% .* below '
                     r'--min-agreement 101.00%.*mIoU fp32.*no file written', refused.error or '',
                     re.DOTALL), refused.output[-3000:]
    assert os.listdir(folder) == []


def test_labels_only_export_is_refused(demo_model, demo_run, tmp_path):
    from mmseg_incnext.deploy.onnx_export import export_onnx
    work, _ = demo_run
    labels = tmp_path / 'labels.onnx'
    export_onnx(demo_model, str(labels), shape=(64, 64), dynamic=False, output='labels')
    with pytest.raises(quantize.NotQuantizableError, match='labels-only export.*--output '
                       'logits'):
        quantize.quantize_onnx(demo_cfg(work / 'data'), str(labels), str(tmp_path / 'q.onnx'))
    assert sorted(os.listdir(tmp_path)) == ['labels.onnx']


def test_missing_file_and_missing_quantization_module(demo_run, fp32_onnx, tmp_path,
                                                      monkeypatch):
    work, _ = demo_run
    cfg = demo_cfg(work / 'data')
    with pytest.raises(quantize.ModelNotFoundError, match='ONNX file not found: .*nothing'):
        quantize.quantize_onnx(cfg, str(tmp_path / 'nothing.onnx'), str(tmp_path / 'q.onnx'))
    # as with an onnxruntime whose quantization module cannot be imported (e.g. no onnx)
    monkeypatch.setitem(sys.modules, 'onnxruntime.quantization', None)
    with pytest.raises(quantize.QuantizationUnavailableError,
                       match=r'onnxruntime.quantization.*pip install -e .\[deploy\]'):
        quantize.quantize_onnx(cfg, str(fp32_onnx), str(tmp_path / 'q.onnx'))
    assert os.listdir(tmp_path) == []


def test_empty_or_unreadable_calibration_set(demo_run, fp32_onnx, tmp_path):
    work, _ = demo_run
    data = tmp_path / 'data'
    shutil.copytree(work / 'data' / 'images', data / 'images')
    shutil.copytree(work / 'data' / 'annotations', data / 'annotations')
    broken = sorted((data / 'images' / 'training').iterdir())[3]
    broken.write_bytes(b'not a jpeg')
    out = tmp_path / 'q.onnx'
    with pytest.raises(quantize.CalibrationDataError,
                       match=f'(?s)train_dataloader cannot be read: Bad files.*{broken.name}'):
        quantize.quantize_onnx(demo_cfg(data), str(fp32_onnx), str(out))
    for split in ('images', 'annotations'):
        shutil.rmtree(data / split / 'training')
        (data / split / 'training').mkdir()
    with pytest.raises(quantize.CalibrationDataError,
                       match='(?s)train_dataloader cannot be read: Dataset not found.*'
                       'has no .jpg'):
        quantize.quantize_onnx(demo_cfg(data), str(fp32_onnx), str(out))
    assert not out.exists()


def _graph_facts(path):
    """Op types, the weight scales' shapes of convolutions, grouped convolutions whose
    weights stay float, the ops whose outputs are quantized, and the op that writes the
    logits."""
    import onnx
    graph = onnx.load(str(path)).graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    quantized_outputs_of = {producers[node.input[0]].op_type for node in graph.node
                            if node.op_type == 'QuantizeLinear' and node.input[0] in producers}
    weight_scales, float_grouped = [], 0
    for node in graph.node:
        if node.op_type != 'Conv':
            continue
        weight = node.input[1]
        if weight in initializers:
            float_grouped += any(a.name == 'group' and a.i > 1 for a in node.attribute)
        elif producers[weight].op_type == 'DequantizeLinear':
            weight_scales.append(list(initializers[producers[weight].input[1]].dims))
    return dict(ops={node.op_type for node in graph.node}, weight_scales=weight_scales,
                float_grouped=float_grouped, quantized_outputs_of=quantized_outputs_of,
                logits_from=producers[graph.output[0].name].op_type)


@pytest.mark.parametrize('scheme', [
    quantize.Int8Scheme(), quantize.Int8Scheme(quant_format='qoperator'),
    quantize.Int8Scheme(per_channel=False), quantize.Int8Scheme(float_parts=('depthwise', )),
    quantize.Int8Scheme(float_parts=('resize', )),
    quantize.Int8Scheme(float_parts=('all_but_conv', ))], ids=lambda scheme: scheme.name)
def test_each_int8_form_is_the_graph_it_names(demo_run, fp32_onnx, tmp_path, scheme):
    """The forms the benchmark compares (--int8-variants) are what their names say, and each
    passes the self-check."""
    work, _ = demo_run
    out = tmp_path / 'int8.onnx'
    report = quantize.quantize_onnx(demo_cfg(work / 'data'), str(fp32_onnx), str(out),
                                    calib_images=4, val_images=2, min_agreement=0.9,
                                    scheme=scheme)
    assert report.check.label_agreement >= 0.9
    facts = _graph_facts(out)
    if scheme.quant_format == 'qoperator':
        assert 'QLinearConv' in facts['ops'] and not facts['weight_scales']
        return
    assert 'QLinearConv' not in facts['ops'] and facts['weight_scales']
    grouped = facts['float_grouped']
    assert grouped > 0 if 'depthwise' in scheme.float_parts else grouped == 0
    sizes = {len(dims) for dims in facts['weight_scales']}
    assert sizes == ({1} if scheme.per_channel else {0})
    # GELU is Erf and arithmetic: quantized in the default form, float with only convs
    quantized = facts['quantized_outputs_of']
    assert {'Conv', 'Add', 'Mul'} <= quantized
    assert ('Erf' in quantized) == ('all_but_conv' not in scheme.float_parts)
    # the logits' resize stays float in every form: no quantize-dequantize pass after it
    assert facts['logits_from'] == 'Resize'


def test_the_tools_form_options_write_the_form_they_name(deploy_runs):
    """tools/quantize_onnx.py's --quant-format, --per-tensor and --float-parts reach the
    graph, and the output names the form."""
    run, folder = succeeded(deploy_runs, 'int8_forms'), deploy_runs['folder'] / 'int8_forms'
    assert 'int8 form: qdq, per-tensor, float depthwise' in run.output
    facts = _graph_facts(folder / 'int8.onnx')
    assert facts['float_grouped'] > 0
    assert {len(dims) for dims in facts['weight_scales']} == {0}


def test_the_float_nodes_are_the_logits_resize_and_the_parts_named(fp32_onnx):
    import onnx
    graph = onnx.load(str(fp32_onnx)).graph
    resizes = {n.name for n in graph.node if n.op_type == 'Resize'}
    grouped = {n.name for n in graph.node if n.op_type == 'Conv'
               and any(a.name == 'group' and a.i > 1 for a in n.attribute)}
    (logits_resize, ) = [n.name for n in graph.node if graph.output[0].name in n.output]
    assert logits_resize in resizes and len(resizes) > 1 and grouped
    assert quantize._float_nodes(str(fp32_onnx), ()) == [logits_resize]
    assert set(quantize._float_nodes(str(fp32_onnx), ('resize', ))) == resizes
    assert set(quantize._float_nodes(str(fp32_onnx), ('depthwise', ))) == (
        grouped | {logits_resize})


def test_an_unknown_int8_form_is_refused():
    with pytest.raises(ValueError, match="quant_format must be one of .*'qint4'"):
        quantize.Int8Scheme(quant_format='qint4')
    with pytest.raises(ValueError, match=r"float_parts must be among .*\['gelu'\]"):
        quantize.Int8Scheme(float_parts=('gelu', ))
