"""Preparing a config for the machine it runs on, and checking its data before a run."""
import datetime
import os
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from PIL import Image

_DATA_HINT = ('Prepare ADE20K with `python tools/prepare_ade20k.py ADEChallengeData2016.zip` '
              '(see README "Dataset"), or point the config at your copy with '
              '--cfg-options train_dataloader.dataset.data_root=... '
              'val_dataloader.dataset.data_root=... test_dataloader.dataset.data_root=...')


def load_run_config(path: str, launcher: str = 'none', cfg_options: Optional[dict] = None,
                    work_dir: Optional[str] = None,
                    check_dataloaders: Sequence[str] = ()) -> Config:
    """What tools/train.py and tools/test.py do first: read the config, apply the command
    line, check the data (:func:`check_data`) and adapt to the device
    (:func:`adapt_to_device`). ``work_dir`` defaults to ``work_dirs/<config name>``."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = os.path.join('./work_dirs', os.path.splitext(os.path.basename(path))[0])
    check_data(cfg, check_dataloaders)
    adapt_to_device(cfg)
    return cfg


def replace_sync_bn(node: Any) -> int:
    """Turn every ``SyncBN`` norm config under ``node`` into ``BN``; return how many."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += replace_sync_bn(value)
    return count


def adapt_to_device(cfg: Config) -> None:
    """Make a GPU config runnable on a machine without CUDA.

    ``torch.nn.SyncBatchNorm`` only synchronises CUDA tensors, and NCCL needs GPUs, so on a
    CPU-only machine SyncBN becomes BN and the process group uses gloo.  mmengine's
    ``init_dist`` for the pytorch launcher calls ``torch.cuda.set_device`` unconditionally,
    so here the gloo process group is created first (mmengine then reuses it), and its
    default DDP wrapper passes a GPU index as ``device_ids``, which CPU modules refuse.
    Nothing changes where CUDA is available.
    """
    if torch.cuda.is_available():
        return
    replaced = replace_sync_bn(cfg.model)
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    print_log(f'No CUDA device: {replaced} SyncBN layers configured as BN and the '
              'distributed backend set to gloo', logger='current')
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    if cfg.get('launcher', 'none') == 'pytorch' and not torch.distributed.is_initialized():
        timeout = env_cfg['dist_cfg'].get('timeout')
        # torch < 2.2 refuses timeout=None: pass it only when the config sets one.
        kwargs = {'timeout': datetime.timedelta(seconds=timeout)} if timeout else {}
        torch.distributed.init_process_group(backend='gloo', **kwargs)


def _datasets(dataset_cfg: dict) -> Iterable[dict]:
    if 'datasets' in dataset_cfg:
        for sub in dataset_cfg['datasets']:
            yield from _datasets(sub)
    elif 'dataset' in dataset_cfg:
        yield from _datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def check_data(cfg: Config, dataloaders: Iterable[str], check_labels: bool = True) -> None:
    """Fail before the run starts if a dataloader's data is missing or inconsistent.

    Checks that the image and annotation folders exist and are not empty, that every image
    has its annotation, and (``check_labels``) that no annotation holds a value beyond the
    model's classes; all problems are reported together, naming folders, files and values.

    Raises:
        FileNotFoundError: for missing folders or files.
        ValueError: for label values out of range.
    """
    missing: List[str] = []
    bad_labels: List[str] = []
    num_classes = cfg.model.get('decode_head', {}).get('num_classes')
    # Reading every annotation is the slow part (~20K PNGs for ADE20K): one process of a
    # distributed launch does it, and its failure ends the job for all.
    check_labels = check_labels and _launch_rank() == 0
    for name in dataloaders:
        loader = cfg.get(name)
        if not loader:
            continue
        for dataset in _datasets(loader['dataset']):
            problems = _check_dataset(name, dataset, num_classes if check_labels else None)
            missing.extend(problems[0])
            bad_labels.extend(problems[1])
    if missing:
        raise FileNotFoundError('Dataset not found or incomplete:\n  ' + '\n  '.join(missing[:20])
                                + ('\n  ...' if len(missing) > 20 else '') + '\n' + _DATA_HINT)
    if bad_labels:
        raise ValueError('Annotations with values outside the classes of the model:\n  '
                         + '\n  '.join(bad_labels[:20])
                         + ('\n  ...' if len(bad_labels) > 20 else ''))


def _launch_rank() -> int:
    """This process's global rank as set by torchrun or Slurm (the process group is not
    up yet when the data is checked)."""
    return int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', 0)))


def _check_dataset(loader: str, dataset: dict, num_classes: Optional[int]
                   ) -> Tuple[List[str], List[str]]:
    root = dataset.get('data_root', '') or ''
    prefixes = dataset.get('data_prefix', {}) or {}
    folders = {key: os.path.join(root, prefixes[key]) for key in ('img_path', 'seg_map_path')
               if key in prefixes}
    missing = []
    for key, folder in folders.items():
        if not os.path.isdir(folder):
            missing.append(f'{loader}: {key} folder {folder!r} does not exist')
        elif not any(entry.is_file() for entry in os.scandir(folder)):
            missing.append(f'{loader}: {key} folder {folder!r} is empty')
    if missing or len(folders) < 2:
        return missing, []
    img_suffix = dataset.get('img_suffix', '.jpg')
    seg_suffix = dataset.get('seg_map_suffix', '.png')
    images = [f[:-len(img_suffix)] for f in os.listdir(folders['img_path'])
              if f.endswith(img_suffix)]
    labels = set(f[:-len(seg_suffix)] for f in os.listdir(folders['seg_map_path'])
                 if f.endswith(seg_suffix))
    for stem in sorted(set(images) - labels):
        missing.append(f'{loader}: no annotation '
                       f'{os.path.join(folders["seg_map_path"], stem + seg_suffix)} for image '
                       f'{os.path.join(folders["img_path"], stem + img_suffix)}')
    if num_classes is None or missing:
        return missing, []
    # ADE20K-style annotations use 0 for "unlabelled" and 1..num_classes for the classes.
    reduce_zero_label = dataset.get('reduce_zero_label', dataset.get('type') == 'ADE20KDataset')
    highest = num_classes if reduce_zero_label else num_classes - 1
    bad = []
    for stem in sorted(labels):
        path = os.path.join(folders['seg_map_path'], stem + seg_suffix)
        values = np.unique(np.asarray(Image.open(path)))
        wrong = values[(values > highest) & (values != 255)]
        if wrong.size:
            bad.append(f'{path}: values {wrong.tolist()[:5]} (allowed 0..{highest} and 255 '
                       f'for {num_classes} classes)')
    return [], bad


def finish_distributed() -> None:
    """Tear the process group down at the end of a run.

    mmengine leaves it alive; with gloo, a process exiting with a live group aborts
    ("terminate called without an active exception") and torchrun reports a failure.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
