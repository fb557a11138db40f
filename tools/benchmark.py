"""Speed and memory benchmark: InceptionNeXt against its peers, side by side.

All contenders run in ONE process, interleaved after a warm-up, each round in another
order (a Williams design: over n rounds, 2n for an odd number n of models, every model
takes every position and follows every other model equally often), so slow drifts of the
machine and the after-effects of the previous model's step hit every contender alike.
Reports images/s (median and min-max over repeats) and peak memory for inference and
training steps (forward, backward, AdamW step), in NCHW and channels_last; ``*`` marks the
better layout per model.
Each table gives ratios against its references (timm's InceptionNeXt, ConvNeXt-T); a
control pair (two copies of the same model) shows the noise; with ``--max-control-gap``
a run whose pair ran further apart is measured again and does not count.

Examples::

    python tools/benchmark.py                                   # backbones, 224x224
    python tools/benchmark.py --level segmentor --batch 2      # UperNet / FPN, 512x512
    python tools/benchmark.py --level segmentor --sizes 512 1024 2048 --modes infer
    python tools/benchmark.py --level segmentor --onnx --only "ONNX Runtime" --modes infer
    python tools/benchmark.py --sizes 512 --batch 1 --modes infer --runs 3   # three runs
    python tools/benchmark.py --sizes 512 --batch 2 --modes train --runs 3 \
        --only "no output norms" --max-control-gap 3           # runs with noise under 3%

Peak memory: CUDA ``torch.cuda.max_memory_allocated``; CPU the peak resident-set growth
during one extra step (sampled every millisecond after ``malloc_trim``), in MiB.
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

LAYOUTS = {'nchw': torch.contiguous_format, 'cl': torch.channels_last}
AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
Features = Callable[[torch.Tensor], Sequence[torch.Tensor]]
MAX_ATTEMPTS_PER_RUN = 3


# ----------------------------------------------------------------------------- what to time
@dataclass(frozen=True)
class ModelSpec:
    """One model to time.

    ``build(channels_last)`` returns the model: ours are built for the layout as our configs
    do (``builds_layout``), the others are built once and converted to it.  ``features``
    turns the model into the function that is timed (its output: a tensor or a sequence).
    """
    name: str
    build: Callable[[bool], nn.Module]
    features: Callable[[nn.Module], Features]
    builds_layout: bool = False
    modes: Tuple[str, ...] = ('infer', 'train')


@dataclass(frozen=True)
class Comparison:
    """A table: its contenders, the reference columns (label -> the models whose best
    speed, over implementations and layouts, is the reference), and control pairs (a model
    and an identical copy, whose gap is the noise of the run)."""
    title: str
    models: Tuple[ModelSpec, ...]
    references: Dict[str, Tuple[ModelSpec, ...]]
    controls: Tuple[Tuple[ModelSpec, ModelSpec], ...] = ()

    def with_models(self, keep: Callable[[ModelSpec], bool]) -> Optional['Comparison']:
        """The comparison restricted to ``keep`` (references always stay), or None if no
        contender besides the references is left."""
        refs = {m for ms in self.references.values() for m in ms}
        models = tuple(m for m in self.models if m in refs or keep(m))
        if all(m in refs for m in models):
            return None
        controls = tuple(pair for pair in self.controls if all(m in models for m in pair))
        return Comparison(self.title, models, self.references, controls)


def build_ours(arch: str = 'tiny', channels_last: bool = True, **kwargs) -> nn.Module:
    import mmseg_incnext  # noqa: F401
    from mmseg.registry import MODELS
    return MODELS.build(dict(type='InceptionNeXt', arch=arch, channels_last=channels_last,
                             **kwargs))


def build_timm(name: str, channels_last: bool = True) -> nn.Module:
    import timm
    return timm.create_model(name, pretrained=False)


def build_mmpretrain_convnext(channels_last: bool = True) -> nn.Module:
    from mmpretrain.models import ConvNeXt
    return ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)


SEGMENTOR_BACKBONES = ('ours', 'ours, no output norms', 'timm', 'convnext')


def build_segmentor(config: str, backbone: str = 'ours', channels_last: bool = True
                    ) -> nn.Module:
    """A segmentor from our config with our backbone (with or without its output norms),
    or with timm's InceptionNeXt (features only, the same drop path) or mmseg's ConvNeXt-T
    in its place."""
    import mmseg_incnext  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mmseg_incnext.runtime import replace_sync_bn
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


def onnx_runtime_spec(name: str, config: str) -> ModelSpec:
    """Our segmentor exported with free H and W (:func:`export_onnx`, verified), once per
    process, and run by ONNX Runtime; inference only."""
    exported: Dict[str, object] = {}

    def build(channels_last: bool) -> nn.Module:
        if 'path' not in exported:
            from mmseg_incnext.deploy.onnx_export import export_onnx
            exported['folder'] = tempfile.TemporaryDirectory()
            path = os.path.join(exported['folder'].name, 'model.onnx')
            with warnings.catch_warnings():
                warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
                warnings.filterwarnings('ignore', message='Constant folding')
                export_onnx(build_segmentor(config), path, dynamic=True)
            exported['path'] = path
        from mmengine.config import Config

        from mmseg_incnext.deploy.onnx_runtime import OnnxRuntimeSegmentor
        head = Config.fromfile(os.path.join(REPO_ROOT, config)).model.decode_head
        return OnnxRuntimeSegmentor(exported['path'], head.num_classes, head.align_corners)
    return ModelSpec(name, build, onnx_logits, modes=('infer', ))


def onnx_logits(model: nn.Module) -> Features:
    return lambda x: model.encode_decode(x, [])


def module_features(model: nn.Module) -> Features:
    return model


def timm_features(model: nn.Module) -> Features:
    if hasattr(model, 'forward_intermediates'):
        return lambda x: model.forward_intermediates(x, intermediates_only=True)
    return model.forward_features


def segmentor_logits(model: nn.Module) -> Features:
    return lambda x: model(x, mode='tensor')


def segmentor_backbone(model: nn.Module) -> Features:
    """The segmentor's ``extract_feat`` alone, on the same input."""
    return model.extract_feat


