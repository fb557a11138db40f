"""Speed and memory benchmark: InceptionNeXt-T against its peers, side by side.

All contenders run in ONE process, interleaved (A B C ... A B C ...) after a warm-up, so
slow drifts of the machine hit every contender alike.  Reports images/s (median and
min-max over repeats) and peak memory for inference and training steps (forward,
backward, AdamW step), in NCHW and channels_last; ``*`` marks the better layout per model.
A control pair (two copies of the same model) shows the noise.

Examples::

    python tools/benchmark.py                                   # backbones, 224x224
    python tools/benchmark.py --level segmentor --batch 2      # UperNet / FPN, 512x512
    python tools/benchmark.py --level segmentor --sizes 512 1024 2048 --modes infer

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

CL = torch.channels_last
LAYOUTS = {'nchw': torch.contiguous_format, 'cl': CL}
REF_CONVNEXT = 'ConvNeXt-T'


@dataclass
class Contender:
    """One model in one layout: ``step()`` runs one inference or training step."""
    name: str          # model family, e.g. 'InceptionNeXt-T (ours)'
    layout: str        # 'nchw' or 'cl'
    make: Callable[[], Callable[[], None]]
    step: Optional[Callable[[], None]] = None
    times: List[float] = field(default_factory=list)
    peak_mib: Optional[float] = None
    error: Optional[str] = None


# ----------------------------------------------------------------------------- memory
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


# ----------------------------------------------------------------------------- models
def build_ours(arch: str = 'tiny', channels_last: bool = True,
               fast_inference: bool = True) -> nn.Module:
    import mmseg_incnext  # noqa: F401
    from mmseg.registry import MODELS
    return MODELS.build(dict(type='InceptionNeXt', arch=arch, channels_last=channels_last,
                             fast_inference=fast_inference))


def build_timm(name: str) -> nn.Module:
    import timm
    return timm.create_model(name, pretrained=False)


def build_mmpretrain_convnext() -> nn.Module:
    from mmpretrain.models import ConvNeXt
    return ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)


def _timm_features(model: nn.Module) -> Callable[[torch.Tensor], Sequence[torch.Tensor]]:
    if hasattr(model, 'forward_intermediates'):
        return lambda x: model.forward_intermediates(x, intermediates_only=True)
    return model.forward_features


def timm_reference(arch: str) -> str:
    return f'timm-InceptionNeXt-{arch[0].upper()}'


def backbone_models(arch: str) -> Dict[str, Tuple[Callable[..., nn.Module], str]]:
    """name -> (builder, kind). Kind 'ours' builders take ``channels_last``; the others are
    converted to the layout being measured; 'timm' models are run as feature extractors."""
    a = arch[0].upper()
    return {
        f'InceptionNeXt-{a} (ours)': (partial(build_ours, arch), 'ours'),
        f'InceptionNeXt-{a} (ours, unfused)': (partial(build_ours, arch, fast_inference=False),
                                               'ours'),
        f'InceptionNeXt-{a} (ours) control copy': (partial(build_ours, arch), 'ours'),
        timm_reference(arch): (lambda: build_timm(f'inception_next_{arch}'), 'timm'),
        REF_CONVNEXT: (lambda: build_timm('convnext_tiny'), 'timm'),
        'mmpretrain-ConvNeXt-T': (build_mmpretrain_convnext, 'plain'),
        'ResNet-50': (lambda: build_timm('resnet50'), 'timm'),
    }


def build_segmentor(config: str, convnext: bool, channels_last: bool = True) -> nn.Module:
    """A segmentor from our config, optionally with mmseg's ConvNeXt-T backbone instead."""
    import mmseg_incnext  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mmseg_incnext.runtime import replace_sync_bn
    cfg = Config.fromfile(os.path.join(REPO_ROOT, config))
    cfg.model.backbone.init_cfg = None
    if convnext:
        import mmpretrain.models  # noqa: F401  (registers mmpretrain.ConvNeXt)
        # as in mmseg's convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py
        cfg.model.backbone = dict(
            type='mmpretrain.ConvNeXt', arch='tiny', out_indices=[0, 1, 2, 3],
            drop_path_rate=0.4, layer_scale_init_value=1.0, gap_before_final_norm=False,
            init_cfg=None)
    else:
        cfg.model.backbone.channels_last = channels_last
    replace_sync_bn(cfg.model)
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


FEATURES = ' [backbone only]'
CONVNEXT_FEATURES = 'UperNet-ConvNeXt-T' + FEATURES  # the reference of the backbone-only rows


def segmentor_models() -> Dict[str, Tuple[Callable[..., nn.Module], str]]:
    """Kind 'seg*' runs the whole segmentor; '*_features' only its backbone (its
    ``extract_feat``, on the same input), which shows how much of UperNet's time the
    backbone can save at all."""
    up, fpn = 'configs/upernet/incnext_t_ade20k.py', 'configs/fpn/incnext_t_ade20k.py'
    return {
        'UperNet-T (ours)': (partial(build_segmentor, up, False), 'seg_ours'),
        'UperNet-ConvNeXt-T': (partial(build_segmentor, up, True), 'seg'),
        'UperNet-T (ours)' + FEATURES: (partial(build_segmentor, up, False), 'seg_ours_features'),
        CONVNEXT_FEATURES: (partial(build_segmentor, up, True), 'seg_features'),
        'FPN-T (ours)': (partial(build_segmentor, fpn, False), 'seg_ours'),
        'FPN-ConvNeXt-T': (partial(build_segmentor, fpn, True), 'seg'),
    }


