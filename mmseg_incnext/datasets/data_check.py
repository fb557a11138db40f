"""Checking a segmentation dataset's files before a run, so a bad file never costs one.

:func:`scan_split` lists an image folder and its annotation folder (subfolders included, as
mmseg's datasets list them: Cityscapes has one per city), pairs them by name and decodes
every file (in parallel processes): images and annotations that do not decode, size
mismatches between an image and its annotation, annotations with more than one channel,
and label values beyond the classes are all reported at once, file by file.
A clean verdict is cached as an empty marker file named by a hash of the checks' version,
the folders, the file suffixes, the label range and every file's name, size and
modification time (its existence is the verdict), so a restarted run does not rescan
unchanged data.
"""
import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.utils import scandir, track_parallel_progress
from PIL import Image

# Bump when the checks change, so that cached verdicts of older checks are not trusted.
CHECK_VERSION = 2
EXIF_ORIENTATION = 0x0112
# Orientations that rotate by 90 degrees: decoders honouring EXIF (OpenCV) swap the sides.
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class SplitSpec:
    """One split of a dataset: its folders, file suffixes and label range.

    ``max_label`` is the highest valid label value (255 is always allowed, as mmseg's
    ignore index), or None to skip the label check.
    """
    name: str
    img_dir: str
    seg_dir: str
    img_suffix: str = '.jpg'
    seg_suffix: str = '.png'
    max_label: Optional[int] = None


@dataclass
class ScanReport:
    """What :func:`scan_split` found: ``missing`` (folders or annotations that are not
    there) and ``bad_files`` (files that are there but wrong), one line each."""
    split: str
    pairs: int = 0  # image/annotation pairs checked
    missing: List[str] = field(default_factory=list)
    bad_files: List[str] = field(default_factory=list)
    cached: bool = False

    @property
    def ok(self) -> bool:
        return not (self.missing or self.bad_files)


def _decoded(path: str) -> Tuple[Optional[Image.Image], Optional[str]]:
    """The fully decoded image, or the reason it does not decode."""
    try:
        if os.path.getsize(path) == 0:
            return None, 'empty file'
        image = Image.open(path)
        image.load()
        return image, None
    except Exception as err:  # PIL raises many types for bad files; report them all
        return None, f'does not decode ({type(err).__name__}: {err})'


def _displayed_size(image: Image.Image) -> Tuple[int, int]:
    """(width, height) as a decoder applying the EXIF orientation returns it."""
    width, height = image.size
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION)
    except Exception:
        orientation = None
    return (height, width) if orientation in TRANSPOSING_ORIENTATIONS else (width, height)


def check_pair(img_path: str, seg_path: str, max_label: Optional[int]) -> List[str]:
    """Every problem of one image and its annotation, one line each (empty if none)."""
    image, image_error = _decoded(img_path)
    label, label_error = _decoded(seg_path)
    problems = [f'{path}: {error}' for path, error in
                ((img_path, image_error), (seg_path, label_error)) if error]
    if label is not None and len(label.getbands()) > 1:
        problems.append(f'{seg_path}: annotation has {len(label.getbands())} channels '
                        f'(mode {label.mode}); expected one channel of class indices, not a '
                        'colour-coded mask')
        label = None
    if image is not None and label is not None:
        image_size, label_size = _displayed_size(image), label.size
        if image_size != label_size:
            problems.append(f'{seg_path}: annotation is {label_size[0]}x{label_size[1]} but '
                            f'its image {img_path} is {image_size[0]}x{image_size[1]} '
                            '(width x height)')
    if label is not None and max_label is not None:
        values = np.unique(np.asarray(label))
        wrong = values[(values > max_label) & (values != 255)]
        if wrong.size:
            problems.append(f'{seg_path}: values {wrong.tolist()[:5]} (allowed 0..{max_label} '
                            'and 255)')
    return problems


def _check_pair_args(args: Tuple[str, str, Optional[int]]) -> List[str]:
    return check_pair(*args)


