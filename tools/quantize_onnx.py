"""Quantize an fp32 ONNX export to int8 (calibrated), and keep it only if it checks out.

    python tools/quantize_onnx.py CONFIG MODEL_FP32.onnx --out MODEL_INT8.onnx
        [--calib-images N] [--val-images M] [--min-agreement P] [--seed S]
        [--method minmax|entropy|percentile] [--quant-format qdq|qoperator] [--per-tensor]
        [--float-parts depthwise|resize|all_but_conv ...] [--backend onnxruntime|openvino]
    python tools/quantize_onnx.py CONFIG MODEL_FP32.onnx --precision bf16 --backend openvino
        [--val-images M] [--min-agreement P] [--seed S]

MODEL_FP32.onnx is a ``tools/export_onnx.py`` file with ``--output logits`` (with
``--dynamic`` for any image size). ONNX Runtime's static quantization (by default QDQ,
per-channel int8 weights, uint8 activations; the form options choose another) is calibrated
on N images drawn with seed S from the config's training set, through the config's test
pipeline and data preprocessor. Then both files segment M held-out images of the config's
validation set as ``tools/test.py`` does; the label agreement and both mIoUs are printed,
and the file is written only if the agreement is at least P. The int8 file runs wherever
the fp32 one does (``tools/test.py``, ``tools/image_demo.py``). Needs ``pip install -e .[deploy]``.

With ``--backend openvino`` the self-check runs both files in OpenVINO (which runs the same
QDQ file; calibration stays ONNX Runtime's). ``--precision bf16`` checks OpenVINO's bf16
inference of the fp32 file against its fp32 inference on the same held-out images, with
the same agreement test, and writes no file (bf16 is ``--precision bf16`` of
``tools/test.py`` and ``tools/image_demo.py``); it says whether this CPU has native bf16.
Needs ``pip install -e .[openvino]``.
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402

import mmseg_incnext.utils.stack_fixes  # noqa: F401,E402  (atomic writes, like every tool)
from mmseg_incnext.deploy.quantize import (  # noqa: E402
    CALIB_IMAGES, CALIBRATION_METHODS, FLOAT_PARTS, MIN_AGREEMENT, QUANT_FORMATS, VAL_IMAGES,
    Int8Scheme, QuantizationError, check_bf16, describe_mious, quantize_onnx)
from mmseg_incnext.deploy.onnx_runtime import BACKENDS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('model', help='the fp32 .onnx file (tools/export_onnx.py)')
    parser.add_argument('--out', help='the int8 .onnx file to write (not with --precision '
                        'bf16)')
    parser.add_argument('--precision', choices=('int8', 'bf16'), default='int8',
                        help='int8: write a calibrated int8 file; bf16: check OpenVINO\'s bf16 '
                        'inference of the fp32 file (default int8)')
    parser.add_argument('--backend', choices=BACKENDS, default='onnxruntime',
                        help='the runtime that runs the self-check (default onnxruntime)')
    parser.add_argument('--calib-images', type=int, default=CALIB_IMAGES,
                        help='training images to calibrate on (default %(default)s)')
    parser.add_argument('--val-images', type=int, default=VAL_IMAGES,
                        help='held-out validation images to check on (default %(default)s)')
    parser.add_argument('--min-agreement', type=float, default=MIN_AGREEMENT,
                        help='smallest accepted fraction of pixels whose int8 label equals '
                        'the fp32 label (default %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the image draws')
    parser.add_argument('--method', choices=CALIBRATION_METHODS, default='minmax',
                        help='calibration of the activation ranges (default minmax)')
    parser.add_argument('--quant-format', choices=QUANT_FORMATS, default='qdq',
                        help='qdq: quantize/dequantize pairs ONNX Runtime fuses; qoperator: '
                        'integer operators in the file (default qdq)')
    parser.add_argument('--per-tensor', action='store_true',
                        help='one weight scale per tensor (default: per output channel)')
    parser.add_argument('--float-parts', nargs='+', choices=FLOAT_PARTS, default=[],
                        help='parts left in float: the depthwise convolutions, every Resize, '
                        'or all but the convolutions')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings (e.g. the data roots), xxx=yyy format')
    args = parser.parse_args()

    if args.precision == 'bf16' and (args.backend != 'openvino' or args.out):
        parser.error('--precision bf16 checks OpenVINO\'s bf16 inference: give --backend '
                     'openvino and no --out (no file is written)')
    if args.precision == 'int8' and not args.out:
        parser.error('the int8 file needs --out')
    if not os.path.isfile(args.config):
        raise SystemExit(f'Config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.precision == 'bf16':
        check_precision(cfg, args)
        return
    scheme = Int8Scheme(quant_format=args.quant_format, per_channel=not args.per_tensor,
                        float_parts=tuple(args.float_parts))
    try:
        report = quantize_onnx(cfg, args.model, args.out, args.calib_images, args.val_images,
                               args.min_agreement, args.seed, args.method, scheme,
                               args.backend)
    except (QuantizationError, ImportError) as err:
        raise SystemExit(f'{type(err).__name__}: {err}')
    check = report.check
    print(f'int8 form: {scheme.name}' + (', self-check in OpenVINO'
                                         if args.backend == 'openvino' else ''))
    print(f'calibration: {report.method}, {report.calibration_images} of '
          f'{report.training_images} training images (seed {report.seed}), '
          f'{report.calibration_inputs} inputs through the test pipeline')
    print(f'self-check on {check.images} held-out images: int8 labels equal fp32 on '
          f'{100 * check.label_agreement:.2f}% of the pixels{describe_mious(check)}')
    print(f'wrote {args.out}')


def check_precision(cfg, args):
    """--precision bf16: the self-check of OpenVINO's bf16 inference (the segmentors log
    the precision that ran, and whether bf16 is native)."""
    try:
        check = check_bf16(cfg, args.model, args.val_images, args.min_agreement, args.seed)
    except (QuantizationError, ImportError, FileNotFoundError) as err:
        raise SystemExit(f'{type(err).__name__}: {err}')
    print(f'self-check on {check.images} held-out images: bf16 labels equal fp32 on '
          f'{100 * check.label_agreement:.2f}% of the pixels{describe_mious(check)}')


if __name__ == '__main__':
    main()