# ----------------------------------------------------------------------------- steps
def make_step(builder: Callable[..., nn.Module], kind: str, layout: str, mode: str,
              x: torch.Tensor) -> Callable[[], None]:
    """Build the model and return a closure running one step.

    Our models are built for the layout (``channels_last``), as the configs do, and use
    their fused inference path when not training; the others are converted to it.
    """
    fmt = LAYOUTS[layout]
    ours = kind == 'ours' or kind.startswith('seg_ours')
    model = builder(channels_last=layout == 'cl') if ours else builder()
    model = model.to(x.device).to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    if kind == 'timm':
        forward = _timm_features(model)
    elif kind.endswith('_features'):
        forward = model.extract_feat
    elif kind.startswith('seg'):
        def forward(inp):
            out = model(inp, mode='tensor')
            return out if isinstance(out, (tuple, list)) else (out, )
    else:
        forward = model

    autocast = _autocast(x.device, mode)
    if mode == 'infer':
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast():
                forward(x)
        return step

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        with autocast():
            outs = forward(x)
            loss = sum(o.float().mean() for o in outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


_AMP: Optional[torch.dtype] = None


def _autocast(device: torch.device, mode: str) -> Callable[[], object]:
    if _AMP is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=_AMP)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def run_contenders(contenders: List[Contender], device: torch.device, warmup: int,
                   repeats: int, iters: int, memory: bool) -> None:
    """Build every contender, warm up, then time them interleaved; then measure memory."""
    for c in contenders:
        try:
            c.step = c.make()
            for _ in range(warmup):
                c.step()
            _sync(device)
        except Exception as err:  # report, keep benchmarking the others
            c.error = f'{type(err).__name__}: {str(err).splitlines()[0][:120]}'
            c.step = None
    alive = [c for c in contenders if c.step is not None]
    for _ in range(repeats):
        for c in alive:
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                c.step()
            _sync(device)
            c.times.append((time.perf_counter() - start) / iters)
    if memory:
        for c in alive:
            with PeakMemory(device) as peak:
                c.step()
            c.peak_mib = peak.peak_bytes / 2 ** 20


def print_profiles(contenders: List[Contender], top: int) -> None:
    """torch.profiler of one more step of each contender: its ``top`` ops by self time."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    for c in contenders:
        if c.step is None:
            continue
        with profile(activities=activities) as prof:
            c.step()
        events = [e for e in prof.key_averages() if e.self_device_time_total or
                  e.self_cpu_time_total]
        key = 'self_device_time_total' if torch.cuda.is_available() else 'self_cpu_time_total'
        total = sum(getattr(e, key) for e in events) or 1
        print(f'\nprofile: {c.name} [{c.layout}]')
        for e in sorted(events, key=lambda e: -getattr(e, key))[:top]:
            print(f'  {100 * getattr(e, key) / total:5.1f}%  {e.key}')


# ----------------------------------------------------------------------------- report
def summarise(contenders: List[Contender], batch: int) -> List[dict]:
    rows = []
    for c in contenders:
        row = dict(model=c.name, layout=c.layout, error=c.error)
        if c.times:
            ips = [batch / t for t in c.times]
            row.update(img_s=statistics.median(ips), img_s_min=min(ips), img_s_max=max(ips),
                       peak_mib=c.peak_mib)
        rows.append(row)
    best: Dict[str, dict] = {}
    for row in rows:
        if 'img_s' in row and ('img_s' not in best.get(row['model'], {})
                               or row['img_s'] > best[row['model']]['img_s']):
            best[row['model']] = row
    for row in rows:
        row['best_layout'] = best.get(row['model']) is row
    return rows


def _ref_speed(rows: List[dict], names: Sequence[str]) -> Optional[float]:
    """The best speed over the reference's implementations and layouts."""
    speeds = [r['img_s'] for r in rows if r['model'] in names and 'img_s' in r]
    return max(speeds) if speeds else None


def print_table(title: str, rows: List[dict], refs: Dict[str, Sequence[str]]) -> None:
    ref_speeds = {label: _ref_speed(rows, name) for label, name in refs.items()}
    print(f'\n### {title}')
    head = '| model | layout | img/s (median) | min-max | peak MiB |' + ''.join(
        f' x {label} |' for label in ref_speeds)
    print(head)
    print('|' + '---|' * (head.count('|') - 1))
    for r in rows:
        if 'img_s' not in r:
            print(f"| {r['model']} | {r['layout']} | {r['error'] or 'n/a'} |")
            continue
        mark = ' *' if r['best_layout'] else ''
        mem = f"{r['peak_mib']:.0f}" if r.get('peak_mib') is not None else '-'
        ratios = ''.join(f" {r['img_s'] / s:.2f} |" if s else ' - |' for s in ref_speeds.values())
        print(f"| {r['model']}{mark} | {r['layout']} | {r['img_s']:.2f} | "
              f"{r['img_s_min']:.2f}-{r['img_s_max']:.2f} | {mem} |{ratios}")


