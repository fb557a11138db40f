"""OpenVINO on the CPU: the second runtime of :class:`~.onnx_runtime.OnnxSegmentor`
(``backend='openvino'``). OpenVINO reads our ONNX files itself, the QDQ int8 files of
:mod:`.quantize` included (it runs their quantized nodes as integer kernels); needs the
``openvino`` extra: ``pip install -e .[openvino]``.

Its CPU plugin computes in the precision of the ``INFERENCE_PRECISION_HINT`` property,
which this module always sets: f32 for ``precision='fp32'``, bf16 for ``'bf16'``. On a CPU
without native bf16 (no ``BF16`` among the plugin's ``OPTIMIZATION_CAPABILITIES``) OpenVINO
compiles a bf16 request in f32; :attr:`OpenVINOGraph.runs_in` reads the precision back
from the compiled model, and :meth:`OpenVINOGraph.precision_note` says which of the two
happened.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from mmseg_incnext.deploy.runtime_packages import import_runtime

PRECISIONS = ('fp32', 'bf16')
_HINTS = dict(fp32='f32', bf16='bf16')  # OpenVINO's element type names
_NAMES = {'f32': 'fp32', 'bf16': 'bf16', 'f16': 'fp16'}


def openvino_api():
    """The ``openvino`` module, or an ImportError that says how to install it."""
    return import_runtime('openvino', 'openvino')


def cpu_capabilities(core=None) -> List[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. FP32, INT8, BF16), as
    ``core`` (default: a new ``openvino.Core``) reports them."""
    core = core or openvino_api().Core()
    return list(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))


def bf16_is_native() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively on this machine."""
    return 'BF16' in cpu_capabilities()


class OpenVINOGraph:
    """An ONNX file compiled by OpenVINO for the CPU: ``run(array)`` maps the ``images``
    input (NCHW float32) to the first output.

    ``precision``: ``'fp32'`` or ``'bf16'``, set as ``INFERENCE_PRECISION_HINT``;
    ``threads``: ``INFERENCE_NUM_THREADS`` (default: torch's); ``profile``: count each
    node's time (``PERF_COUNT``, for :meth:`op_type_seconds`). ``runs_in`` is the precision
    the compiled model reports, ``input_size`` the fixed (H, W) of the input or None.
    """

    def __init__(self, path: str, precision: str = 'fp32', threads: Optional[int] = None,
                 profile: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f'OpenVINO precision must be one of {PRECISIONS}, got '
                             f'{precision!r}')
        self.core = openvino_api().Core()
        model = self.core.read_model(path)
        self.output_names = [output.get_any_name() for output in model.outputs]
        shape = model.inputs[0].get_partial_shape()
        self.input_size: Optional[Tuple[int, int]] = (
            (shape[2].get_length(), shape[3].get_length())
            if shape.rank.is_static and shape[2].is_static and shape[3].is_static else None)
        self.compiled = self.core.compile_model(model, 'CPU', {
            'INFERENCE_PRECISION_HINT': _HINTS[precision],
            'INFERENCE_NUM_THREADS': threads or torch.get_num_threads(),
            'PERFORMANCE_HINT': 'LATENCY', 'PERF_COUNT': profile})
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        hint = self.compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()
        self.runs_in = _NAMES.get(hint, hint)

    def run(self, array: np.ndarray) -> np.ndarray:
        # copied out: the request reuses its output buffer on the next run
        return np.array(self.request.infer({0: array})[0], copy=True)

    def op_type_seconds(self) -> Dict[str, float]:
        """Seconds per node type and kernel (e.g. ``Convolution [brgconv_avx2_I8]``: the
        kernel names the precision it ran in) of the last :meth:`run`; needs ``profile``."""
        seconds: Dict[str, float] = {}
        for node in self.request.get_profiling_info():
            if node.status == node.Status.EXECUTED:
                key = f'{node.node_type} [{node.exec_type}]'
                seconds[key] = seconds.get(key, 0.0) + node.real_time.total_seconds()
        return seconds

    def precision_note(self) -> str:
        """One line: the precision asked for and the one OpenVINO compiled, and, for bf16,
        whether the CPU has it natively (with torch's name for the CPU's vector
        instructions)."""
        note = f'OpenVINO CPU: {self.precision} asked, compiled in {self.runs_in}'
        if self.precision != 'bf16':
            return note
        capabilities = cpu_capabilities(self.core)
        machine = (f'{torch.backends.cpu.get_cpu_capability()}; OpenVINO CPU capabilities '
                   f'{", ".join(capabilities)}')
        if 'BF16' in capabilities and self.runs_in == 'bf16':
            return f'{note} (bf16 native on this CPU: {machine})'
        return (f'{note}: this CPU has no native bf16 ({machine}), so the bf16 run is an '
                'fp32 run here')
