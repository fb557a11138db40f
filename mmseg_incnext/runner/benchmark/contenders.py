"""The models the benchmark compares, and the tables they form.

Backbones: ours (as built, without its output norms, switched to deploy, and control copies) against
timm's InceptionNeXt, ConvNeXt-T (timm and mmpretrain) and ResNet-50. Segmentors: our
UperNet and FPN configs against the same heads on timm's InceptionNeXt-T and on ConvNeXt-T,
the backbones alone inside UperNet, and our segmentors exported to ONNX and run by ONNX
Runtime (fp32, int8) and OpenVINO (fp32, bf16, the same int8 file).
The segmentors are built from this checkout's ``configs/``.
"""
import os
import re
import tempfile
import warnings
from functools import partial
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from mmseg_incnext.runner.benchmark.specs import Comparison, Features, ModelSpec
from mmseg_incnext.utils.compat import timm_stage_outputs

if TYPE_CHECKING:
    from mmseg_incnext.deploy.quantize import Int8Scheme

# The checkout this package runs from (the benchmark builds the segmentors of its configs/).
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3))
SEGMENTOR_BACKBONES = ('ours', 'ours, no output norms', 'timm', 'convnext')


def build_ours(arch: str = 'tiny', channels_last: bool = True, deploy: bool = False,
               **kwargs) -> nn.Module:
    """Our backbone as our configs build it (``kwargs``: further InceptionNeXt keys), with
    ``deploy`` switched to deploy mode (norms and layer scales folded)."""
    import mmseg_incnext  # noqa: F401
    from mmseg.registry import MODELS
    model = MODELS.build(dict(type='InceptionNeXt', arch=arch, channels_last=channels_last,
                              **kwargs))
    return model.switch_to_deploy() if deploy else model


def build_timm(name: str) -> nn.Module:
    """timm's model ``name``, randomly initialised."""
    import timm
    return timm.create_model(name, pretrained=False)


def build_mmpretrain_convnext() -> nn.Module:
    """mmpretrain's ConvNeXt-T returning its four stages, as a segmentor uses it."""
    from mmpretrain.models import ConvNeXt
    return ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)


def build_segmentor(config: str, backbone: str = 'ours', channels_last: bool = True
                    ) -> nn.Module:
    """A segmentor from our ``config`` (relative to the checkout) with our backbone (with
    or without its output norms, built for ``channels_last``), or with timm's InceptionNeXt
    (features only, the same drop path) or mmseg's ConvNeXt-T in its place."""
    import mmseg_incnext  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mmseg_incnext.runner.device import replace_sync_bn
    if backbone not in SEGMENTOR_BACKBONES:
        raise ValueError(f'backbone must be one of {SEGMENTOR_BACKBONES}, got {backbone!r}')
    cfg = Config.fromfile(os.path.join(REPO_ROOT, config))
    ours = cfg.model.backbone
    ours.init_cfg = None
    if backbone == 'convnext':
        import mmpretrain.models  # noqa: F401  (registers mmpretrain.ConvNeXt)
        # as in mmseg's convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py
        cfg.model.backbone = dict(
            type='mmpretrain.ConvNeXt', arch='tiny', out_indices=[0, 1, 2, 3],
            drop_path_rate=0.4, layer_scale_init_value=1.0, gap_before_final_norm=False,
            init_cfg=None)
    elif backbone == 'timm':
        import mmpretrain.models  # noqa: F401  (registers mmpretrain.TIMMBackbone)
        cfg.model.backbone = dict(
            type='mmpretrain.TIMMBackbone', model_name=f'inception_next_{ours.arch}',
            features_only=True, out_indices=(0, 1, 2, 3),
            drop_path_rate=ours.get('drop_path_rate', 0.0))
    else:
        ours.channels_last = channels_last
        if backbone == 'ours, no output norms':
            ours.out_norm_cfg = None
    replace_sync_bn(cfg.model)
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


