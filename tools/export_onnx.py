"""Export a trained segmentor to ONNX and verify the file with ONNX Runtime.

    python tools/export_onnx.py CONFIG CHECKPOINT --out model.onnx [--dynamic]

The graph is the whole segmentor as mmseg's test runs it (the InceptionNeXt backbone with
its norms folded by ``switch_to_deploy``, neck, decode head (a Mask2Former head: the
semantic logits of its ``predict``), bilinear resize to the input; no auxiliary head):
input ``images``,
normalised N x 3 x H x W float32 as the config's data preprocessor makes them; output
``logits`` (N x classes x H x W) or ``labels`` (N x H x W, int64). With ``--dynamic``
batch, height and width are free (any size, not only multiples of 32); otherwise only the
batch is. The file is written only if ONNX Runtime (with ``--backend onnxruntime openvino``
also OpenVINO, in fp32) reproduces PyTorch on the export size and, with ``--dynamic``, on
two other sizes (one odd); the figures are printed. Needs ``pip install -e .[deploy]``
(and ``.[openvino]`` for OpenVINO).
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import argparse
import os
import sys
import warnings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import mmseg_incnext.utils.stack_fixes  # noqa: F401,E402  (safe checkpoint reading)
from mmseg_incnext.deploy.mask2former_export import exportable  # noqa: E402
from mmseg_incnext.deploy.onnx_export import (  # noqa: E402
    OUTPUTS, ExportMismatchError, describe,
    export_onnx)
from mmseg_incnext.deploy.onnx_runtime import BACKENDS  # noqa: E402
from mmseg_incnext.runner.device import replace_sync_bn  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='trained segmentor checkpoint (.pth)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'),
                        help='example input size (default 512 512)')
    parser.add_argument('--dynamic', action='store_true',
                        help='free height and width (needed for sliding windows and TTA)')
    parser.add_argument('--output', choices=OUTPUTS, default='logits')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--atol', type=float, default=1e-3,
                        help='largest accepted |ONNX - PyTorch| logit difference')
    parser.add_argument('--min-agreement', type=float, default=0.999,
                        help='smallest accepted fraction of equal labels')
    parser.add_argument('--backend', nargs='+', choices=BACKENDS, default=['onnxruntime'],
                        help='runtimes that must reproduce PyTorch (default onnxruntime)')
    args = parser.parse_args()

    from mmengine.config import Config
    from mmseg.apis import init_model
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f'Checkpoint file not found: {args.checkpoint}')
    cfg = Config.fromfile(args.config)
    replace_sync_bn(cfg.model)  # identical in eval mode; SyncBN needs a process group
    model = exportable(init_model(cfg, args.checkpoint, device='cpu'))
    with warnings.catch_warnings():
        # the exporter's notes on shape arithmetic and constant folding; the verification
        # below decides whether the graph is right
        warnings.filterwarnings('ignore', category=__import__('torch').jit.TracerWarning)
        warnings.filterwarnings('ignore', message='Constant folding')
        try:
            results = export_onnx(model, args.out, tuple(args.shape), args.dynamic,
                                  args.output, args.opset, args.atol, args.min_agreement,
                                  args.backend)
        except (ExportMismatchError, ImportError) as err:
            raise SystemExit(str(err))
    print(f'wrote {args.out}; against PyTorch:')
    for result in results:
        print('  ' + describe(result))


if __name__ == '__main__':
    main()
