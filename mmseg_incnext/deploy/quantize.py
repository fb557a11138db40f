"""Calibrated int8 quantization of an fp32 ONNX export, checked against it before it is kept.

:func:`quantize_onnx` runs ONNX Runtime's static quantization (by default QDQ format,
per-channel int8 weights, uint8 activations, every supported node quantized; the other
forms, :class:`Int8Scheme`, are ``tools/quantize_onnx.py``'s form options and what the
benchmark's ``--int8-variants`` compares). The calibration inputs are what the graph
receives when mmseg tests the fp32 file: images drawn with a fixed seed from the config's
training set, run through the config's test pipeline and the model's data preprocessor in
test mode (whole images or sliding windows, as the config's ``test_cfg`` says). Then both
files segment held-out images of the config's validation set, as ``tools/test.py`` does, and
the int8 file is written only if its labels agree with the fp32 file's on enough pixels.
The check runs both files in the runtime the model is deployed with (ONNX Runtime, or
OpenVINO, which runs the same QDQ file); :func:`check_bf16` applies the same check to
OpenVINO's bf16 inference of the fp32 file.
"""
import copy
import importlib
import os
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from mmseg_incnext.utils.atomic_files import atomic_output
from mmseg_incnext.deploy.onnx_runtime import OnnxSegmentor, onnx_model_cfg, \
    open_graph, ort_session
from mmseg_incnext.datasets.config_check import dataloader_datasets
from mmseg_incnext.datasets.config_check import check_data

CALIBRATION_METHODS = ('minmax', 'entropy', 'percentile')
# quantize_onnx's and tools/quantize_onnx.py's defaults (docs/deploy.md says why 0.95)
CALIB_IMAGES, VAL_IMAGES, MIN_AGREEMENT = 32, 32, 0.95
QUANT_FORMATS = ('qdq', 'qoperator')
FLOAT_PARTS = ('depthwise', 'resize', 'all_but_conv')


@dataclass(frozen=True)
class Int8Scheme:
    """The form of the int8 graph.

    ``quant_format``: ``'qdq'`` (QuantizeLinear/DequantizeLinear around each quantized
    node, which ONNX Runtime fuses into integer kernels) or ``'qoperator'`` (integer
    operators such as QLinearConv in the file). ``per_channel``: one weight scale per output
    channel, else one per tensor. ``float_parts``, left in float: ``'depthwise'`` (the
    grouped convolutions: the token mixer's), ``'resize'`` (every Resize: the neck's and
    the head's upsampling), ``'all_but_conv'`` (only convolutions quantized: GELU, the
    residual and layer-scale arithmetic, pooling, concatenation and resizing stay float).
    In every form the node writing the logits (their Resize to the input size) stays float.
    """
    quant_format: str = 'qdq'
    per_channel: bool = True
    float_parts: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.quant_format not in QUANT_FORMATS:
            raise ValueError(f'quant_format must be one of {QUANT_FORMATS}, got '
                             f'{self.quant_format!r}')
        unknown = set(self.float_parts) - set(FLOAT_PARTS)
        if unknown:
            raise ValueError(f'float_parts must be among {FLOAT_PARTS}, got {sorted(unknown)}')

    @property
    def name(self) -> str:
        """E.g. ``qdq, per-channel`` or ``qoperator, per-tensor, float resize``."""
        parts = [self.quant_format, 'per-channel' if self.per_channel else 'per-tensor']
        return ', '.join(parts + [f'float {p.replace("_", " ")}' for p in self.float_parts])


class QuantizationError(Exception):
    """Why an int8 file was not written."""


class QuantizationUnavailableError(QuantizationError, ImportError):
    """This onnxruntime cannot quantize (no ``onnxruntime.quantization``, or no ``onnx``)."""


class CalibrationDataError(QuantizationError):
    """The calibration or check images cannot be read."""


class NotQuantizableError(QuantizationError, ValueError):
    """The ONNX file is not an fp32 ``--output logits`` export of ``tools/export_onnx.py``."""


class ModelNotFoundError(QuantizationError, FileNotFoundError):
    """The fp32 ONNX file is not there."""


class AgreementError(QuantizationError):
    """The int8 labels agree with the fp32 labels on fewer pixels than asked."""