def backbone_comparisons(arch: str) -> List[Comparison]:
    letter = arch[0].upper()
    ours = partial(build_ours, arch)

    def our_model(suffix: str, **kwargs) -> ModelSpec:
        return ModelSpec(f'InceptionNeXt-{letter} (ours{suffix})',
                         lambda cl: ours(channels_last=cl, **kwargs), module_features,
                         builds_layout=True)

    timm_ref = ModelSpec(f'timm-InceptionNeXt-{letter}',
                         partial(build_timm, f'inception_next_{arch}'), timm_features)
    # timm's features are the raw stage outputs: this one does the same work
    no_out_norms = our_model(', no output norms', out_norm_cfg=None)
    convnext = ModelSpec('ConvNeXt-T', partial(build_timm, 'convnext_tiny'), timm_features)
    mmpretrain_convnext = ModelSpec('mmpretrain-ConvNeXt-T', build_mmpretrain_convnext,
                                    module_features)
    default = our_model('')
    control = ModelSpec(f'{default.name} control copy', default.build, module_features,
                        builds_layout=True)
    no_out_norms_control = ModelSpec(f'{no_out_norms.name} control copy', no_out_norms.build,
                                     module_features, builds_layout=True)
    models = (default, no_out_norms, our_model(', unfused', fast_inference=False),
              control, no_out_norms_control, timm_ref,
              convnext, mmpretrain_convnext,
              ModelSpec('ResNet-50', partial(build_timm, 'resnet50'), timm_features))
    return [Comparison(f'backbone {arch}', models,
                       {'timm IncNeXt': (timm_ref, ),
                        'ConvNeXt-T': (convnext, mmpretrain_convnext)},
                       ((default, control), (no_out_norms, no_out_norms_control)))]


UPERNET, FPN = 'configs/upernet/incnext_t_ade20k.py', 'configs/fpn/incnext_t_ade20k.py'


def _segmentor_spec(name: str, config: str, backbone: str,
                    features: Callable[[nn.Module], Features]) -> ModelSpec:
    return ModelSpec(name, partial(build_segmentor, config, backbone), features,
                     builds_layout=backbone.startswith('ours'))


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


def onnx_comparisons() -> List[Comparison]:
    """Our UperNet and FPN exported to ONNX and run by ONNX Runtime, against our PyTorch
    eager path (the fused backbone)."""
    return [Comparison(f'{name}, ONNX Runtime', (eager, onnx_runtime_spec(
        f'{name}-T (ours, ONNX Runtime)', config)), {'PyTorch': (eager, )})
        for name, config, eager in (('UperNet', UPERNET, UPERNET_OURS), ('FPN', FPN, FPN_OURS))]


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


