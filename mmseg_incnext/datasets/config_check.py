"""The data check before a run: the folders a config's dataloaders read, scanned once
(:func:`.data_check.scan_split`) and reported alike on every rank; and the datasets a
config's dataloaders hold."""
import inspect
import logging
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from mmseg_incnext.datasets.data_check import SplitSpec, scan_split

_OVERRIDE_HINT = ('or point the config at your copy with --cfg-options '
                  'train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=... '
                  'test_dataloader.dataset.data_root=...')
# How each dataset of our configs is prepared (README "Dataset").
_PREPARE_HINTS = {
    'ADE20KDataset': 'Prepare ADE20K with `python tools/prepare_ade20k.py '
                     'ADEChallengeData2016.zip`',
    'CityscapesDataset': 'Prepare Cityscapes with `python tools/prepare_cityscapes.py '
                         'leftImg8bit_trainvaltest.zip gtFine_trainvaltest.zip`',
}
_MAX_LISTED = 100
_DEFAULT_KEYS = ('img_suffix', 'seg_map_suffix', 'reduce_zero_label')


def _leaf_datasets(dataset_cfg: dict) -> Iterable[dict]:
    if 'datasets' in dataset_cfg:
        for sub in dataset_cfg['datasets']:
            yield from _leaf_datasets(sub)
    elif 'dataset' in dataset_cfg:
        yield from _leaf_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def dataloader_datasets(cfg: Config, dataloaders: Iterable[str]) -> Iterable[Tuple[str, dict]]:
    """(dataloader name, dataset config) of the named dataloaders that the config has,
    the datasets inside concatenated and wrapped datasets included."""
    for name in dataloaders:
        loader = cfg.get(name)
        if loader:
            for dataset in _leaf_datasets(loader['dataset']):
                yield name, dataset


def _class_defaults(dataset_type: Any) -> Dict[str, Any]:
    """The defaults of ``img_suffix``, ``seg_map_suffix`` and ``reduce_zero_label`` that
    the dataset class gives (Cityscapes' suffixes, ADE20K's reduce_zero_label), read from
    the ``__init__`` signatures along its class hierarchy; empty for an unknown type."""
    if isinstance(dataset_type, str):
        from mmseg.registry import DATASETS
        dataset_type = DATASETS.get(dataset_type)
    defaults: Dict[str, Any] = {}
    for cls in getattr(dataset_type, '__mro__', ()):
        if '__init__' not in vars(cls):
            continue
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if name in _DEFAULT_KEYS and parameter.default is not inspect.Parameter.empty:
                defaults.setdefault(name, parameter.default)
    return defaults


def split_specs(cfg: Config, dataloaders: Iterable[str]) -> List[SplitSpec]:
    """The image/annotation folders of the named dataloaders' datasets (concatenated and
    wrapped datasets included), with their file suffixes and the label range of the model's
    decode head; what the config leaves out, the dataset class's defaults give."""
    num_classes = cfg.model.get('decode_head', {}).get('num_classes')
    specs = []
    for name, dataset in dataloader_datasets(cfg, dataloaders):
        root = dataset.get('data_root', '') or ''
        prefixes = dataset.get('data_prefix', {}) or {}
        if not {'img_path', 'seg_map_path'} <= set(prefixes):
            continue
        settings = {'img_suffix': '.jpg', 'seg_map_suffix': '.png', 'reduce_zero_label': False,
                    **_class_defaults(dataset.get('type')),
                    **{key: dataset[key] for key in _DEFAULT_KEYS if key in dataset}}
        max_label = None
        if num_classes is not None:
            # With reduce_zero_label (ADE20K) 0 is "unlabelled" and the classes 1..num_classes.
            max_label = num_classes if settings['reduce_zero_label'] else num_classes - 1
        specs.append(SplitSpec(
            name, os.path.join(root, prefixes['img_path']),
            os.path.join(root, prefixes['seg_map_path']),
            settings['img_suffix'], settings['seg_map_suffix'], max_label))
    return specs


def _data_hint(cfg: Config, dataloaders: Iterable[str]) -> str:
    types = {dataset.get('type') for _, dataset in dataloader_datasets(cfg, dataloaders)}
    prepare = [hint for dataset_type, hint in _PREPARE_HINTS.items()
               if dataset_type in types or f'mmseg.{dataset_type}' in types]
    return f'{"; ".join(prepare) or "Prepare the dataset"} (see README "Dataset"), ' \
        + _OVERRIDE_HINT


def check_data(cfg: Config, dataloaders: Iterable[str], skip: bool = False) -> None:
    """Fail before the run starts if a dataloader's data is missing or has a bad file.

    Scans every split with :func:`~mmseg_incnext.datasets.data_check.scan_split` (decoding each
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
        verdict[0] = _scan(split_specs(cfg, dataloaders), _data_hint(cfg, dataloaders))
    if distributed:
        from mmengine.dist import broadcast_object_list
        broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        error_type, message = verdict[0]
        raise {'FileNotFoundError': FileNotFoundError, 'ValueError': ValueError}[error_type](
            message)


def _scan(specs: Sequence[SplitSpec], hint: str) -> Optional[Tuple[str, str]]:
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
                                     f'problems):\n  {listed}{more}\n{hint}')
    return 'ValueError', (f'Bad files in the dataset ({len(lines)}), found before the run '
                          f'started; fix or remove them:\n  {listed}{more}')
