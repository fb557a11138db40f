"""mmdeploy's ONNX Runtime export of FPN-T and UperNet-T against PyTorch.

Through the calls mmdeploy's ``tools/deploy.py`` makes (``torch2onnx``, ``export2SDK``; the
script is not in mmdeploy's pip package) and the runtimes it hands the export to (the task
processor's ONNX Runtime backend model, the SDK's ``Segmentor``), with our deploy config:
mmdeploy's dynamic ONNX Runtime config plus our rewriters. mmdeploy 1.3.1 runs on the
legacy stack only; ``make test-mmdeploy`` runs this file in ``.venv-mmdeploy``.
"""
import copy
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip('mmdeploy', reason='mmdeploy is not installed: this file runs on the '
                    'mmdeploy stack (make setup-mmdeploy test-mmdeploy)')

from mmengine.config import Config  # noqa: E402

from mmseg_incnext.deploy.onnx_export import ATOL  # noqa: E402
from tests.helpers import REPO_ROOT  # noqa: E402

DEPLOY_CONFIG = os.path.join(REPO_ROOT, 'configs', 'deploy',
                             'segmentation_onnxruntime_dynamic.py')
# mmdeploy 1.3.1's configs/mmseg/segmentation_onnxruntime_dynamic.py, as mmengine loads it
MMDEPLOY_DYNAMIC_ORT = dict(
    onnx_config=dict(type='onnx', export_params=True, keep_initializers_as_inputs=False,
                     opset_version=11, save_file='end2end.onnx', input_names=['input'],
                     output_names=['output'], input_shape=None, optimize=True,
                     dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'},
                                   'output': {0: 'batch', 2: 'height', 3: 'width'}}),
    codebase_config=dict(type='mmseg', task='Segmentation', with_argmax=True),
    backend_config=dict(type='onnxruntime'))
CONFIGS = ['configs/fpn/incnext_t_ade20k.py', 'configs/upernet/incnext_t_ade20k.py']
# The traced size: its 1/32 features (5 x 7) are no multiple of UperNet's 2, 3 and 6 bins.
TRACE_HW = (160, 224)
# The traced size, a realistic odd one (no side a multiple of 2), a batch of 2.
SHAPES = [(1, 3, *TRACE_HW), (1, 3, 333, 517), (2, 3, 96, 288)]


def model_config(config: str) -> Config:
    """``config`` as a user hands it to mmdeploy, tracing at ``TRACE_HW``, without the
    pretrained weights (the test's checkpoint holds every weight) and with a narrow decode
    head (the backbone is T's; the head's width changes no traced size)."""
    cfg = Config.fromfile(os.path.join(REPO_ROOT, config))
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.channels = 64
    for step in cfg.test_pipeline:
        if step['type'] == 'Resize':
            step.update(scale=TRACE_HW[::-1], keep_ratio=False)
    return cfg


def random_segmentor(cfg: Config) -> nn.Module:
    """The model of ``cfg`` with random weights, BN statistics and layer scales, so that no
    block is near-identity and a wrong branch shows."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mmseg_incnext.runner.device import replace_sync_bn
    model_cfg = copy.deepcopy(cfg.model)
    replace_sync_bn(model_cfg)
    init_default_scope('mmseg')
    torch.manual_seed(0)  # the same model every run: no label tie comes and goes
    model = MODELS.build(model_cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
        for name, param in model.named_parameters():
            if name.endswith('gamma'):
                param.uniform_(0.2, 1.0, generator=generator)
    return model.eval()


def pytorch_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """What mmseg's whole-image test computes before the argmax."""
    h, w = images.shape[2:]
    metas = [dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w))] * len(images)
    with torch.no_grad():
        return model.encode_decode(images, metas).numpy()


def deploy_config(with_argmax: bool) -> Config:
    cfg = Config.fromfile(DEPLOY_CONFIG)
    cfg.codebase_config.with_argmax = with_argmax
    return cfg