# ----------------------------------------------------------------------------- measuring
@dataclass
class Measurement:
    """The timings of one model in one layout; ``error`` if it could not run."""
    model: ModelSpec
    layout: str
    seconds: List[float] = field(default_factory=list)
    peak_mib: Optional[float] = None
    error: Optional[str] = None


class PeakMemory:
    """Peak memory growth during a block: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def _rss() -> int:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

    def __enter__(self) -> 'PeakMemory':
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        try:  # give freed heap pages back so the baseline is the live memory
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except OSError:
            pass
        self._base = self._peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._peak, self._rss()) - self._base


def make_step(spec: ModelSpec, layout: str, mode: str, x: torch.Tensor,
              amp: Optional[torch.dtype]) -> Callable[[], None]:
    """Build the model for ``layout`` and return a closure running one step: inference
    (``mode='infer'``, our models then take their fused path) or forward, backward and an
    AdamW step (``'train'``), under autocast to ``amp`` if given."""
    fmt = LAYOUTS[layout]
    model = spec.build(layout == 'cl') if spec.builds_layout else spec.build(True)
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
    try:
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    except (RuntimeError, TypeError):  # no fused AdamW for this device/dtype
        optimizer = torch.optim.AdamW(params, lr=1e-4)

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
    """Build every model in every layout, warm up, then time them interleaved; then measure
    peak memory (and profile) one more step each.  A model that fails is reported with its
    error and the others go on."""
    device = x.device
    runs = [(Measurement(spec, layout), None) for spec in models for layout in layouts
            if mode in spec.modes]
    live = []
    for m, _ in runs:
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
            print(format_profile(f'{m.model.name} [{m.layout}]', step, profile_top))
    return [m for m, _ in runs]


def round_orders(n: int, rounds: int) -> List[List[int]]:
    """The order of the ``n`` models in each timed round: a Williams design, cycled.

    A step is slowed by what ran just before it (the heap or caches the previous model
    left), so over ``n`` rounds (``2n`` for odd ``n``) every model takes every position and
    follows every other model equally often. Rotating one order would keep each model's
    predecessor.
    """
    first, low, high = [0], 1, n - 1
    for i in range(1, n):
        if i % 2:
            first.append(low)
            low += 1
        else:
            first.append(high)
            high -= 1
    rows = [[(v + shift) % n for v in first] for shift in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [rows[i % len(rows)] for i in range(rounds)] if n else []


def format_profile(title: str, step: Callable[[], None], top: int) -> str:
    """The ``top`` ops by self time in one more run of ``step`` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    cuda = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                 ) as prof:
        step()
    key = 'self_device_time_total' if cuda else 'self_cpu_time_total'
    events = [e for e in prof.key_averages() if getattr(e, key)]
    total = sum(getattr(e, key) for e in events) or 1
    lines = [f'\nprofile: {title}']
    for e in sorted(events, key=lambda e: -getattr(e, key))[:top]:
        lines.append(f'  {100 * getattr(e, key) / total:5.1f}%  {e.key}')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- reporting
def summarise(measurements: Sequence[Measurement], batch: int) -> List[dict]:
    """One row per model and layout: images/s (median, min, max), peak MiB, error, and
    whether the layout is the model's faster one."""
    rows = []
    for m in measurements:
        row = dict(model=m.model.name, layout=m.layout, error=m.error)
        if m.seconds:
            speeds = [batch / s for s in m.seconds]
            row.update(img_s=statistics.median(speeds), img_s_min=min(speeds),
                       img_s_max=max(speeds), peak_mib=m.peak_mib)
        rows.append(row)
    best: Dict[str, dict] = {}
    for row in rows:
        if 'img_s' in row and row['img_s'] > best.get(row['model'], {}).get('img_s', -1):
            best[row['model']] = row
    for row in rows:
        row['best_layout'] = best.get(row['model']) is row
    return rows


def best_speed(rows: Sequence[dict], models: Sequence[ModelSpec]) -> Optional[float]:
    """The best images/s over ``models`` and their layouts."""
    names = {m.name for m in models}
    speeds = [r['img_s'] for r in rows if r['model'] in names and 'img_s' in r]
    return max(speeds) if speeds else None