@dataclass
class SelfCheck:
    """The reduced precision (``reduced``: the int8 file, or bf16 inference of the fp32
    file) against the fp32 file on the held-out images, both run by ``backend``.

    ``label_agreement`` is the fraction of pixels (all of them, at the annotations' size)
    where both predict the same class; the mIoUs (%, mmseg's IoUMetric definition) are None
    where the images have no annotations.
    """
    images: int
    label_agreement: float
    miou_fp32: Optional[float]
    miou_reduced: Optional[float]
    reduced: str = 'int8'
    backend: str = 'onnxruntime'


@dataclass
class QuantizationReport:
    """What :func:`quantize_onnx` did: the calibration and the self-check."""
    method: str
    seed: int
    calibration_images: int  # drawn from the training set
    calibration_inputs: int  # graph runs they made (more than images with sliding windows)
    training_images: int  # in the training set
    check: SelfCheck


def quantization_api():
    """``onnxruntime.quantization``, or :class:`QuantizationUnavailableError`."""
    try:
        quantization = importlib.import_module('onnxruntime.quantization')
    except ImportError as err:
        raise QuantizationUnavailableError(
            f'int8 quantization needs onnxruntime.quantization, which cannot be imported here '
            f'({err}); it comes with the onnxruntime and onnx packages of the deploy extra: '
            'pip install -e .[deploy]') from err
    return quantization


