"""Timing the contenders: one step of a model (inference, or a training step), all models
interleaved in rounds, then their peak memory and, if asked, a profile of each."""
import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from mmseg_incnext.runner.benchmark.memory import PeakMemory
from mmseg_incnext.runner.benchmark.rounds import round_orders
from mmseg_incnext.runner.benchmark.specs import ModelSpec
from mmseg_incnext.utils.compat import fused_adamw_runs_on, profiler_self_time_key

LAYOUTS = {'nchw': torch.contiguous_format, 'cl': torch.channels_last}


@dataclass
class Measurement:
    """The timings of one model in one layout; ``error`` if it could not run."""
    model: ModelSpec
    layout: str
    seconds: List[float] = field(default_factory=list)
    peak_mib: Optional[float] = None
    error: Optional[str] = None


def make_step(spec: ModelSpec, layout: str, mode: str, x: torch.Tensor,
              amp: Optional[torch.dtype]) -> Callable[[], None]:
    """Build the model for ``layout`` (a key of :data:`LAYOUTS`) and return a closure
    running one step on ``x``: inference (``mode='infer'``, without autograd) or forward,
    backward and an AdamW step (``'train'``), under autocast to
    ``amp`` if given."""
    fmt = LAYOUTS[layout]
    model = spec.build(channels_last=layout == 'cl') if spec.builds_layout else spec.build()
    model = model.to(x.device).to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    features = spec.features(model)

    def autocast():
        if amp is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=amp)

    if mode == 'infer':
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast():
                features(x)
        return infer

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused_adamw_runs_on(x.device.type))

    def train() -> None:
        with autocast():
            outs = features(x)
            outs = outs if isinstance(outs, (tuple, list)) else (outs, )
            loss = sum(o.float().mean() for o in outs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return train


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def measure(models: Sequence[ModelSpec], layouts: Sequence[str], mode: str, x: torch.Tensor,
            amp: Optional[torch.dtype] = None, warmup: int = 1, repeats: int = 3,
            iters: int = 1, memory: bool = True, profile_top: int = 0) -> List[Measurement]:
    """Build every model in every layout, warm up, then time them interleaved (``repeats``
    rounds of ``iters`` steps, in the order of :func:`round_orders`); then measure peak
    memory (and profile) one more step each. A model that fails is reported with its error
    and the others go on."""
    device = x.device
    runs = [Measurement(spec, layout) for spec in models for layout in layouts
            if mode in spec.modes]
    live = []
    for m in runs:
        try:
            step = make_step(m.model, m.layout, mode, x, amp)
            for _ in range(warmup):
                step()
            _sync(device)
            live.append((m, step))
        except Exception as err:  # report, keep benchmarking the others
            m.error = f'{type(err).__name__}: {str(err).splitlines()[0][:120]}'
    for order in round_orders(len(live), repeats):
        for m, step in (live[i] for i in order):
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                step()
            _sync(device)
            m.seconds.append((time.perf_counter() - start) / iters)
    if memory:
        for m, step in live:
            with PeakMemory(device) as peak:
                step()
            m.peak_mib = peak.peak_bytes / 2 ** 20
    if profile_top:
        for m, step in live:
            seconds = (m.model.op_seconds(x) if m.model.op_seconds and mode == 'infer'
                       else torch_op_seconds(step, device))
            print(format_profile(f'{m.model.name} [{m.layout}]', seconds, profile_top))
    return runs


def torch_op_seconds(step: Callable[[], None], device: torch.device) -> Dict[str, float]:
    """Self time in seconds on ``device`` of each op in one more run of ``step``
    (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == 'cuda'
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                 ) as prof:
        step()
    key = profiler_self_time_key(device.type)
    return {e.key: getattr(e, key) / 1e6 for e in prof.key_averages() if getattr(e, key)}


def format_profile(title: str, seconds: Dict[str, float], top: int) -> str:
    """The ``top`` ops of ``seconds`` (op -> seconds in one step), each with its share of
    the step's profiled time and its milliseconds."""
    total = sum(seconds.values()) or 1.0
    lines = [f'\nprofile: {title} ({1e3 * total:.1f} ms profiled)']
    for op, s in sorted(seconds.items(), key=lambda item: -item[1])[:top]:
        lines.append(f'  {100 * s / total:5.1f}%  {1e3 * s:8.2f} ms  {op}')
    return '\n'.join(lines)