@pytest.fixture(scope='module', params=CONFIGS, ids=['fpn_t', 'upernet_t'])
def deployed(request, tmp_path_factory):
    """``(model_cfg, PyTorch model, checkpoint, work dirs by with_argmax)``: the model
    exported by mmdeploy with our deploy config as it is (labels) and with
    ``with_argmax=False`` (logits)."""
    from mmdeploy.apis import torch2onnx

    cfg = model_config(request.param)
    model = random_segmentor(cfg)
    root = tmp_path_factory.mktemp('mmdeploy')
    checkpoint = str(root / 'model.pth')
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    image = np.random.default_rng(0).integers(0, 256, (*TRACE_HW, 3), dtype=np.uint8)
    work_dirs = {}
    for with_argmax in (True, False):
        work_dir = str(root / f'argmax_{with_argmax}')
        torch2onnx(image, work_dir, 'end2end.onnx', deploy_config(with_argmax), cfg,
                   checkpoint, device='cpu')
        work_dirs[with_argmax] = work_dir
    return cfg, model, checkpoint, image, work_dirs


def backend_model(cfg: Config, with_argmax: bool, work_dir: str) -> nn.Module:
    from mmdeploy.apis.utils import build_task_processor
    processor = build_task_processor(cfg, deploy_config(with_argmax), 'cpu')
    return processor.build_backend_model([os.path.join(work_dir, 'end2end.onnx')])


def random_images(shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))


def test_deploy_config_is_mmdeploys_with_our_rewriters():
    cfg = Config.fromfile(DEPLOY_CONFIG).to_dict()
    assert cfg.pop('custom_imports') == dict(
        imports=['mmseg_incnext.deploy.mmdeploy_rewriters'], allow_failed_imports=False)
    assert cfg == MMDEPLOY_DYNAMIC_ORT


def test_logits_equal_pytorch_at_every_size(deployed):
    cfg, model, _, _, work_dirs = deployed
    backend = backend_model(cfg, False, work_dirs[False])
    for shape in SHAPES:
        images = random_images(shape)
        expected = pytorch_logits(model, images)
        got = backend.wrapper({'input': images})['output'].numpy()
        assert got.shape == expected.shape
        diff = float(np.abs(got - expected).max())
        assert diff <= ATOL, f'{shape}: max abs logit difference {diff:.2e}'
        assert (got.argmax(1) == expected.argmax(1)).all(), shape


def test_labels_equal_pytorch_at_every_size(deployed):
    from mmseg.structures import SegDataSample
    cfg, model, _, _, work_dirs = deployed
    backend = backend_model(cfg, True, work_dirs[True])
    for shape in SHAPES:
        images = random_images(shape)
        h, w = shape[2:]
        samples = [SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
                   for _ in range(shape[0])]
        got = np.stack([s.pred_sem_seg.data[0].numpy() for s in backend(images, samples)])
        assert (got == pytorch_logits(model, images).argmax(1)).all(), shape


def test_sdk_labels_equal_pytorch(deployed):
    mmdeploy_runtime = pytest.importorskip('mmdeploy_runtime')
    from mmdeploy.backend.sdk.export_info import export2SDK
    from mmdeploy.apis.utils import build_task_processor
    cfg, model, checkpoint, image, work_dirs = deployed
    export2SDK(deploy_config(True), cfg, work_dirs[True], pth=checkpoint, device='cpu')
    segmentor = mmdeploy_runtime.Segmentor(model_path=work_dirs[True], device_name='cpu',
                                           device_id=0)
    got = segmentor(image)
    # PyTorch on the same image through the config's test pipeline and data preprocessor
    processor = build_task_processor(cfg, deploy_config(True), 'cpu')
    _, inputs = processor.create_input(image, data_preprocessor=model.data_preprocessor)
    expected = pytorch_logits(model, inputs).argmax(1)[0]
    assert got.shape == expected.shape == TRACE_HW
    assert (got == expected).all()
