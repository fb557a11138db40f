"""Speed and memory benchmark: InceptionNeXt against its peers, side by side.

The command line of ``tools/benchmark.py`` (its docstring says the method): the flags, the
settings swept (shape x batch x mode), the runs of each setting with their control-pair
gate, and the printed and JSON results.
"""
import argparse
import itertools
import json
import os
from typing import List, Optional, Sequence, Tuple

import torch

from mmseg_incnext.runner.benchmark.contenders import (backbone_comparisons, onnx_comparisons,
                                                       openvino_comparisons, segmentor_comparisons)
from mmseg_incnext.runner.benchmark.floor import floor_rows, format_floor, segmentor_macs
from mmseg_incnext.runner.benchmark.report import (control_gaps, format_control_gaps,
                                                   format_ratios_over_runs, format_table,
                                                   is_quiet, ratios_over_runs,
                                                   report_upernet_bound, summarise)
from mmseg_incnext.runner.benchmark.specs import select
from mmseg_incnext.runner.benchmark.timing import LAYOUTS, measure
from mmseg_incnext.utils.compat import onednn_version

AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
MAX_ATTEMPTS_PER_RUN = 3


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The benchmark's flags (``--help`` says each)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--level', choices=('backbone', 'segmentor'), default='backbone')
    p.add_argument('--arch', default='tiny', help='InceptionNeXt arch of the backbone level')
    p.add_argument('--batch', type=int, nargs='+', default=None,
                   help='batch sizes to sweep (default 8 backbone, 2 segmentor: BN training '
                        'needs 2)')
    p.add_argument('--sizes', type=int, nargs='+', default=None,
                   help='input sizes: square up to 512, 512 x L for L > 512 (as ADE20K test '
                        'images, up to 512x2048); default 224 (backbones) / 512 (segmentors)')
    p.add_argument('--modes', nargs='+', choices=('infer', 'train'), default=['infer', 'train'])
    p.add_argument('--layouts', nargs='+', choices=tuple(LAYOUTS), default=list(LAYOUTS))
    p.add_argument('--onnx', action='store_true',
                   help='segmentor level: ONNX Runtime against PyTorch eager (inference); '
                        'needs pip install -e .[deploy]')
    p.add_argument('--openvino', action='store_true',
                   help='segmentor level: OpenVINO (fp32, bf16, the int8 file) beside ONNX '
                        'Runtime and PyTorch eager (inference); needs pip install -e '
                        '.[deploy,openvino]')
    p.add_argument('--int8-variants', action='store_true',
                   help='with --onnx: also time the other int8 forms (QOperator, per-tensor '
                        'weights, parts left in float) against the default int8 file')
    p.add_argument('--only', nargs='+', default=None,
                   help='substrings of model names to keep (references are always kept)')
    p.add_argument('--threads', type=int, default=os.cpu_count(),
                   help='torch intra-op threads (default: all cores)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3, help='timed rounds (interleaved)')
    p.add_argument('--iters', type=int, default=1, help='steps per timed round')
    p.add_argument('--runs', type=int, default=1,
                   help='independent measurements of each setting (models rebuilt); with '
                        'more than one, a table of each run\'s ratios and their median follows')
    p.add_argument('--max-control-gap', type=float, default=None, metavar='PCT',
                   help='a run whose control pairs ran more than PCT%% apart is measured again '
                        f'(up to {MAX_ATTEMPTS_PER_RUN}x --runs attempts in all); only runs '
                        'within it count in the ratios over runs')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', choices=tuple(AMP_DTYPES), default='none',
                   help='autocast dtype (meant for CUDA; CPU autocast runs too)')
    p.add_argument('--no-memory', action='store_true', help='skip the peak memory pass')
    p.add_argument('--profile', type=int, default=0, metavar='N',
                   help='after timing, print the N ops taking most time in each contender')
    p.add_argument('--json', default=None, help='write the results here')
    return p.parse_args(argv)


def input_shape(long_side: int) -> Tuple[int, int]:
    """Square up to 512; beyond, a 512-high image (ADE20K's test scale, up to the paper's
    512x2048 MAC setting), so the work grows with the long side."""
    return (long_side, long_side) if long_side <= 512 else (512, long_side)


