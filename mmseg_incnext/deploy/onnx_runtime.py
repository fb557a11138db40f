"""Running an exported segmentor inside mmseg, with ONNX Runtime or OpenVINO
(:mod:`.openvino_runtime`): testing (mIoU, slide windows, TTA) and the inference API work as
with the PyTorch model."""
import json
import os
import tempfile
from typing import Dict, List, Optional, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import DATASETS, MODELS
from mmseg_incnext.deploy.runtime_packages import import_runtime


BACKENDS = ('onnxruntime', 'openvino')
# The precisions each backend computes an fp32 file in (an int8 file runs as fp32 does:
# its quantization is in the graph).
PRECISIONS = dict(onnxruntime=('fp32', ), openvino=('fp32', 'bf16'))


def ort_session(path: str, threads: Optional[int] = None,
                profile_prefix: Optional[str] = None):
    """An ONNX Runtime CPU session with all graph optimisations; ``threads`` intra-op
    threads (default: torch's); with ``profile_prefix``, ONNX Runtime's profiler on, its
    file named from that prefix."""
    onnxruntime = import_runtime('onnxruntime', 'deploy')
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


class OrtGraph:
    """An ONNX Runtime session as the segmentor runs it, like :class:`.OpenVINOGraph`:
    ``run(array)`` maps ``images`` to the first output; ``input_size`` is the fixed (H, W)
    of the input or None; ``precision_note()`` the line the segmentor logs."""
    precision = runs_in = 'fp32'

    def __init__(self, session) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]
        height, width = session.get_inputs()[0].shape[2:]  # ints where fixed
        self.input_size = (height, width) if isinstance(height, int) else None

    def run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run(None, {'images': array})[0]

    def precision_note(self) -> str:
        return 'ONNX Runtime CPU: fp32'


def check_backend(backend: str, precision: str = 'fp32') -> None:
    """ValueError for an unknown backend or a precision it does not run; ImportError (with
    the extra to install) where the backend's package is missing."""
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if precision not in PRECISIONS[backend]:
        raise ValueError(f'the {backend} backend runs precisions {PRECISIONS[backend]}, got '
                         f'{precision!r}' + (' (bf16 runs in --backend openvino)'
                                             if precision == 'bf16' else ''))
    import_runtime(backend, 'openvino' if backend == 'openvino' else 'deploy')


def open_graph(path: str, backend: str = 'onnxruntime', precision: str = 'fp32',
               threads: Optional[int] = None):
    """``path`` (an export of ours) ready to run on the CPU in ``backend`` (one of
    :data:`BACKENDS`) at ``precision`` (one of that backend's :data:`PRECISIONS`), with
    ``threads`` threads (default: torch's)."""
    check_backend(backend, precision)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'ONNX file not found: {path}')
    if backend == 'openvino':
        from mmseg_incnext.deploy.openvino_runtime import OpenVINOGraph
        return OpenVINOGraph(path, precision, threads)
    return OrtGraph(ort_session(path, threads))


def run_images(graph, images: torch.Tensor) -> torch.Tensor:
    """The first output of ``graph`` (:func:`open_graph`) for ``images`` (NCHW, any layout
    or device), on ``images``' device."""
    array = np.ascontiguousarray(images.detach().float().cpu().numpy())
    return torch.from_numpy(graph.run(array)).to(images.device)