def print_upernet_bound(rows: List[dict]) -> Optional[dict]:
    """Amdahl's law for UperNet: the head's time (the ConvNeXt segmentor minus its backbone)
    is the same whatever the backbone, so it caps what a faster backbone can gain."""
    def seconds(name: str) -> Optional[float]:
        speed = _ref_speed(rows, (name, ))
        return 1 / speed if speed else None

    full = seconds('UperNet-ConvNeXt-T')
    theirs = seconds(CONVNEXT_FEATURES)
    ours = seconds('UperNet-T (ours)' + FEATURES)
    if not (full and theirs and ours) or full <= theirs:
        return None
    head = full - theirs
    bound = dict(head_s_per_img=head, head_share=head / full, max_speedup=full / head,
                 predicted_speedup=full / (head + ours))
    print(f"UperNet head and rest (ConvNeXt segmentor minus its backbone): {head:.3f} s/img, "
          f"{100 * bound['head_share']:.0f}% of UperNet-ConvNeXt-T; a backbone costing nothing "
          f"would make UperNet at most {bound['max_speedup']:.2f}x, ours as timed alone "
          f"predicts {bound['predicted_speedup']:.2f}x")
    return bound


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
    p.add_argument('--only', nargs='+', default=None,
                   help='substrings of model names to keep (references are always kept)')
    p.add_argument('--threads', type=int, default=os.cpu_count(),
                   help='torch intra-op threads (default: all cores)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3, help='timed rounds (interleaved)')
    p.add_argument('--iters', type=int, default=1, help='steps per timed round')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', choices=('none', 'bf16', 'fp16'), default='none',
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


def main(argv: Optional[Sequence[str]] = None) -> dict:
    global _AMP
    args = parse_args(argv)
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    _AMP = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.amp]
    seg = args.level == 'segmentor'
    batches = args.batch or [2 if seg else 8]
    sizes = args.sizes or ([512] if seg else [224])
    models = segmentor_models() if seg else backbone_models(args.arch)
    refs = ({'ConvNeXt': ('UperNet-ConvNeXt-T', )} if seg else
            {'ConvNeXt-T': (REF_CONVNEXT, 'mmpretrain-ConvNeXt-T'), 'timm IncNeXt': (timm_reference(args.arch), )})
    if args.only:
        selected = {k for k in models if any(s.lower() in k.lower() for s in args.only)}
        keep = {name for names in refs.values() for name in names}
        if any(k.endswith(FEATURES) for k in selected):
            keep.add(CONVNEXT_FEATURES)
        if any(k.startswith('FPN') for k in selected):
            keep.add('FPN-ConvNeXt-T')
        models = {k: v for k, v in models.items() if k in keep | selected}
    result = dict(args=vars(args), torch=torch.__version__, device=str(device),
                  threads=torch.get_num_threads(), runs=[])
    print(f'torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, '
          f'batch {batches}, amp {args.amp}, warmup {args.warmup}, repeats {args.repeats} x '
          f'{args.iters} iters (interleaved)')
    for (h, w), batch, mode in itertools.product(
            [segmentor_shape(s) if seg else (s, s) for s in sizes], batches, args.modes):
        torch.manual_seed(0)
        x = torch.randn(batch, 3, h, w, device=device)
        contenders = []
        for name, (builder, kind) in models.items():
            for layout in args.layouts:
                contenders.append(Contender(name, layout, partial(
                    make_step, builder, kind, layout, mode, x)))
        run_contenders(contenders, device, args.warmup, args.repeats, args.iters,
                       memory=not args.no_memory)
        if args.profile:
            print_profiles(contenders, args.profile)
        rows = summarise(contenders, batch)
        run = dict(mode=mode, height=h, width=w, batch=batch, rows=rows)
        if seg:
            fpn_ref = {'ConvNeXt': ('FPN-ConvNeXt-T', )}
            print_table(f'UperNet, {mode}, {h}x{w}, batch {batch}',
                        [r for r in rows if r['model'].startswith('UperNet')
                         and not r['model'].endswith(FEATURES)], refs)
            parts = [r for r in rows if r['model'].endswith(FEATURES)]
            if parts:
                print_table(f'the same backbones alone, {mode}, {h}x{w}, batch {batch}', parts,
                            {'ConvNeXt': (CONVNEXT_FEATURES, )})
                run['upernet_bound'] = print_upernet_bound(rows)
            fpn_rows = [r for r in rows if r['model'].startswith('FPN')]
            if fpn_rows:
                print_table(f'FPN, {mode}, {h}x{w}, batch {batch}', fpn_rows, fpn_ref)
        else:
            print_table(f'backbone {args.arch}, {mode}, {h}x{w}, batch {batch}', rows, refs)
        result['runs'].append(run)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'\nwrote {args.json}')
    return result


if __name__ == '__main__':
    main()
