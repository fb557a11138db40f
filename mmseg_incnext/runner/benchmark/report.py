"""What the timings say: one row per model and layout, the tables with their reference
ratios, the ratios over several runs, the control pairs' gaps that gate a run, and the
bound Amdahl's law puts on what a faster backbone can gain in UperNet."""
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from mmseg_incnext.runner.benchmark.contenders import (BACKBONE_CONVNEXT, BACKBONE_OURS,
                                                       UPERNET_CONVNEXT)
from mmseg_incnext.runner.benchmark.specs import Comparison, ModelSpec
from mmseg_incnext.runner.benchmark.timing import Measurement


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
    """The comparison's rows as a markdown table with a ratio column per reference."""
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
    """Each run's ratios and their median, and each control pair's gap per run."""
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
    """One line: each pair's gap, and whether the run is kept under ``limit`` percent."""
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


class NoBound(ValueError):
    """The UperNet bound cannot be computed from these rows; the message says why."""


UPERNET_BOUND_MODELS = (UPERNET_CONVNEXT, BACKBONE_CONVNEXT, BACKBONE_OURS)


def upernet_bound(rows: Sequence[dict]) -> dict:
    """Amdahl's law for UperNet: the head's time (the ConvNeXt segmentor minus its backbone)
    is the same whatever the backbone, so it caps what a faster backbone can gain.

    Returns the head's seconds per image and share of the ConvNeXt segmentor's time, the
    speed-up a backbone costing nothing would give, and the one ours as timed alone
    predicts. Raises :class:`NoBound` if one of the three timings is missing, or if the
    segmentor did not time slower than its backbone alone (too few repeats for the noise).
    """
    speeds = {spec.name: best_speed(rows, (spec, )) for spec in UPERNET_BOUND_MODELS}
    missing = [name for name, speed in speeds.items() if not speed]
    if missing:
        raise NoBound(f'{", ".join(missing)} not timed')
    full, theirs, ours = (1 / speeds[spec.name] for spec in UPERNET_BOUND_MODELS)
    if full <= theirs:
        raise NoBound(f'{UPERNET_CONVNEXT.name} ({1 / full:.2f} img/s) timed no slower than '
                      f'{BACKBONE_CONVNEXT.name} ({1 / theirs:.2f} img/s): the head\'s time '
                      'is below the noise (more --repeats)')
    head = full - theirs
    return dict(head_s_per_img=head, head_share=head / full, max_speedup=full / head,
                predicted_speedup=full / (head + ours))


def format_upernet_bound(bound: dict) -> str:
    """The line reporting :func:`upernet_bound`."""
    return (f"UperNet head and rest (ConvNeXt segmentor minus its backbone): "
            f"{bound['head_s_per_img']:.3f} s/img, {100 * bound['head_share']:.0f}% of "
            f"UperNet-ConvNeXt-T; a backbone costing nothing would make UperNet at most "
            f"{bound['max_speedup']:.2f}x, ours as timed alone predicts "
            f"{bound['predicted_speedup']:.2f}x")


def report_upernet_bound(rows: Sequence[dict]) -> Tuple[Optional[dict], Optional[str]]:
    """The UperNet bound of a run (None if it cannot be computed) and the line that says it
    or why not; no line if the run timed none of the bound's models."""
    timed = {r['model'] for r in rows}
    if not any(spec.name in timed for spec in UPERNET_BOUND_MODELS):
        return None, None
    try:
        bound = upernet_bound(rows)
    except NoBound as why:
        return None, f'UperNet bound not computed: {why}'
    return bound, format_upernet_bound(bound)