def reference_speeds(comparison: Comparison, rows: Sequence[dict]) -> Dict[str, Optional[float]]:
    """Reference label -> the best images/s of its models in ``rows``."""
    return {label: best_speed(rows, models) for label, models in comparison.references.items()}


def format_table(title: str, comparison: Comparison, rows: Sequence[dict]) -> str:
    names = {m.name for m in comparison.models}
    rows = [r for r in rows if r['model'] in names]
    refs = reference_speeds(comparison, rows)
    head = '| model | layout | img/s (median) | min-max | peak MiB |' + ''.join(
        f' x {label} |' for label in refs)
    lines = [f'\n### {title}', head, '|' + '---|' * (head.count('|') - 1)]
    for r in rows:
        if 'img_s' not in r:
            lines.append(f"| {r['model']} | {r['layout']} | {r['error'] or 'n/a'} |")
            continue
        mark = ' *' if r['best_layout'] else ''
        mem = f"{r['peak_mib']:.0f}" if r.get('peak_mib') is not None else '-'
        ratios = ''.join(f" {r['img_s'] / s:.2f} |" if s else ' - |' for s in refs.values())
        lines.append(f"| {r['model']}{mark} | {r['layout']} | {r['img_s']:.2f} | "
                     f"{r['img_s_min']:.2f}-{r['img_s_max']:.2f} | {mem} |{ratios}")
    return '\n'.join(lines)


def ratios_over_runs(comparison: Comparison, runs: Sequence[Sequence[dict]]
                     ) -> Dict[str, Dict[str, List[Optional[float]]]]:
    """Model name -> reference label -> its ratio (best layout) in each run."""
    result: Dict[str, Dict[str, List[Optional[float]]]] = {}
    for rows in runs:
        refs = reference_speeds(comparison, rows)
        for spec in comparison.models:
            speed = best_speed(rows, (spec, ))
            for label, ref in refs.items():
                result.setdefault(spec.name, {}).setdefault(label, []).append(
                    speed / ref if speed and ref else None)
    return result


def format_ratios_over_runs(title: str, ratios: Dict[str, Dict[str, List[Optional[float]]]],
                            gaps: Optional[Dict[str, List[Optional[float]]]] = None) -> str:
    labels = list(next(iter(ratios.values()), {}))
    head = '| model |' + ''.join(f' x {label}, per run | median |' for label in labels)
    lines = [f'\n### {title}', head, '|' + '---|' * (head.count('|') - 1)]
    for name, by_label in ratios.items():
        cells = ''
        for label in labels:
            values = by_label[label]
            known = [v for v in values if v is not None]
            cells += ' ' + ' / '.join('-' if v is None else f'{v:.2f}' for v in values) + ' |'
            cells += f' {statistics.median(known):.2f} |' if known else ' - |'
        lines.append(f'| {name} |{cells}')
    for name, values in (gaps or {}).items():
        lines.append(f'\n{name} and its control copy, per run: ' + ' / '.join(
            '-' if v is None else f'{100 * v:.1f}%' for v in values) + ' apart')
    return '\n'.join(lines)


def control_gaps(comparison: Comparison, rows: Sequence[dict]) -> Dict[str, Optional[float]]:
    """Model name -> how far it and its control copy ran apart, ``|speed / copy's - 1|``."""
    gaps = {}
    for model, copy in comparison.controls:
        speed, copy_speed = best_speed(rows, (model, )), best_speed(rows, (copy, ))
        gaps[model.name] = abs(speed / copy_speed - 1) if speed and copy_speed else None
    return gaps


def format_control_gaps(gaps: Dict[str, Optional[float]], limit: Optional[float]) -> str:
    parts = [f'{name} and its copy {"-" if gap is None else f"{100 * gap:.1f}%"} apart'
             for name, gap in gaps.items()]
    verdict = '' if limit is None else (
        f' (within {limit:g}%: kept)' if is_quiet(gaps, limit)
        else f' (over {limit:g}%: measured again)')
    return 'control pairs: ' + '; '.join(parts) + verdict


def is_quiet(gaps: Dict[str, Optional[float]], limit: Optional[float]) -> bool:
    """Whether a run counts: every control pair within ``limit`` percent (if one is set)."""
    return limit is None or all(gap is not None and 100 * gap <= limit
                                for gap in gaps.values())