# (config, int8 scheme, output) -> file
_EXPORTS: Dict[Tuple[str, Optional['Int8Scheme'], str], str] = {}
_EXPORT_FOLDER: List[tempfile.TemporaryDirectory] = []
# Noise images the int8 graph is calibrated on: enough for its speed (the benchmark's
# subject), not for its accuracy, which tools/quantize_onnx.py calibrates on data and checks.
CALIBRATION_NOISE = dict(count=2, height=128, width=128, seed=0)
# The graph has free H and W; a small export size keeps its verification cheap.
EXPORT_SHAPE = (128, 128)


def export_file_name(config: str, scheme: Optional['Int8Scheme'] = None,
                     output: str = 'logits') -> str:
    """``configs/fpn/incnext_t_ade20k.py`` -> ``configs_fpn_incnext_t_ade20k.onnx``; with an
    int8 ``scheme``, ``..._int8_`` and the scheme's name before ``.onnx``, with ``output``
    labels ``..._labels.onnx`` (the folder is part of the name: UperNet's and FPN's configs
    share file names)."""
    suffix = '' if scheme is None else '_int8_' + re.sub(r'\W+', '_', scheme.name)
    suffix += '' if output == 'logits' else '_' + output
    return config[:-len('.py')].replace('/', '_') + suffix + '.onnx'


def onnx_file(config: str, scheme: Optional['Int8Scheme'] = None, output: str = 'logits'
              ) -> str:
    """Our segmentor of ``config`` with random weights, exported with free H and W and
    ``output`` (:func:`export_onnx`, verified), and with an int8 ``scheme`` quantized in
    that form (calibrated on :data:`CALIBRATION_NOISE`); each file made once per process."""
    key = (config, scheme, output)
    if key in _EXPORTS:
        return _EXPORTS[key]
    if not _EXPORT_FOLDER:
        _EXPORT_FOLDER.append(tempfile.TemporaryDirectory(prefix='mmseg-incnext-bench.'))
    path = os.path.join(_EXPORT_FOLDER[0].name, export_file_name(config, scheme, output))
    if scheme is not None:
        from mmseg_incnext.deploy.quantize import quantize_graph
        noise = np.random.default_rng(CALIBRATION_NOISE['seed']).standard_normal(
            (CALIBRATION_NOISE['count'], 1, 3, CALIBRATION_NOISE['height'],
             CALIBRATION_NOISE['width'])).astype(np.float32)
        quantize_graph(onnx_file(config, output=output), path, list(noise), scheme=scheme)
    else:
        from mmseg_incnext.deploy.onnx_export import export_onnx
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
            warnings.filterwarnings('ignore', message='Constant folding')
            export_onnx(build_segmentor(config), path, EXPORT_SHAPE, dynamic=True,
                        output=output)
    _EXPORTS[key] = path
    return path


def onnx_runtime_spec(name: str, config: str, scheme: Optional['Int8Scheme'] = None,
                      features: Optional[Callable[[nn.Module], Features]] = None,
                      backend: str = 'onnxruntime', precision: str = 'fp32') -> ModelSpec:
    """:func:`onnx_file` run by ``backend`` at ``precision`` (as ``tools/test.py`` runs an
    export), timed by ``features`` (default :func:`onnx_logits`); inference only."""
    def build() -> nn.Module:
        from mmengine.config import Config

        from mmseg_incnext.deploy.onnx_runtime import OnnxSegmentor
        head = Config.fromfile(os.path.join(REPO_ROOT, config)).model.decode_head
        return OnnxSegmentor(onnx_file(config, scheme), head.num_classes,
                             head.align_corners, backend=backend, precision=precision)
    return ModelSpec(name, build, features or onnx_logits, modes=('infer', ),
                     op_seconds=partial(onnx_op_seconds, config, scheme, 'logits', backend,
                                        precision),
                     arithmetic='int8' if scheme else precision)


