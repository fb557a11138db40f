"""Cityscapes from its official archives into mmseg's layout (tools/prepare_cityscapes.py).

The sources are ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` as
downloaded, or folders they were unpacked into; they give::

    OUT/leftImg8bit/{train,val}/CITY/NAME_leftImg8bit.png       (copied)
    OUT/gtFine/{train,val}/CITY/NAME_gtFine_labelTrainIds.png   (from NAME_gtFine_labelIds.png)

the ``data_root`` of mmseg's Cityscapes dataset config. Every file is written whole or not at
all (:mod:`.atomic_files`); a rerun skips files already there with the same content and
refuses to replace different ones. The test split has no public labels and is left out.
"""
import io
import multiprocessing
import os
import re
import zipfile
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from mmseg_incnext.utils.atomic_files import atomic_write
from mmseg_incnext.datasets.cityscapes import NUM_CLASSES, UnknownLabelIdError, to_train_ids
from mmseg_incnext.datasets.data_check import SplitSpec, scan_split

SPLITS = ('train', 'val')
OFFICIAL_COUNTS = {'train': 2975, 'val': 500}
IMAGE_ARCHIVE, LABEL_ARCHIVE = 'leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip'
IMG_SUFFIX, SEG_SUFFIX = '_leftImg8bit.png', '_gtFine_labelTrainIds.png'
_IMAGE = re.compile(r'^leftImg8bit/(train|val)/([^/]+)/([^/]+)_leftImg8bit\.png$')
_LABEL = re.compile(r'^gtFine/(train|val)/([^/]+)/([^/]+)_gtFine_labelIds\.png$')
_MAX_LISTED = 10

Key = Tuple[str, str, str]  # split, city, name (e.g. 'aachen_000000_000019')


class CityscapesPrepError(Exception):
    """Base of the errors below; each message names the file or archive."""


class MissingArchiveError(CityscapesPrepError):
    """A source does not exist, or no source holds the images or the labels."""


class ArchiveContentsError(CityscapesPrepError):
    """A source is no Cityscapes archive, is damaged, or images and labels do not pair."""


class OutputConflictError(CityscapesPrepError):
    """An output file exists with other content than the sources give."""


class CityscapesLabelError(CityscapesPrepError):
    """An annotation holds a value that is no label id (see :func:`.to_train_ids`)."""


class Source:
    """An unpacked folder or a zip archive, read by member paths relative to its root."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise MissingArchiveError(f'{path} not found (expected {IMAGE_ARCHIVE} and '
                                      f'{LABEL_ARCHIVE}, or the folder they were unpacked into)')
        self.path = path
        self.is_zip = not os.path.isdir(path)
        self._zip: Optional[zipfile.ZipFile] = None
        if self.is_zip and not zipfile.is_zipfile(path):
            raise ArchiveContentsError(f'{path} is not a valid zip file; download it again')

    def __getstate__(self):  # an open zip does not cross processes; each opens its own
        return {**self.__dict__, '_zip': None}

    def members(self) -> Iterator[str]:
        if self.is_zip:
            yield from (name for name in self._archive().namelist() if not name.endswith('/'))
            return
        for folder, _, files in os.walk(self.path):
            for name in files:
                yield os.path.relpath(os.path.join(folder, name), self.path).replace(os.sep, '/')

    def file_path(self, member: str) -> Optional[str]:
        """The member's path on disk (None in a zip)."""
        return None if self.is_zip else os.path.join(self.path, *member.split('/'))

    def read(self, member: str) -> bytes:
        try:
            if self.is_zip:
                return self._archive().read(member)
            with open(self.file_path(member), 'rb') as f:
                return f.read()
        except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
            raise ArchiveContentsError(f'{self.path}: cannot read {member} ({err})') from None

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
        return self._zip


def _index(sources: Sequence[Source]) -> Tuple[Dict[Key, Tuple[Source, str]],
                                               Dict[Key, Tuple[Source, str]]]:
    """(images, labels): key -> (source, member) of the train and val files of all sources."""
    images: Dict[Key, Tuple[Source, str]] = {}
    labels: Dict[Key, Tuple[Source, str]] = {}
    for source in sources:
        found, sample = 0, []
        for member in source.members():
            for pattern, table in ((_IMAGE, images), (_LABEL, labels)):
                match = pattern.match(member)
                if match:
                    table.setdefault(match.groups(), (source, member))
                    found += 1
                    break
            else:
                if len(sample) < 3 and not member.startswith(('leftImg8bit/', 'gtFine/')):
                    sample.append(member)
        if not found:
            raise ArchiveContentsError(
                f'{source.path} holds no Cityscapes train/val files (expected '
                'leftImg8bit/{train,val}/CITY/*_leftImg8bit.png as in '
                f'{IMAGE_ARCHIVE} or gtFine/{{train,val}}/CITY/*_gtFine_labelIds.png as in '
                f'{LABEL_ARCHIVE}; it has e.g. {sample})')
    given = ', '.join(source.path for source in sources)
    if not images:
        raise MissingArchiveError(f'no images (leftImg8bit/...) in {given}: pass '
                                  f'{IMAGE_ARCHIVE} too')
    if not labels:
        raise MissingArchiveError(f'no fine annotations (gtFine/..._gtFine_labelIds.png) in '
                                  f'{given}: pass {LABEL_ARCHIVE} too')
    return images, labels


def _unpaired(images: dict, labels: dict) -> List[str]:
    lines = [f'image {images[key][1]} has no annotation {_label_member(key)}'
             for key in sorted(set(images) - set(labels))]
    lines += [f'annotation {labels[key][1]} has no image {_image_member(key)}'
              for key in sorted(set(labels) - set(images))]
    return lines


