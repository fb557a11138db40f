"""The hardware's floor under a segmentor: its MACs over the CPU's peak MAC rate in the
number format a contender computes in, the peak measured here as a large matrix product
gives it. A contender at 1x its floor would spend all its time in matrix-product-speed
arithmetic; the distance above it is the time its runtime spends elsewhere (memory-bound
ops, layout changes, resizes, kernels short of the peak), which ``--profile`` breaks down.

Peaks, each the best of a few runs of a ``PEAK_SIZE`` cubed product with the benchmark's
threads: fp32 from torch's matrix product; bf16 from torch's in bf16, or fp32's where that
is faster (a CPU without native bf16, where runtimes compute bf16 requests in fp32); int8
from ONNX Runtime's (and, if installed, OpenVINO's) ``MatMulInteger``, the faster.
"""
import os
import tempfile
import time
from functools import lru_cache
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch

from mmseg_incnext.runner.benchmark.specs import Comparison

PEAK_SIZE = 2048
PEAK_REPEATS = 3


def _best_seconds(step: Callable[[], object]) -> float:
    step()  # warm-up
    best = float('inf')
    for _ in range(PEAK_REPEATS):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def _torch_peak(dtype: torch.dtype) -> float:
    a, b = (torch.randn(PEAK_SIZE, PEAK_SIZE).to(dtype) for _ in range(2))
    with torch.inference_mode():
        return PEAK_SIZE ** 3 / _best_seconds(lambda: torch.mm(a, b))


def _int8_matmul_file(folder: str) -> str:
    """An ONNX graph of one ``MatMulInteger`` (uint8 input times an int8 weight, as our
    int8 files quantize activations and weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    weight = np.random.default_rng(0).integers(-127, 128, (PEAK_SIZE, PEAK_SIZE), np.int8)
    graph = helper.make_graph(
        [helper.make_node('MatMulInteger', ['a', 'b'], ['y'])], 'int8_peak',
        [helper.make_tensor_value_info('a', TensorProto.UINT8, [PEAK_SIZE, PEAK_SIZE])],
        [helper.make_tensor_value_info('y', TensorProto.INT32, [PEAK_SIZE, PEAK_SIZE])],
        [numpy_helper.from_array(weight, 'b')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8  # what the legacy stack's ONNX Runtime reads
    path = os.path.join(folder, 'int8_peak.onnx')
    onnx.save(model, path)
    return path


def _int8_peak() -> float:
    from mmseg_incnext.deploy.onnx_runtime import ort_session
    a = np.random.default_rng(1).integers(0, 256, (PEAK_SIZE, PEAK_SIZE), np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = _int8_matmul_file(folder)
        session = ort_session(path)
        seconds = [_best_seconds(lambda: session.run(None, {'a': a}))]
        try:
            import openvino
        except ImportError:
            openvino = None
        if openvino is not None:
            # not through OpenVINOGraph, whose run() copies the output: the copy is no MAC
            compiled = openvino.Core().compile_model(
                path, 'CPU', {'INFERENCE_NUM_THREADS': torch.get_num_threads()})
            request = compiled.create_infer_request()
            seconds.append(_best_seconds(lambda: request.infer({0: a})))
    return PEAK_SIZE ** 3 / min(seconds)


@lru_cache(maxsize=None)
def peak_macs_per_s(arithmetic: str) -> float:
    """The CPU's measured peak in MACs per second for ``arithmetic`` (fp32, bf16, int8)."""
    if arithmetic == 'fp32':
        return _torch_peak(torch.float32)
    if arithmetic == 'bf16':
        return max(_torch_peak(torch.bfloat16), peak_macs_per_s('fp32'))
    if arithmetic == 'int8':
        return _int8_peak()
    raise ValueError(f'no peak for arithmetic {arithmetic!r}: fp32, bf16 or int8')


@lru_cache(maxsize=None)
def segmentor_macs(config: str, shape: Tuple[int, int]) -> int:
    """MACs of one prediction of our ``config`` (relative to the checkout) on ``shape``, as
    ``tools/get_flops.py`` counts them."""
    from mmengine.config import Config

    from mmseg_incnext.runner.benchmark.contenders import REPO_ROOT
    from mmseg_incnext.runner.complexity import count_params_and_macs
    return count_params_and_macs(Config.fromfile(os.path.join(REPO_ROOT, config)),
                                 shape).macs


def floor_rows(comparison: Comparison, rows: Sequence[dict], macs: int) -> List[dict]:
    """Per contender timed in ``rows`` (its best layout): milliseconds per image, its floor
    (``macs`` per image over its arithmetic's peak, also given) and the ratio of the two."""
    result = []
    for spec in comparison.models:
        speeds = [r['img_s'] for r in rows if r['model'] == spec.name and 'img_s' in r]
        if not speeds:
            continue
        peak, seconds = peak_macs_per_s(spec.arithmetic), 1 / max(speeds)
        result.append(dict(model=spec.name, arithmetic=spec.arithmetic, peak_macs_per_s=peak,
                           ms=1e3 * seconds, floor_ms=1e3 * macs / peak,
                           over_floor=seconds * peak / macs))
    return result


def format_floor(title: str, macs: int, floors: Sequence[dict]) -> str:
    """The floor table of :func:`floor_rows` under a line naming the MACs and the peaks."""
    peaks = ', '.join(f'{name} {peak / 1e9:.0f}' for name, peak in
                      {r['arithmetic']: r['peak_macs_per_s'] for r in floors}.items())
    lines = [f'\n### {title}: hardware floor',
             f'{macs / 1e9:.1f} GMACs per image over the measured peak ({PEAK_SIZE}^3 matrix '
             f'product, threads {torch.get_num_threads()}), GMAC/s: {peaks}',
             '| model | arithmetic | ms/img | floor ms | x floor |', '|---|---|---|---|---|']
    lines += [f"| {r['model']} | {r['arithmetic']} | {r['ms']:.1f} | {r['floor_ms']:.1f} | "
              f"{r['over_floor']:.1f} |" for r in floors]
    return '\n'.join(lines)
