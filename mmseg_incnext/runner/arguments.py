"""The command-line arguments tools/train.py and tools/test.py share with mmseg's tools."""
import argparse
import os

from mmengine.config import DictAction


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, ``--launcher`` and ``--local_rank`` as mmseg's tools take them, and
    ``--skip-data-check``."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--skip-data-check', action='store_true',
                        help='do not decode and check every dataset file before the run')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_run_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and export ``LOCAL_RANK`` as older launchers pass it only as an argument."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--precision``: the runtime that runs an ``.onnx`` model and the
    precision it computes in (:func:`check_backend_arguments` checks them)."""
    from mmseg_incnext.deploy.onnx_runtime import BACKENDS, PRECISIONS
    parser.add_argument('--backend', choices=BACKENDS, default=None,
                        help='runtime of an .onnx model (default onnxruntime)')
    parser.add_argument('--precision', default='fp32',
                        choices=sorted({p for ps in PRECISIONS.values() for p in ps}),
                        help='inference precision of an .onnx model: fp32 (default) or, with '
                        '--backend openvino, bf16 (fp32 where the CPU has no native bf16, '
                        'which the run prints)')


def check_backend_arguments(args: argparse.Namespace, onnx: bool) -> None:
    """Exit with the reason where ``--backend``/``--precision`` cannot run the model: given
    for a PyTorch checkpoint, a precision the backend does not run, or the backend's package
    missing. Sets ``args.backend`` to its default for an ``.onnx`` model."""
    from mmseg_incnext.deploy.onnx_runtime import check_backend
    if not onnx:
        if args.backend or args.precision != 'fp32':
            raise SystemExit('--backend and --precision run an .onnx model; the checkpoint '
                             'given is a PyTorch one (export it with tools/export_onnx.py)')
        return
    args.backend = args.backend or 'onnxruntime'
    try:
        check_backend(args.backend, args.precision)
    except (ValueError, ImportError) as err:
        raise SystemExit(f'error: {err}')
