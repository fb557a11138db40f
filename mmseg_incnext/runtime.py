"""Preparing a config for the machine it runs on, and checking its data before a run."""
import os
from typing import Any, Iterable, List

import torch
from mmengine.config import Config
from mmengine.logging import print_log

_DATA_HINT = ('Prepare ADE20K with `python tools/prepare_ade20k.py ADEChallengeData2016.zip` '
              '(see README "Dataset"), or point the config at your copy with '
              '--cfg-options train_dataloader.dataset.data_root=... '
              'val_dataloader.dataset.data_root=... test_dataloader.dataset.data_root=...')


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
        torch.distributed.init_process_group(backend='gloo')


def _datasets(dataset_cfg: dict) -> Iterable[dict]:
    if 'datasets' in dataset_cfg:
        for sub in dataset_cfg['datasets']:
            yield from _datasets(sub)
    elif 'dataset' in dataset_cfg:
        yield from _datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def check_data(cfg: Config, dataloaders: Iterable[str]) -> None:
    """Fail before the run starts if a dataloader's image or annotation folder is missing.

    Raises:
        FileNotFoundError: naming the folder and how to prepare the data.
    """
    problems: List[str] = []
    for name in dataloaders:
        loader = cfg.get(name)
        if not loader:
            continue
        for dataset in _datasets(loader['dataset']):
            root = dataset.get('data_root', '') or ''
            prefixes = dataset.get('data_prefix', {}) or {}
            for key in ('img_path', 'seg_map_path'):
                if key not in prefixes:
                    continue
                folder = os.path.join(root, prefixes[key])
                if not os.path.isdir(folder):
                    problems.append(f'{name}: {key} folder {folder!r} does not exist')
                elif not any(entry.is_file() for entry in os.scandir(folder)):
                    problems.append(f'{name}: {key} folder {folder!r} is empty')
    if problems:
        raise FileNotFoundError('Dataset not found:\n  ' + '\n  '.join(problems) + '\n'
                                + _DATA_HINT)


def finish_distributed() -> None:
    """Tear the process group down at the end of a run.

    mmengine leaves it alive; with gloo, a process exiting with a live group aborts
    ("terminate called without an active exception") and torchrun reports a failure.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