def machine(openvino: bool = False) -> dict:
    """What torch reports about the machine it runs on: version, the vector instruction
    set its CPU kernels use, the oneDNN it was built with, and its threads; with
    ``openvino``, OpenVINO's CPU capabilities (whether bf16 is native)."""
    host = dict(torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                onednn='.'.join(map(str, onednn_version())) or None,
                threads=torch.get_num_threads())
    if openvino:
        from mmseg_incnext.deploy.openvino_runtime import cpu_capabilities
        host['openvino_cpu_capabilities'] = cpu_capabilities()
    return host


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark of ``argv`` (the command's flags); print and return the results."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    segmentor = args.level == 'segmentor'
    batches = args.batch or [2 if segmentor else 8]
    shapes = [input_shape(s) for s in args.sizes or ([512] if segmentor else [224])]
    if (args.onnx or args.openvino) and not segmentor:
        raise SystemExit('--onnx and --openvino compare whole segmentors: add --level '
                         'segmentor')
    if args.openvino:
        from mmseg_incnext.deploy.onnx_runtime import check_backend
        try:
            check_backend('openvino')
        except ImportError as err:
            raise SystemExit(str(err))
    if args.int8_variants and not args.onnx:
        raise SystemExit('--int8-variants compares ONNX Runtime int8 files: add --onnx')
    onnx = onnx_comparisons(args.int8_variants) if args.onnx else []
    onnx += openvino_comparisons() if args.openvino else []
    comparisons = select(segmentor_comparisons() + onnx
                         if segmentor else backbone_comparisons(args.arch), args.only)
    models = list(dict.fromkeys(m for c in comparisons for m in c.models))
    host = machine(args.openvino)
    result = dict(args=vars(args), device=str(device), **host, runs=[])
    print(f"torch {host['torch']}, CPU {host['cpu_capability']}, oneDNN "
          f"{host['onednn'] or 'none'}, device {device}, threads {host['threads']}, batch "
          f'{batches}, amp {args.amp}, warmup {args.warmup}, repeats {args.repeats} x '
          f'{args.iters} iters (interleaved)')
    if args.openvino:
        capabilities = host['openvino_cpu_capabilities']
        print(f'OpenVINO CPU capabilities {", ".join(capabilities)}: bf16 rows run '
              + ('bf16 (native)' if 'BF16' in capabilities else 'fp32 (no native bf16 here)'))
    limit = args.max_control_gap
    if limit is not None and not any(c.controls for c in comparisons):
        raise SystemExit('--max-control-gap needs a control pair: keep a model and its '
                         '"control copy" in --only')
    for (h, w), batch, mode in itertools.product(shapes, batches, args.modes):
        setting = f'{mode}, {h}x{w}, batch {batch}'
        kept_runs: List[List[dict]] = []
        for index in range(args.runs * (1 if limit is None else MAX_ATTEMPTS_PER_RUN)):
            if len(kept_runs) == args.runs:
                break
            torch.manual_seed(0)
            x = torch.randn(batch, 3, h, w, device=device)
            measurements = measure(models, args.layouts, mode, x, AMP_DTYPES[args.amp],
                                   args.warmup, args.repeats, args.iters, not args.no_memory,
                                   args.profile)
            rows = summarise(measurements, batch)
            gaps = {name: gap for c in comparisons for name, gap in control_gaps(c, rows).items()}
            quiet = is_quiet(gaps, limit)
            run = dict(mode=mode, height=h, width=w, batch=batch, run=index, rows=rows,
                       control_gaps=gaps, counted=quiet)
            suffix = f' (run {index + 1})' if args.runs > 1 or limit is not None else ''
            for comparison in comparisons:
                print(format_table(f'{comparison.title}, {setting}{suffix}', comparison, rows))
            if gaps:
                print(format_control_gaps(gaps, limit))
            if segmentor:
                run['upernet_bound'], line = report_upernet_bound(rows)
                if line:
                    print(line)
            for comparison in comparisons:
                if comparison.config and mode == 'infer':
                    macs = segmentor_macs(comparison.config, (h, w))
                    floors = floor_rows(comparison, rows, macs)
                    run.setdefault('floors', {})[comparison.title] = floors
                    print(format_floor(f'{comparison.title}, {setting}{suffix}', macs, floors))
            result['runs'].append(run)
            if quiet:
                kept_runs.append(rows)
        if len(kept_runs) < args.runs:
            print(f'\n{setting}: only {len(kept_runs)} of {index + 1} runs had their control '
                  f'pairs within {limit:g}%')
        if args.runs > 1 and kept_runs:
            for comparison in comparisons:
                ratios = ratios_over_runs(comparison, kept_runs)
                per_run = [control_gaps(comparison, rows) for rows in kept_runs]
                gaps = {name: [run_gaps[name] for run_gaps in per_run] for name in per_run[0]}
                result.setdefault('ratios_over_runs', []).append(
                    dict(title=comparison.title, mode=mode, height=h, width=w, batch=batch,
                         ratios=ratios, control_gaps=gaps))
                print(format_ratios_over_runs(
                    f'{comparison.title}, {setting}: ratios over {len(kept_runs)} runs',
                    ratios, gaps))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'\nwrote {args.json}')
    return result