def op_type_seconds(path: str, images: torch.Tensor, backend: str = 'onnxruntime',
                    precision: str = 'fp32') -> Dict[str, float]:
    """Seconds the kernels of each op type took in one run of ``path`` on ``images`` in
    ``backend``, after a warm-up run (the runtime's profiler; the op types are the optimised
    graph's, e.g. ``QLinearConv`` in an int8 file for ONNX Runtime; OpenVINO's also name
    the kernel, see :meth:`.OpenVINOGraph.op_type_seconds`)."""
    if backend == 'openvino':
        from mmseg_incnext.deploy.openvino_runtime import OpenVINOGraph
        graph = OpenVINOGraph(path, precision, profile=True)
        for _ in range(2):
            run_images(graph, images)
        return graph.op_type_seconds()
    with tempfile.TemporaryDirectory() as folder:
        session = ort_session(path, profile_prefix=os.path.join(folder, 'ort'))
        for _ in range(2):
            run_images(OrtGraph(session), images)
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
class OnnxSegmentor(EncoderDecoder):
    """An mmseg segmentor whose ``encode_decode`` runs an ONNX file written by
    ``tools/export_onnx.py --output logits`` (or its int8 form) in ONNX Runtime or OpenVINO
    on the CPU; mmseg's whole-image and sliding-window inference, test-time augmentation and
    post-processing are EncoderDecoder's own. Inference only.

    Config keys: ``onnx_file``, ``num_classes``, ``align_corners`` (of the exported decode
    head), ``data_preprocessor`` and ``test_cfg`` (the PyTorch model's), ``backend``
    (``'onnxruntime'``, the default, or ``'openvino'``), ``precision`` (``'fp32'``, or
    ``'bf16'`` with OpenVINO) and ``threads`` (default: torch's).
    """

    def __init__(self, onnx_file: str, num_classes: int, align_corners: bool = False,
                 data_preprocessor: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 threads: Optional[int] = None, backend: str = 'onnxruntime',
                 precision: str = 'fp32') -> None:
        super(EncoderDecoder, self).__init__(data_preprocessor=data_preprocessor)
        self.graph = open_graph(onnx_file, backend, precision, threads)
        if self.graph.output_names != ['logits']:
            raise ValueError(f'{onnx_file} outputs {self.graph.output_names}; testing and the '
                             'demo need an export with --output logits')
        print_log(self.graph.precision_note(), logger='current')
        self.onnx_file = onnx_file
        self.backend = backend
        self.out_channels = num_classes
        self.num_classes = num_classes
        self.align_corners = align_corners
        self.test_cfg = test_cfg
        self.decode_head = None
        self.neck = None

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        fixed = self.graph.input_size
        if fixed is not None and tuple(inputs.shape[2:]) != fixed:
            raise ValueError(
                f'{self.onnx_file} was exported for {fixed[0]}x{fixed[1]} '
                f'inputs, got {inputs.shape[2]}x{inputs.shape[3]}; export with --dynamic to '
                'run on other sizes (sliding windows and TTA need it)')
        return run_images(self.graph, inputs)

    def extract_feat(self, inputs: torch.Tensor):
        raise NotImplementedError('OnnxSegmentor runs the exported graph as a whole')

    def loss(self, inputs, data_samples):
        raise NotImplementedError('OnnxSegmentor is inference-only; train the PyTorch model')


def onnx_model_cfg(model_cfg: Union[Config, dict], onnx_file: str,
                   threads: Optional[int] = None, backend: str = 'onnxruntime',
                   precision: str = 'fp32') -> dict:
    """The config of an :class:`OnnxSegmentor` standing in for ``model_cfg`` (a config's
    ``model``), with its pre-processing and test mode, running in ``backend`` at
    ``precision``."""
    head = model_cfg['decode_head']
    return dict(type='OnnxSegmentor', onnx_file=onnx_file,
                num_classes=head['num_classes'], align_corners=head.get('align_corners', False),
                data_preprocessor=model_cfg.get('data_preprocessor'),
                test_cfg=model_cfg.get('test_cfg', dict(mode='whole')), threads=threads,
                backend=backend, precision=precision)


def init_onnx_model(config: Union[str, Config], onnx_file: str, device: str = 'cpu',
                    backend: str = 'onnxruntime', precision: str = 'fp32'):
    """Like ``mmseg.apis.init_model`` for an ONNX file: the config's pre-processing, test
    mode and dataset classes around the exported graph, run in ``backend`` at
    ``precision``."""
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    cfg.model = onnx_model_cfg(cfg.model, onnx_file, backend=backend, precision=precision)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    model.cfg = cfg  # mmseg.apis.inference_model reads the test pipeline from it
    model.dataset_meta = dict(DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO)
    return model.to(device).eval()