def _image_member(key: Key) -> str:
    split, city, name = key
    return f'leftImg8bit/{split}/{city}/{name}_leftImg8bit.png'


def _label_member(key: Key) -> str:
    split, city, name = key
    return f'gtFine/{split}/{city}/{name}_gtFine_labelIds.png'


def output_paths(out: str, key: Key) -> Tuple[str, str]:
    """(image, train-id annotation) paths of one sample under ``out``."""
    split, city, name = key
    return (os.path.join(out, 'leftImg8bit', split, city, name + IMG_SUFFIX),
            os.path.join(out, 'gtFine', split, city, name + SEG_SUFFIX))


def _copy_image(source: Source, member: str, target: str) -> None:
    src_path = source.file_path(member)
    if src_path is not None and os.path.exists(target) and os.path.samefile(src_path, target):
        return  # converting in place: the image is where mmseg reads it
    data = source.read(member)
    if os.path.exists(target):
        with open(target, 'rb') as f:
            if f.read() == data:
                return
        raise OutputConflictError(f'{target} exists and differs from {member} in '
                                  f'{source.path}; remove it or choose another output folder')
    atomic_write(target, data)


def _convert_label(source: Source, member: str, target: str) -> None:
    where = f'{member} in {source.path}'
    try:
        label = Image.open(io.BytesIO(source.read(member)))
        label.load()
    except CityscapesPrepError:
        raise
    except Exception as err:  # PIL raises many types for bad files
        raise ArchiveContentsError(f'{where} does not decode ({type(err).__name__}: {err})') \
            from None
    if len(label.getbands()) > 1:
        raise ArchiveContentsError(f'{where} has {len(label.getbands())} channels (mode '
                                   f'{label.mode}); expected one channel of label ids')
    try:
        train_ids = to_train_ids(np.asarray(label))
    except UnknownLabelIdError as err:
        raise CityscapesLabelError(f'{where}: {err}') from None
    if os.path.exists(target):
        existing, error = _existing_label(target)
        if existing is not None and np.array_equal(existing, train_ids):
            return
        raise OutputConflictError(f'{target} exists and differs from the train ids of {where}'
                                  f'{error}; remove it or choose another output folder')
    buffer = io.BytesIO()
    Image.fromarray(train_ids).save(buffer, format='PNG')
    atomic_write(target, buffer.getvalue())


def _existing_label(path: str) -> Tuple[Optional[np.ndarray], str]:
    try:
        return np.asarray(Image.open(path)), ''
    except Exception as err:  # an unreadable file is a conflict too, named as such
        return None, f' (it does not decode: {type(err).__name__})'


def _convert(job: Tuple[Source, str, Source, str, str, str]) -> None:
    image_source, image_member, label_source, label_member, image_out, label_out = job
    _copy_image(image_source, image_member, image_out)
    _convert_label(label_source, label_member, label_out)


def _run(jobs: list, workers: int) -> None:
    if workers <= 1 or len(jobs) < 64:
        for job in jobs:
            _convert(job)
        return
    # fork: the workers need nothing re-imported; each opens the archives itself.
    context = multiprocessing.get_context(
        'fork' if 'fork' in multiprocessing.get_all_start_methods() else None)
    executor = ProcessPoolExecutor(workers, mp_context=context)
    try:
        for _ in executor.map(_convert, jobs, chunksize=16):
            pass
    finally:
        executor.shutdown(cancel_futures=True)


def convert(sources: Sequence[str], out: str, workers: Optional[int] = None) -> Dict[str, int]:
    """Write the train and val splits of ``sources`` under ``out``; return the pairs per
    split. Everything is listed and paired before the first file is written.

    Raises:
        MissingArchiveError, ArchiveContentsError, CityscapesLabelError,
        OutputConflictError: see each class.
    """
    opened = [Source(path) for path in sources]
    images, labels = _index(opened)
    unpaired = _unpaired(images, labels)
    if unpaired:
        listed = '\n  '.join(unpaired[:_MAX_LISTED])
        more = f'\n  ... and {len(unpaired) - _MAX_LISTED} more' \
            if len(unpaired) > _MAX_LISTED else ''
        raise ArchiveContentsError(f'{len(unpaired)} images and annotations do not pair '
                                   f'(an incomplete archive?):\n  {listed}{more}')
    jobs = [(*images[key], *labels[key], *output_paths(out, key)) for key in sorted(images)]
    _run(jobs, workers or os.cpu_count() or 1)
    return {split: sum(key[0] == split for key in images) for split in SPLITS}


def split_specs(out: str) -> List[SplitSpec]:
    """The splits as mmseg's Cityscapes config reads them, for :func:`.scan_split`."""
    return [SplitSpec(split, os.path.join(out, 'leftImg8bit', split),
                      os.path.join(out, 'gtFine', split), IMG_SUFFIX, SEG_SUFFIX,
                      max_label=NUM_CLASSES - 1) for split in SPLITS]


def check(out: str, expected: Optional[Dict[str, int]] = None) -> List[str]:
    """The problems of the prepared data (empty if none): the data check tools/train.py
    runs (:func:`.scan_split`), and the pair counts if ``expected`` gives them."""
    problems: List[str] = []
    for spec in split_specs(out):
        report = scan_split(spec)
        problems += report.missing + report.bad_files
        wanted = (expected or {}).get(spec.name)
        if report.pairs and wanted is not None and report.pairs != wanted:
            problems.append(f'{spec.name}: {report.pairs} images with annotations, expected '
                            f'{wanted}')
    return problems