def _listing(folder: str, suffix: str) -> Dict[str, Tuple[int, int]]:
    """stem -> (size, mtime_ns) of the files under ``folder`` ending in ``suffix``, the stem
    relative to ``folder``: the files mmseg's ``BaseSegDataset`` lists (mmengine's
    ``scandir``, recursive, hidden files skipped)."""
    out = {}
    for name in scandir(folder, suffix, recursive=True):
        stat = os.stat(os.path.join(folder, name))
        out[name[:-len(suffix)]] = (stat.st_size, stat.st_mtime_ns)
    return out


def cache_dir() -> str:
    return os.path.join(os.environ.get('MMSEG_INCNEXT_CACHE',
                                       os.path.expanduser('~/.cache/mmseg-incnext')),
                        'data-checks')


def _verdict_key(spec: SplitSpec, images: dict, labels: dict) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([CHECK_VERSION, os.path.abspath(spec.img_dir),
                              os.path.abspath(spec.seg_dir), spec.img_suffix, spec.seg_suffix,
                              spec.max_label]).encode())
    for listing in (images, labels):
        for stem in sorted(listing):
            digest.update(f'{stem}\0{listing[stem][0]}\0{listing[stem][1]}\n'.encode())
    return digest.hexdigest()


def scan_split(spec: SplitSpec, workers: Optional[int] = None,
               use_cache: bool = True) -> ScanReport:
    """Check one split: folders, pairing, and (in ``workers`` processes, default one per
    core) every image and annotation. A clean result is cached (see the module doc)."""
    report = ScanReport(spec.name)
    for key, folder in (('img_path', spec.img_dir), ('seg_map_path', spec.seg_dir)):
        if not os.path.isdir(folder):
            report.missing.append(f'{spec.name}: {key} folder {folder!r} does not exist')
    if report.missing:
        return report
    images = _listing(spec.img_dir, spec.img_suffix)
    labels = _listing(spec.seg_dir, spec.seg_suffix)
    for folder, listing, suffix in ((spec.img_dir, images, spec.img_suffix),
                                    (spec.seg_dir, labels, spec.seg_suffix)):
        if not listing:
            report.missing.append(f'{spec.name}: folder {folder!r} has no {suffix} files')
    for stem in sorted(set(images) - set(labels)):
        report.missing.append(
            f'{spec.name}: no annotation {os.path.join(spec.seg_dir, stem + spec.seg_suffix)} '
            f'for image {os.path.join(spec.img_dir, stem + spec.img_suffix)}')
    if report.missing:
        return report
    stems = sorted(images)
    report.pairs = len(stems)
    clean_marker = os.path.join(cache_dir(), _verdict_key(spec, images, labels) + '.clean')
    if use_cache and os.path.isfile(clean_marker):
        report.cached = True
        return report
    jobs = [(os.path.join(spec.img_dir, stem + spec.img_suffix),
             os.path.join(spec.seg_dir, stem + spec.seg_suffix), spec.max_label)
            for stem in stems]
    report.bad_files = _run_checks(jobs, workers or os.cpu_count() or 1)
    if report.ok and use_cache:
        _remember_clean(clean_marker)
    return report


def _run_checks(jobs: Sequence[Tuple[str, str, Optional[int]]], workers: int) -> List[str]:
    """The problems of every job: in ``workers`` processes with mmengine's progress bar
    (shown on a terminal for 1000 files or more), or in this process for a few files."""
    if workers <= 1 or len(jobs) < 64:
        results = map(_check_pair_args, jobs)
    else:
        shown = len(jobs) >= 1000 and sys.stdout.isatty()
        with open(os.devnull, 'w') as devnull:
            results = track_parallel_progress(_check_pair_args, list(jobs), workers,
                                              chunksize=32, file=sys.stdout if shown else devnull)
    return [problem for found in results for problem in found]


def _remember_clean(marker: str) -> None:
    """Create the empty file that says a split was checked clean (see the module doc)."""
    try:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, 'w'):
            pass
    except OSError as err:  # not fatal: the next run rescans
        warnings.warn(f'Could not cache the data check verdict in {marker}: {err}')