def check_fp32_export(path: str) -> None:
    """Refuse a missing file and anything but a logits export (:class:`NotQuantizableError`)."""
    if not os.path.isfile(path):
        raise ModelNotFoundError(f'ONNX file not found: {path}')
    session = ort_session(path)
    inputs = [(i.name, i.type) for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if outputs == ['labels']:
        raise NotQuantizableError(
            f'{path} is a labels-only export (--output labels): calibration and the '
            'self-check compare logits and run the file inside mmseg\'s test, which needs '
            'them; export with --output logits (the default) and quantize that file')
    if outputs != ['logits'] or inputs != [('images', 'tensor(float)')]:
        raise NotQuantizableError(
            f'{path} has inputs {inputs} and outputs {outputs}; expected an fp32 export of '
            "tools/export_onnx.py (float 'images' in, 'logits' out)")


class _InputRecorder(OnnxSegmentor):
    """An :class:`OnnxSegmentor` that keeps every input its graph runs on."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.recorded: List[np.ndarray] = []

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        self.recorded.append(np.ascontiguousarray(inputs.detach().float().cpu().numpy()))
        return super().encode_decode(inputs, batch_img_metas)


def _segmentor(cfg: Config, onnx_file: str, cls=OnnxSegmentor, backend: str = 'onnxruntime',
               precision: str = 'fp32') -> OnnxSegmentor:
    """``onnx_file`` inside the config's pre-processing and test mode, as tools/test.py runs
    it."""
    kwargs = onnx_model_cfg(cfg.model, onnx_file, backend=backend, precision=precision)
    kwargs.pop('type')
    return cls(**kwargs).eval()


class _CalibrationInputs:
    """Recorded graph inputs as ONNX Runtime's ``CalibrationDataReader`` (which accepts any
    class with ``get_next``); ``__len__`` and ``set_range`` let the calibrator collect one
    input at a time instead of keeping every intermediate tensor of every input."""

    def __init__(self, inputs: Sequence[np.ndarray]) -> None:
        self.inputs = list(inputs)
        self.set_range(0, len(self.inputs))

    def __len__(self) -> int:
        return len(self.inputs)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self.inputs[start_index:end_index])

    def get_next(self) -> Optional[dict]:
        images = next(self._pending, None)
        return None if images is None else {'images': images}


def _datasets(cfg: Config, dataloader: str, pipeline: list) -> list:
    """The datasets of ``dataloader`` (those inside wrappers), built with ``pipeline``."""
    from mmseg.registry import DATASETS
    try:
        check_data(cfg, [dataloader])
    except (FileNotFoundError, ValueError) as err:
        raise CalibrationDataError(f'{dataloader} cannot be read: {err}') from err
    datasets = [DATASETS.build({**dataset, 'pipeline': pipeline})
                for _, dataset in dataloader_datasets(cfg, [dataloader])]
    if not sum(len(d) for d in datasets):
        raise CalibrationDataError(f'{dataloader} has no images (its datasets: '
                                   f'{[d.data_prefix for d in datasets]})')
    return datasets


def _indexed(datasets: list) -> List[Tuple[object, int]]:
    return [(dataset, i) for dataset in datasets for i in range(len(dataset))]


def _draw(items: list, count: int, seed: int) -> list:
    """``count`` of ``items`` (all of them if fewer), drawn with ``seed``."""
    if count >= len(items):
        return list(items)
    picked = np.random.default_rng(seed).choice(len(items), count, replace=False)
    return [items[i] for i in picked]


def _image_path(item: Tuple[object, int]) -> str:
    dataset, index = item
    return os.path.abspath(dataset.get_data_info(index)['img_path'])


def _predict(model: OnnxSegmentor, item: Tuple[object, int]):
    dataset, index = item
    with torch.no_grad():
        return model.test_step(pseudo_collate([dataset[index]]))[0]


def _calibration_inputs(cfg: Config, fp32_file: str, items: list) -> List[np.ndarray]:
    recorder = _segmentor(cfg, fp32_file, _InputRecorder)
    for item in items:
        _predict(recorder, item)
    return recorder.recorded


def _float_nodes(onnx_file: str, float_parts: Sequence[str]) -> List[str]:
    """Names of the nodes of ``onnx_file`` left in float: those writing the graph's outputs
    (the logits' Resize, whose quantized output would only be dequantized again, a pass
    over every pixel and class), and those of ``float_parts`` (besides ``'all_but_conv'``,
    which is a restriction of the op types)."""
    import onnx
    graph = onnx.load(onnx_file, load_external_data=False).graph
    outputs = {output.name for output in graph.output}
    names = []
    for node in graph.node:
        groups = next((a.i for a in node.attribute if a.name == 'group'), 1)
        if (outputs & set(node.output)) or (
                'depthwise' in float_parts and node.op_type == 'Conv' and groups > 1) or (
                'resize' in float_parts and node.op_type == 'Resize'):
            names.append(node.name)
    return names


def quantize_graph(fp32_file: str, int8_file: str, inputs: Sequence[np.ndarray],
                   method: str = 'minmax', scheme: Int8Scheme = Int8Scheme()) -> None:
    """Write ``int8_file``: ``fp32_file`` statically quantized in the form of ``scheme``
    (int8 weights, uint8 activations), its activation ranges calibrated by ``method`` on
    ``inputs`` (the graph's ``images``, NCHW float32). No check: :func:`quantize_onnx` is the
    checked path."""
    quantization = quantization_api()
    methods = dict(minmax=quantization.CalibrationMethod.MinMax,
                   entropy=quantization.CalibrationMethod.Entropy,
                   percentile=quantization.CalibrationMethod.Percentile)
    with tempfile.TemporaryDirectory(prefix='mmseg-incnext-quant.') as folder:
        prepared = os.path.join(folder, 'prepared.onnx')
        # ONNX Runtime's symbolic shape inference gives up on our dynamic exports
        # ("Incomplete symbolic shape inference"); ONNX's own shape inference still runs.
        quantization.quant_pre_process(fp32_file, prepared, skip_symbolic_shape=True)
        formats = dict(qdq=quantization.QuantFormat.QDQ,
                       qoperator=quantization.QuantFormat.QOperator)
        quantization.quantize_static(
            prepared, int8_file, _CalibrationInputs(inputs),
            quant_format=formats[scheme.quant_format], per_channel=scheme.per_channel,
            weight_type=quantization.QuantType.QInt8,
            activation_type=quantization.QuantType.QUInt8,
            op_types_to_quantize=['Conv'] if 'all_but_conv' in scheme.float_parts else None,
            nodes_to_exclude=_float_nodes(prepared, scheme.float_parts),
            calibrate_method=methods[method], extra_options=dict(CalibStridedMinMax=1))


def self_check(cfg: Config, fp32_file: str, reduced_file: str, items: list,
               num_classes: int, ignore_index: int = 255, backend: str = 'onnxruntime',
               precision: str = 'fp32') -> SelfCheck:
    """Segment ``items`` (dataset, index) as mmseg's test does with ``fp32_file`` in fp32
    and with ``reduced_file`` (an int8 file, or ``fp32_file`` again with ``precision``
    bf16) at ``precision``, both in ``backend``; compare."""
    from mmseg.evaluation import IoUMetric
    fp32 = _segmentor(cfg, fp32_file, backend=backend)
    reduced = _segmentor(cfg, reduced_file, backend=backend, precision=precision)
    equal = pixels = 0
    areas = {'fp32': [], 'reduced': []}
    for item in items:
        results = dict(fp32=_predict(fp32, item), reduced=_predict(reduced, item))
        labels = {k: r.pred_sem_seg.data[0] for k, r in results.items()}
        equal += int((labels['fp32'] == labels['reduced']).sum())
        pixels += labels['fp32'].numel()
        if 'gt_sem_seg' in results['fp32']:
            truth = results['fp32'].gt_sem_seg.data[0].to(labels['fp32'])
            for name, predicted in labels.items():
                areas[name].append(IoUMetric.intersect_and_union(predicted, truth, num_classes,
                                                                 ignore_index))

    def miou(per_image) -> Optional[float]:
        if len(per_image) != len(items):
            return None
        totals = [sum(area[k] for area in per_image) for k in range(4)]
        iou = IoUMetric.total_area_to_metrics(*totals, metrics=['mIoU'])['IoU']
        return float(np.round(np.nanmean(iou) * 100, 2))

    return SelfCheck(len(items), equal / pixels, miou(areas['fp32']), miou(areas['reduced']),
                     'bf16' if precision == 'bf16' else 'int8', backend)


def _test_pipeline(cfg: Config) -> list:
    return copy.deepcopy(next(iter(dataloader_datasets(cfg, ['test_dataloader'])))[1].pipeline)


def quantize_onnx(cfg: Config, fp32_file: str, int8_file: str,
                  calib_images: int = CALIB_IMAGES, val_images: int = VAL_IMAGES,
                  min_agreement: float = MIN_AGREEMENT, seed: int = 0,
                  method: str = 'minmax', scheme: Int8Scheme = Int8Scheme(),
                  backend: str = 'onnxruntime') -> QuantizationReport:
    """Quantize ``fp32_file`` (an fp32 logits export of the model of ``cfg``) to
    ``int8_file``.

    Args:
        cfg: the model's config; its ``train_dataloader`` dataset gives the calibration
            images, its ``val_dataloader`` dataset (else ``test_dataloader``'s) the check
            images, its test dataloader's pipeline, ``model.data_preprocessor`` and
            ``model.test_cfg`` process both, and the ``ignore_index`` of that set's evaluator
            (default 255) applies to the mIoU.
        calib_images: training images to calibrate on, drawn with ``seed`` (all if fewer).
        val_images: held-out images to check on, drawn with ``seed`` from the validation
            images that are not among the calibration images (all if fewer).
        min_agreement: smallest accepted fraction of pixels with equal int8 and fp32 labels
            (it falls with the model's uncertainty: docs/deploy.md).
        method: how activation ranges are calibrated, one of :data:`CALIBRATION_METHODS`.
        scheme: the int8 graph's form (:class:`Int8Scheme`).
        backend: the runtime that runs both files in the self-check (``'onnxruntime'`` or
            ``'openvino'``); calibration runs in ONNX Runtime.

    The file is written under a temporary name beside ``int8_file`` and renamed only if the
    check passed; otherwise :class:`AgreementError` gives the figures and no file is left.
    """
    from mmengine.registry import init_default_scope
    if method not in CALIBRATION_METHODS:
        raise ValueError(f'method must be one of {CALIBRATION_METHODS}, got {method!r}')
    if calib_images < 1 or val_images < 1:
        raise ValueError(f'calib_images and val_images must be >= 1, got {calib_images} '
                         f'and {val_images}')
    if os.path.abspath(fp32_file) == os.path.abspath(int8_file):
        raise ValueError(f'the int8 file would replace the fp32 file {fp32_file}; give '
                         'another --out')
    quantization_api()
    check_fp32_export(fp32_file)
    open_graph(fp32_file, backend)  # a backend that cannot run here fails before calibrating
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    pipeline = _test_pipeline(cfg)
    training = _indexed(_datasets(cfg, 'train_dataloader', pipeline))
    calibration = _draw(training, calib_images, seed)
    used: Set[str] = {_image_path(item) for item in calibration}
    check_items, num_classes, ignore_index = _check_images(cfg, pipeline, val_images, seed, used)

    inputs = _calibration_inputs(cfg, fp32_file, calibration)
    with atomic_output(int8_file) as tmp:
        quantize_graph(fp32_file, tmp, inputs, method, scheme)
        check = self_check(cfg, fp32_file, tmp, check_items, num_classes, ignore_index,
                           backend)
        if check.label_agreement < min_agreement:
            raise AgreementError(f'{describe_check(check)}, below --min-agreement '
                                 f'{100 * min_agreement:.2f}%{describe_mious(check)}; no file '
                                 'written')
    return QuantizationReport(method, seed, len(calibration), len(inputs), len(training), check)


def _check_images(cfg: Config, pipeline: list, count: int, seed: int, used: Set[str]):
    """``count`` images of the validation set (else the test set) drawn with ``seed`` from
    those not in ``used``; the number of classes and the evaluator's ``ignore_index``."""
    val_loader = 'val_dataloader' if cfg.get('val_dataloader') else 'test_dataloader'
    held_out = [item for item in _indexed(_datasets(cfg, val_loader, pipeline))
                if _image_path(item) not in used]
    if not held_out:
        raise CalibrationDataError(f'every image of {val_loader} is a calibration image; '
                                   'the self-check needs held-out images')
    items = _draw(held_out, count, seed)
    evaluator = cfg.get(val_loader.replace('dataloader', 'evaluator')) or {}
    ignore_index = evaluator.get('ignore_index', 255) if isinstance(evaluator, dict) else 255
    return items, len(items[0][0].metainfo['classes']), ignore_index


def check_bf16(cfg: Config, fp32_file: str, val_images: int = VAL_IMAGES,
               min_agreement: float = MIN_AGREEMENT, seed: int = 0) -> SelfCheck:
    """The self-check of :func:`quantize_onnx` for OpenVINO's bf16 inference of
    ``fp32_file``: ``val_images`` validation images drawn with ``seed``, segmented in bf16
    and in fp32 (both OpenVINO); :class:`AgreementError` below ``min_agreement``. No file
    is written: bf16 is a setting of the runtime (``--precision bf16``)."""
    from mmengine.registry import init_default_scope
    if val_images < 1:
        raise ValueError(f'val_images must be >= 1, got {val_images}')
    if not os.path.isfile(fp32_file):
        raise ModelNotFoundError(f'ONNX file not found: {fp32_file}')
    outputs = open_graph(fp32_file, 'openvino').output_names
    if outputs != ['logits']:
        raise NotQuantizableError(f'{fp32_file} outputs {outputs}; the check compares logits '
                                  'inside mmseg\'s test: export with --output logits')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    items, num_classes, ignore_index = _check_images(cfg, _test_pipeline(cfg), val_images,
                                                     seed, set())
    check = self_check(cfg, fp32_file, fp32_file, items, num_classes, ignore_index,
                       'openvino', 'bf16')
    if check.label_agreement < min_agreement:
        raise AgreementError(f'{describe_check(check)}, below --min-agreement '
                             f'{100 * min_agreement:.2f}%{describe_mious(check)}')
    return check


def describe_mious(check: SelfCheck) -> str:
    """The self-check's mIoUs as printed after its agreement."""
    if check.miou_fp32 is None:
        return ' (no annotations, no mIoU)'
    return f' (mIoU fp32 {check.miou_fp32:.2f}, {check.reduced} {check.miou_reduced:.2f})'


def describe_check(check: SelfCheck) -> str:
    """E.g. ``int8 labels equal the fp32 labels on 99.75% of the pixels of 4 held-out
    images``, naming the backend when it is OpenVINO (:func:`describe_mious` gives the
    mIoUs)."""
    where = ' (OpenVINO)' if check.backend == 'openvino' else ''
    return (f'{check.reduced} labels equal the fp32 labels{where} on '
            f'{100 * check.label_agreement:.2f}% of the pixels of {check.images} held-out '
            'images')