def onnx_logits(model: nn.Module) -> Features:
    """An ONNX Runtime segmentor's logits."""
    return lambda x: model.encode_decode(x, [])


def onnx_logits_argmax(model: nn.Module) -> Features:
    """An ONNX Runtime segmentor's labels, as mmseg's post-processing takes them from the
    logits."""
    return lambda x: model.encode_decode(x, []).argmax(dim=1)


class OnnxLabels(nn.Module):
    """An export with ``--output labels`` run by ONNX Runtime: the labels come out of the
    graph, not out of the logits."""

    def __init__(self, onnx_path: str) -> None:
        super().__init__()
        from mmseg_incnext.deploy.onnx_runtime import open_graph
        self.graph = open_graph(onnx_path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from mmseg_incnext.deploy.onnx_runtime import run_images
        return run_images(self.graph, images)


def onnx_labels_spec(name: str, config: str) -> ModelSpec:
    """Our segmentor of ``config`` exported with ``--output labels``, run by ONNX Runtime;
    inference only."""
    return ModelSpec(name, lambda: OnnxLabels(onnx_file(config, output='labels')),
                     module_features, modes=('infer', ),
                     op_seconds=partial(onnx_op_seconds, config, None, 'labels', 'onnxruntime',
                                        'fp32'))


def onnx_op_seconds(config: str, scheme: Optional['Int8Scheme'], output: str, backend: str,
                    precision: str, x: torch.Tensor) -> Dict[str, float]:
    """``backend``'s seconds per op type for :func:`onnx_file` run at ``precision`` on
    ``x`` (``--profile``)."""
    from mmseg_incnext.deploy.onnx_runtime import op_type_seconds
    return op_type_seconds(onnx_file(config, scheme, output), x, backend, precision)


def module_features(model: nn.Module) -> Features:
    """The model's forward."""
    return model


def segmentor_logits(model: nn.Module) -> Features:
    """A segmentor's logits (``mode='tensor'``)."""
    return lambda x: model(x, mode='tensor')


def segmentor_backbone(model: nn.Module) -> Features:
    """The segmentor's ``extract_feat`` alone, on the same input."""
    return model.extract_feat


def backbone_comparisons(arch: str) -> List[Comparison]:
    """Our backbone ``arch`` and its variants against timm's InceptionNeXt of that size,
    ConvNeXt-T and ResNet-50, with two control pairs."""
    letter = arch[0].upper()

    def our_model(suffix: str, modes=('infer', 'train'), **kwargs) -> ModelSpec:
        return ModelSpec(f'InceptionNeXt-{letter} (ours{suffix})',
                         partial(build_ours, arch, **kwargs), module_features,
                         builds_layout=True, modes=modes)

    def control_copy(spec: ModelSpec) -> ModelSpec:
        return ModelSpec(f'{spec.name} control copy', spec.build, spec.features,
                         builds_layout=True, modes=spec.modes)

    timm_ref = ModelSpec(f'timm-InceptionNeXt-{letter}',
                         partial(build_timm, f'inception_next_{arch}'), timm_stage_outputs)
    # timm's features are the raw stage outputs: this one does the same work
    no_out_norms = our_model(', no output norms', out_norm_cfg=None)
    convnext = ModelSpec('ConvNeXt-T', partial(build_timm, 'convnext_tiny'), timm_stage_outputs)
    mmpretrain_convnext = ModelSpec('mmpretrain-ConvNeXt-T', build_mmpretrain_convnext,
                                    module_features)
    default = our_model('')
    control, no_out_norms_control = control_copy(default), control_copy(no_out_norms)
    models = (default, no_out_norms, our_model(', deployed', modes=('infer', ), deploy=True),
              control, no_out_norms_control, timm_ref,
              convnext, mmpretrain_convnext,
              ModelSpec('ResNet-50', partial(build_timm, 'resnet50'), timm_stage_outputs))
    return [Comparison(f'backbone {arch}', models,
                       {'timm IncNeXt': (timm_ref, ),
                        'ConvNeXt-T': (convnext, mmpretrain_convnext)},
                       ((default, control), (no_out_norms, no_out_norms_control)))]


UPERNET, FPN = 'configs/upernet/incnext_t_ade20k.py', 'configs/fpn/incnext_t_ade20k.py'


def segmentor_logits_bf16(model: nn.Module) -> Features:
    """A segmentor's logits under CPU autocast to bf16 (the convolutions and matrix
    products in bf16)."""
    def logits(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return model(x, mode='tensor')
    return logits


def _segmentor_spec(name: str, config: str, backbone: str,
                    features: Callable[[nn.Module], Features], **kwargs) -> ModelSpec:
    return ModelSpec(name, partial(build_segmentor, config, backbone), features,
                     builds_layout=backbone.startswith('ours'), **kwargs)


UPERNET_OURS = _segmentor_spec('UperNet-T (ours)', UPERNET, 'ours', segmentor_logits)
UPERNET_TIMM = _segmentor_spec('UperNet-timm-IncNeXt-T', UPERNET, 'timm', segmentor_logits)
UPERNET_CONVNEXT = _segmentor_spec('UperNet-ConvNeXt-T', UPERNET, 'convnext', segmentor_logits)
BACKBONE_OURS = _segmentor_spec('UperNet-T (ours) [backbone only]', UPERNET, 'ours',
                                segmentor_backbone)
BACKBONE_CONVNEXT = _segmentor_spec('UperNet-ConvNeXt-T [backbone only]', UPERNET, 'convnext',
                                    segmentor_backbone)
FPN_OURS = _segmentor_spec('FPN-T (ours)', FPN, 'ours', segmentor_logits)
FPN_TIMM = _segmentor_spec('FPN-timm-IncNeXt-T', FPN, 'timm', segmentor_logits)
FPN_CONVNEXT = _segmentor_spec('FPN-ConvNeXt-T', FPN, 'convnext', segmentor_logits)


def int8_variants() -> List['Int8Scheme']:
    """The int8 forms :func:`onnx_comparisons` times against the default one: the other
    format, per-tensor weights, and each part left in float."""
    from mmseg_incnext.deploy.quantize import FLOAT_PARTS, Int8Scheme
    return [Int8Scheme(quant_format='qoperator'), Int8Scheme(per_channel=False)] + [
        Int8Scheme(float_parts=(part, )) for part in FLOAT_PARTS]


def onnx_comparisons(variants: bool = False) -> List[Comparison]:
    """Our UperNet and FPN exported to ONNX and run by ONNX Runtime in fp32 and int8 (with a
    control copy), against our PyTorch eager path and the fp32 file;
    the fp32 labels export (with a control copy) against the logits export and an argmax;
    with ``variants``, a table per head of :func:`int8_variants` against the default int8
    file and its control copy."""
    from mmseg_incnext.deploy.quantize import Int8Scheme
    default = Int8Scheme()
    comparisons = []
    for name, config, eager in (('UperNet', UPERNET, UPERNET_OURS), ('FPN', FPN, FPN_OURS)):
        fp32 = onnx_runtime_spec(f'{name}-T (ours, ONNX Runtime)', config)
        int8 = onnx_runtime_spec(f'{name}-T (ours, ONNX Runtime int8)', config, default)
        control = onnx_runtime_spec(f'{name}-T (ours, ONNX Runtime int8) control copy', config,
                                    default)
        comparisons.append(Comparison(f'{name}, ONNX Runtime', (eager, fp32, int8, control),
                                      {'PyTorch': (eager, ), 'ORT fp32': (fp32, )},
                                      ((int8, control), ), config))
        argmax = onnx_runtime_spec(f'{name}-T (ours, ONNX Runtime, logits + argmax)', config,
                                   features=onnx_logits_argmax)
        labels = onnx_labels_spec(f'{name}-T (ours, ONNX Runtime, labels output)', config)
        labels_control = onnx_labels_spec(
            f'{name}-T (ours, ONNX Runtime, labels output) control copy', config)
        comparisons.append(Comparison(f'{name}, ONNX Runtime labels', (argmax, labels,
                                                                       labels_control),
                                      {'logits + argmax': (argmax, )},
                                      ((labels, labels_control), )))
        if variants:
            others = tuple(onnx_runtime_spec(f'{name}-T (ours, ONNX Runtime int8, '
                                             f'{scheme.name})', config, scheme)
                           for scheme in int8_variants())
            comparisons.append(Comparison(f'{name}, int8 forms', (int8, control) + others,
                                          {'int8 default': (int8, )}, ((int8, control), )))
    return comparisons


def openvino_comparisons() -> List[Comparison]:
    """Per head, OpenVINO running the fp32 file in fp32 and in bf16 (fp32 where the CPU has
    no native bf16: the benchmark's first line says which) and the ONNX Runtime int8 file
    (with a control copy), against the eager path (also under bf16 autocast) and ONNX
    Runtime's fp32 and int8."""
    from mmseg_incnext.deploy.quantize import Int8Scheme
    comparisons = []
    for name, config, eager in (('UperNet', UPERNET, UPERNET_OURS), ('FPN', FPN, FPN_OURS)):
        ort_fp32 = onnx_runtime_spec(f'{name}-T (ours, ONNX Runtime)', config)
        ort_int8 = onnx_runtime_spec(f'{name}-T (ours, ONNX Runtime int8)', config,
                                     Int8Scheme())

        def openvino(label: str, scheme=None, precision='fp32', suffix='') -> ModelSpec:
            return onnx_runtime_spec(f'{name}-T (ours, OpenVINO {label}){suffix}', config,
                                     scheme, backend='openvino', precision=precision)
        fp32, bf16 = openvino('fp32'), openvino('bf16', precision='bf16')
        int8 = openvino('int8', Int8Scheme())
        control = openvino('int8', Int8Scheme(), suffix=' control copy')
        eager_bf16 = _segmentor_spec(f'{name}-T (ours, bf16 autocast)', config, 'ours',
                                     segmentor_logits_bf16, modes=('infer', ),
                                     arithmetic='bf16')
        comparisons.append(Comparison(
            f'{name}, OpenVINO', (eager, eager_bf16, ort_fp32, ort_int8, fp32, bf16, int8,
                                  control),
            {'PyTorch': (eager, ), 'ORT fp32': (ort_fp32, ), 'ORT int8': (ort_int8, )},
            ((int8, control), ), config))
    return comparisons


def segmentor_comparisons() -> List[Comparison]:
    """UperNet and FPN against the same heads on timm's InceptionNeXt-T and on ConvNeXt-T
    (ours also without its output norms, and a control copy), and the backbones alone
    inside UperNet, which shows how much of UperNet's time a backbone can save at all."""
    def family(name: str, config: str, ours: ModelSpec, timm: ModelSpec,
               convnext: ModelSpec) -> Comparison:
        control = _segmentor_spec(f'{name}-T (ours) control copy', config, 'ours',
                                  segmentor_logits)
        return Comparison(name, (
            ours, _segmentor_spec(f'{name}-T (ours, no output norms)', config,
                                  'ours, no output norms', segmentor_logits),
            control, timm, convnext), {'timm IncNeXt': (timm, ), 'ConvNeXt': (convnext, )},
            ((ours, control), ))

    return [
        family('UperNet', UPERNET, UPERNET_OURS, UPERNET_TIMM, UPERNET_CONVNEXT),
        Comparison('the same backbones alone', (BACKBONE_OURS, BACKBONE_CONVNEXT),
                   {'ConvNeXt': (BACKBONE_CONVNEXT, )}),
        family('FPN', FPN, FPN_OURS, FPN_TIMM, FPN_CONVNEXT),
    ]
