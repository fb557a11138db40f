"""Running an exported segmentor with ONNX Runtime inside mmseg: testing (mIoU, slide
windows, TTA) and the inference API work as with the PyTorch model."""
import json
import os
import tempfile
from typing import Dict, List, Optional, Union

import numpy as np
import torch
from mmengine.config import Config

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import DATASETS, MODELS


def ort_session(path: str, threads: Optional[int] = None,
                profile_prefix: Optional[str] = None):
    """An ONNX Runtime CPU session with all graph optimisations; ``threads`` intra-op
    threads (default: torch's); with ``profile_prefix``, ONNX Runtime's profiler on, its
    file named from that prefix."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def run_images(session, images: torch.Tensor) -> torch.Tensor:
    """The first output of ``session`` (an export of ours) for ``images`` (NCHW, any
    layout or device), on ``images``' device."""
    array = np.ascontiguousarray(images.detach().float().cpu().numpy())
    return torch.from_numpy(session.run(None, {'images': array})[0]).to(images.device)


def op_type_seconds(path: str, images: torch.Tensor) -> Dict[str, float]:
    """Seconds ONNX Runtime's kernels of each op type took in one run of ``path`` on
    ``images``, after a warm-up run (its profiler; the op types are the optimised graph's,
    e.g. ``QLinearConv`` in an int8 file)."""
    with tempfile.TemporaryDirectory() as folder:
        session = ort_session(path, profile_prefix=os.path.join(folder, 'ort'))
        for _ in range(2):
            run_images(session, images)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    last_run = max(e['ts'] for e in events if e.get('name') == 'model_run')
    seconds: Dict[str, float] = {}
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time') and e['ts'] >= last_run:
            op = e['args']['op_name']
            seconds[op] = seconds.get(op, 0.0) + e['dur'] / 1e6
    return seconds


@MODELS.register_module()
class OnnxRuntimeSegmentor(EncoderDecoder):
    """An mmseg segmentor whose ``encode_decode`` runs an ONNX file written by
    ``tools/export_onnx.py --output logits``; mmseg's whole-image and sliding-window
    inference, test-time augmentation and post-processing are EncoderDecoder's own.
    Inference only.

    Config keys: ``onnx_file``, ``num_classes``, ``align_corners`` (of the exported decode
    head), ``data_preprocessor`` and ``test_cfg`` (the PyTorch model's).
    """

    def __init__(self, onnx_file: str, num_classes: int, align_corners: bool = False,
                 data_preprocessor: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 threads: Optional[int] = None) -> None:
        super(EncoderDecoder, self).__init__(data_preprocessor=data_preprocessor)
        if not os.path.isfile(onnx_file):
            raise FileNotFoundError(f'ONNX file not found: {onnx_file}')
        self.session = ort_session(onnx_file, threads)
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs != ['logits']:
            raise ValueError(f'{onnx_file} outputs {outputs}; testing and the demo need an '
                             'export with --output logits')
        height, width = self.session.get_inputs()[0].shape[2:]  # ints where fixed
        self.fixed_size = (height, width) if isinstance(height, int) else None
        self.onnx_file = onnx_file
        self.out_channels = num_classes
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.test_cfg = test_cfg
        self.decode_head = None
        self.neck = None

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        if self.fixed_size is not None and tuple(inputs.shape[2:]) != self.fixed_size:
            raise ValueError(
                f'{self.onnx_file} was exported for {self.fixed_size[0]}x{self.fixed_size[1]} '
                f'inputs, got {inputs.shape[2]}x{inputs.shape[3]}; export with --dynamic to '
                'run on other sizes (sliding windows and TTA need it)')
        return run_images(self.session, inputs)

    def extract_feat(self, inputs: torch.Tensor):
        raise NotImplementedError('OnnxRuntimeSegmentor runs the exported graph as a whole')

    def loss(self, inputs, data_samples):
        raise NotImplementedError('OnnxRuntimeSegmentor is inference-only; train the PyTorch '
                                  'model')


def onnx_model_cfg(model_cfg: Union[Config, dict], onnx_file: str,
                   threads: Optional[int] = None) -> dict:
    """The config of an :class:`OnnxRuntimeSegmentor` standing in for ``model_cfg`` (a
    config's ``model``), with its pre-processing and test mode."""
    head = model_cfg['decode_head']
    return dict(type='OnnxRuntimeSegmentor', onnx_file=onnx_file,
                num_classes=head['num_classes'], align_corners=head.get('align_corners', False),
                data_preprocessor=model_cfg.get('data_preprocessor'),
                test_cfg=model_cfg.get('test_cfg', dict(mode='whole')), threads=threads)


def init_onnx_model(config: Union[str, Config], onnx_file: str, device: str = 'cpu'):
    """Like ``mmseg.apis.init_model`` for an ONNX file: the config's pre-processing, test
    mode and dataset classes around the exported graph."""
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    cfg.model = onnx_model_cfg(cfg.model, onnx_file)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    model.cfg = cfg  # mmseg.apis.inference_model reads the test pipeline from it
    model.dataset_meta = dict(DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO)
    return model.to(device).eval()