def upernet_bound(rows: Sequence[dict]) -> Optional[dict]:
    """Amdahl's law for UperNet: the head's time (the ConvNeXt segmentor minus its backbone)
    is the same whatever the backbone, so it caps what a faster backbone can gain."""
    def seconds(spec: ModelSpec) -> Optional[float]:
        speed = best_speed(rows, (spec, ))
        return 1 / speed if speed else None

    full, theirs, ours = (seconds(UPERNET_CONVNEXT), seconds(BACKBONE_CONVNEXT),
                          seconds(BACKBONE_OURS))
    if not (full and theirs and ours) or full <= theirs:
        return None
    head = full - theirs
    return dict(head_s_per_img=head, head_share=head / full, max_speedup=full / head,
                predicted_speedup=full / (head + ours))


def format_upernet_bound(bound: dict) -> str:
    return (f"UperNet head and rest (ConvNeXt segmentor minus its backbone): "
            f"{bound['head_s_per_img']:.3f} s/img, {100 * bound['head_share']:.0f}% of "
            f"UperNet-ConvNeXt-T; a backbone costing nothing would make UperNet at most "
            f"{bound['max_speedup']:.2f}x, ours as timed alone predicts "
            f"{bound['predicted_speedup']:.2f}x")


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--level', choices=('backbone', 'segmentor'), default='backbone')
    p.add_argument('--arch', default='tiny', help='InceptionNeXt arch of the backbone level')
    p.add_argument('--batch', type=int, nargs='+', default=None,
                   help='batch sizes to sweep (default 8 backbone, 2 segmentor: BN training '
                        'needs 2)')
    p.add_argument('--sizes', type=int, nargs='+', default=None,
                   help='square sizes, or long sides for segmentors (512 x L for L > 512, '
                        'as ADE20K test images up to 512x2048); default 224 / 512')
    p.add_argument('--modes', nargs='+', choices=('infer', 'train'), default=['infer', 'train'])
    p.add_argument('--layouts', nargs='+', choices=tuple(LAYOUTS), default=list(LAYOUTS))
    p.add_argument('--onnx', action='store_true',
                   help='segmentor level: ONNX Runtime against PyTorch eager (inference); '
                        'needs pip install -e .[deploy]')
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


def segmentor_shape(long_side: int) -> Tuple[int, int]:
    """Square up to 512; beyond, a 512-high image (ADE20K's test scale, up to the paper's
    512x2048 MAC setting), so the work grows with the long side."""
    return (long_side, long_side) if long_side <= 512 else (512, long_side)


def select(comparisons: Sequence[Comparison], only: Optional[Sequence[str]]
           ) -> List[Comparison]:
    if not only:
        return list(comparisons)
    wanted = [s.lower() for s in only]
    kept = [c.with_models(lambda m: any(s in m.name.lower() for s in wanted))
            for c in comparisons]
    kept = [c for c in kept if c is not None]
    if not kept:
        raise SystemExit(f'--only {" ".join(only)} matches no model; models: '
                         + ', '.join(m.name for c in comparisons for m in c.models))
    return kept


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    segmentor = args.level == 'segmentor'
    batches = args.batch or [2 if segmentor else 8]
    shapes = [segmentor_shape(s) if segmentor else (s, s)
              for s in args.sizes or ([512] if segmentor else [224])]
    if args.onnx and not segmentor:
        raise SystemExit('--onnx compares whole segmentors: add --level segmentor')
    comparisons = select(segmentor_comparisons() + (onnx_comparisons() if args.onnx else [])
                         if segmentor else backbone_comparisons(args.arch), args.only)
    models = list(dict.fromkeys(m for c in comparisons for m in c.models))
    result = dict(args=vars(args), torch=torch.__version__, device=str(device),
                  threads=torch.get_num_threads(), runs=[])
    print(f'torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, '
          f'batch {batches}, amp {args.amp}, warmup {args.warmup}, repeats {args.repeats} x '
          f'{args.iters} iters (interleaved)')
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
                run['upernet_bound'] = upernet_bound(rows)
                if run['upernet_bound']:
                    print(format_upernet_bound(run['upernet_bound']))
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


if __name__ == '__main__':
    main()
