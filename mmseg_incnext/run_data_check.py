"""The data check before a run: the folders a config's dataloaders read, scanned once
(:func:`.data_check.scan_split`) and reported alike on every rank."""
import logging
import os
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from mmseg_incnext.data_check import SplitSpec, scan_split
from mmseg_incnext.run_config import dataloader_datasets

_DATA_HINT = ('Prepare ADE20K with `python tools/prepare_ade20k.py ADEChallengeData2016.zip` '
              '(see README "Dataset"), or point the config at your copy with '
              '--cfg-options train_dataloader.dataset.data_root=... '
              'val_dataloader.dataset.data_root=... test_dataloader.dataset.data_root=...')
_MAX_LISTED = 100


def split_specs(cfg: Config, dataloaders: Iterable[str]) -> List[SplitSpec]:
    """The image/annotation folders of the named dataloaders' datasets (concatenated and
    wrapped datasets included), with the label range of the model's decode head."""
    num_classes = cfg.model.get('decode_head', {}).get('num_classes')
    specs = []
    for name, dataset in dataloader_datasets(cfg, dataloaders):
        root = dataset.get('data_root', '') or ''
        prefixes = dataset.get('data_prefix', {}) or {}
        if not {'img_path', 'seg_map_path'} <= set(prefixes):
            continue
        max_label = None
        if num_classes is not None:
            # ADE20K-style annotations use 0 for "unlabelled" and 1..num_classes.
            reduce_zero_label = dataset.get('reduce_zero_label',
                                            dataset.get('type') == 'ADE20KDataset')
            max_label = num_classes if reduce_zero_label else num_classes - 1
        specs.append(SplitSpec(
            name, os.path.join(root, prefixes['img_path']),
            os.path.join(root, prefixes['seg_map_path']),
            dataset.get('img_suffix', '.jpg'), dataset.get('seg_map_suffix', '.png'),
            max_label))
    return specs


def check_data(cfg: Config, dataloaders: Iterable[str], skip: bool = False) -> None:
    """Fail before the run starts if a dataloader's data is missing or has a bad file.

    Scans every split with :func:`~mmseg_incnext.data_check.scan_split` (decoding each
    image and annotation; clean verdicts are cached) and reports all problems together,
    naming each file. In a distributed job rank 0 scans and every rank raises the same
    error. ``skip`` (``--skip-data-check``) or the config key ``skip_data_check=True``
    turns the check off, which is logged.

    Raises:
        FileNotFoundError: for missing folders or annotations.
        ValueError: for files that do not decode, size mismatches, multi-channel
            annotations and label values outside the classes.
    """
    if skip or cfg.get('skip_data_check', False):
        print_log('Data check skipped (--skip-data-check / skip_data_check=True): bad files '
                  'will only show when they are loaded', logger='current', level=logging.WARNING)
        return
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    verdict = [None]
    if not distributed or torch.distributed.get_rank() == 0:
        verdict[0] = _scan(split_specs(cfg, dataloaders))
    if distributed:
        from mmengine.dist import broadcast_object_list
        broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        error_type, message = verdict[0]
        raise {'FileNotFoundError': FileNotFoundError, 'ValueError': ValueError}[error_type](
            message)


def _scan(specs: Sequence[SplitSpec]) -> Optional[Tuple[str, str]]:
    """(error type, message) for the problems found, or None if the data is fine."""
    missing: List[str] = []
    bad: List[str] = []
    for spec in specs:
        report = scan_split(spec)
        missing.extend(report.missing)
        bad.extend(report.bad_files)
        if report.ok:
            how = 'unchanged since its last check' if report.cached else 'checked'
            print_log(f'Data check: {spec.name} {spec.img_dir}: {report.pairs} image/annotation '
                      f'pairs {how}', logger='current')
    if not (missing or bad):
        return None
    lines = missing + bad
    listed = '\n  '.join(lines[:_MAX_LISTED])
    more = f'\n  ... and {len(lines) - _MAX_LISTED} more' if len(lines) > _MAX_LISTED else ''
    if missing:
        return 'FileNotFoundError', (f'Dataset not found or incomplete ({len(lines)} '
                                     f'problems):\n  {listed}{more}\n{_DATA_HINT}')
    return 'ValueError', (f'Bad files in the dataset ({len(lines)}), found before the run '
                          f'started; fix or remove them:\n  {listed}{more}')
