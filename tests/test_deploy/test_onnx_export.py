"""ONNX export and ONNX Runtime: the whole segmentor at every input size, verified export,
and mIoU, sliding windows, TTA and the image demo on the exported file."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip('onnxruntime')

from mmseg_incnext.deploy import onnx_export  # noqa: E402
from mmseg_incnext.deploy.onnx_export import (AdaptiveAvgPoolAnySize,  # noqa: E402
                                              ExportMismatchError, export_onnx)
from tests.helpers import REPO_ROOT, atto_model, miou  # noqa: E402
from tests.test_deploy.conftest import (TEST_SETTINGS, succeeded,  # noqa: E402
                                        validation_images)


def segmentor(config):
    """An atto segmentor of ``config`` with random weights, BN statistics and layer scales,
    so no block is near-identity."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_incnext  # noqa: F401
    from mmseg_incnext.runner.device import replace_sync_bn
    cfg = Config.fromfile(os.path.join(REPO_ROOT, config))
    cfg.model.backbone.update(init_cfg=None)
    cfg.merge_from_dict({f'model.{k}': v for k, v in atto_model(config).items()})
    replace_sync_bn(cfg.model)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.2, 0.2, generator=generator)
    for name, param in model.named_parameters():
        if name.endswith('gamma'):
            param.data.uniform_(0.2, 1.0, generator=generator)
    return model.eval()


@pytest.mark.parametrize('bins', [1, 2, 3, 6, (2, 3)])
@pytest.mark.parametrize('size', [(6, 6), (7, 11), (13, 5), (33, 64)])
def test_adaptive_pooling_for_any_size_equals_pytorch(bins, size):
    x = torch.randn(2, 4, *size)
    expected = nn.AdaptiveAvgPool2d(bins)(x)
    torch.testing.assert_close(AdaptiveAvgPoolAnySize(bins)(x), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_exported_pooling_matches_pytorch_where_bins_divide_the_side(tmp_path, backend):
    """Each runtime on the exported pooling, at sides the bins divide (18 / 6 once put a bin
    edge one off in OpenVINO: UperNet-T at 480x576) and sides they do not."""
    pytest.importorskip(backend)
    from mmseg_incnext.deploy.onnx_runtime import open_graph
    from mmseg_incnext.utils.compat import onnx_export as export
    path = str(tmp_path / 'pool.onnx')
    with torch.no_grad():
        export(AdaptiveAvgPoolAnySize(6), (torch.randn(1, 3, 12, 12), ), path,
               opset_version=17, input_names=['images'], output_names=['pooled'],
               dynamic_axes={'images': {2: 'height', 3: 'width'}})
    graph = open_graph(path, backend)
    for size in [(12, 18), (15, 18), (16, 16), (18, 24), (7, 30)]:
        x = torch.randn(1, 3, *size)
        np.testing.assert_allclose(graph.run(x.numpy()), nn.AdaptiveAvgPool2d(6)(x).numpy(),
                                   atol=1e-5, err_msg=f'{backend} at {size}')


@pytest.mark.parametrize('config', ['configs/upernet/incnext_t_ade20k.py',
                                    'configs/fpn/incnext_t_ade20k.py'])
def test_dynamic_export_matches_pytorch_at_other_sizes(tmp_path, config):
    model = segmentor(config)
    path = tmp_path / 'model.onnx'
    results = export_onnx(model, str(path), shape=(96, 128), dynamic=True)
    assert path.is_file()
    shapes = [r.shape for r in results]
    assert shapes[0] == (1, 3, 96, 128) and len(shapes) == 3
    assert any(h % 2 or w % 2 for _, _, h, w in shapes) and any(n == 2 for n, *_ in shapes)
    for result in results:
        assert result.max_abs_diff < 1e-3 and result.label_agreement >= 0.999, result


def test_a_frozen_shape_fails_verification_and_leaves_no_file(tmp_path, monkeypatch):
    # Without the traceable layers, the FPN head's upsampling sizes are frozen at the
    # example's: the other sizes disagree and nothing may be written.
    monkeypatch.setattr(onnx_export, 'make_traceable', lambda module: module)
    model = segmentor('configs/fpn/incnext_t_ade20k.py')
    path = tmp_path / 'model.onnx'
    with pytest.raises(ExportMismatchError, match='no file written') as err:
        export_onnx(model, str(path), shape=(96, 128), dynamic=True)
    assert '1x3x96x128' in str(err.value)
    assert os.listdir(tmp_path) == []


def test_labels_output_and_static_export(tmp_path):
    from mmseg_incnext.deploy.onnx_runtime import OnnxSegmentor, ort_session
    model = segmentor('configs/fpn/incnext_t_ade20k.py')
    labels_path = tmp_path / 'labels.onnx'
    (result, ) = export_onnx(model, str(labels_path), shape=(64, 96), dynamic=False,
                             output='labels')
    assert result.max_abs_diff is None and result.label_agreement >= 0.999
    x = torch.randn(1, 3, 64, 96)
    labels = ort_session(str(labels_path)).run(None, {'images': x.numpy()})[0]
    assert labels.shape == (1, 64, 96) and labels.dtype == np.int64
    with pytest.raises(ValueError, match='--output logits'):
        OnnxSegmentor(str(labels_path), num_classes=150)
    logits_path = tmp_path / 'logits.onnx'
    export_onnx(model, str(logits_path), shape=(64, 96), dynamic=False)
    runner = OnnxSegmentor(str(logits_path), num_classes=150)
    assert runner.encode_decode(x, []).shape == (1, 150, 64, 96)
    with pytest.raises(ValueError, match='exported for 64x96 inputs.*--dynamic'):
        runner.encode_decode(torch.randn(1, 3, 64, 64), [])


def test_onnx_miou_equals_pytorch_whole_slide_and_tta(deploy_runs):
    for setting in TEST_SETTINGS:  # whole, slide, TTA
        pytorch, onnx = (succeeded(deploy_runs, f'test_{setting}_{model}')
                         for model in ('pth', 'onnx'))
        if setting == 'whole':
            assert miou(pytorch.output) > 30  # a trained model, so agreement means something
        assert miou(onnx.output) == pytest.approx(miou(pytorch.output), abs=0.02), setting


def test_image_demo_runs_the_onnx_file(demo_run, deploy_runs):
    import cv2
    work, _ = demo_run
    image = validation_images(work)[0]
    outputs = {}
    for name in ('pth', 'onnx'):
        succeeded(deploy_runs, f'demo_{name}')
        outputs[name] = cv2.imread(str(deploy_runs['folder'] / f'demo_{name}' /
                                       f'{image.stem}_labels.png'), cv2.IMREAD_UNCHANGED)
    assert outputs['onnx'].shape == outputs['pth'].shape
    assert (outputs['onnx'] == outputs['pth']).mean() > 0.999
