"""Preparing a config for the machine it runs on, checking its data before a run, and
naming the file when a sample fails during one."""
import argparse
import datetime
import logging
import os
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from mmseg_incnext.checkpoint_io import latest_complete_checkpoint
from mmseg_incnext.data_check import SplitSpec, scan_split
from mmseg_incnext.transforms import FAILURE_PREFIX

_DATA_HINT = ('Prepare ADE20K with `python tools/prepare_ade20k.py ADEChallengeData2016.zip` '
              '(see README "Dataset"), or point the config at your copy with '
              '--cfg-options train_dataloader.dataset.data_root=... '
              'val_dataloader.dataset.data_root=... test_dataloader.dataset.data_root=...')


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments tools/train.py and tools/test.py share with mmseg's (and
    ``--skip-data-check``)."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--skip-data-check', action='store_true',
                        help='do not decode and check every dataset file before the run')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_run_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and export ``LOCAL_RANK`` as older launchers pass it only as an argument."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_run_config(path: str, launcher: str = 'none', cfg_options: Optional[dict] = None,
                    work_dir: Optional[str] = None) -> Config:
    """What tools/train.py and tools/test.py do first: read the config, apply the command
    line and adapt to the device (:func:`adapt_to_device`). ``work_dir`` defaults to
    ``work_dirs/<config name>``."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = os.path.join('./work_dirs', os.path.splitext(os.path.basename(path))[0])
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
    CPU-only machine SyncBN becomes BN and the process group uses gloo (created by
    :func:`init_distributed`); mmengine's default DDP wrapper passes a GPU index as
    ``device_ids``, which CPU modules refuse. Nothing changes where CUDA is available.
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


def init_distributed(cfg: Config) -> None:
    """Start the process group of a launched job now (mmengine's Runner reuses it), so that
    ranks can share the data check's verdict before anything is built. A no-op without a
    launcher or when a group exists.

    mmengine's ``init_dist`` selects a CUDA device unconditionally, so without CUDA the
    gloo group is created here directly.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.distributed.is_initialized():
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    if torch.cuda.is_available():
        from mmengine.dist import init_dist
        init_dist(launcher, **dist_cfg)
        return
    if launcher != 'pytorch':
        raise RuntimeError(f'Without CUDA only the pytorch launcher (torchrun) is supported, '
                           f'got launcher={launcher!r}')
    timeout = dist_cfg.get('timeout')
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


def _loader_datasets(cfg: Config, dataloaders: Iterable[str]) -> Iterable[Tuple[str, dict]]:
    """(dataloader name, dataset config) of the named dataloaders that the config has,
    concatenated and wrapped datasets included."""
    for name in dataloaders:
        loader = cfg.get(name)
        if loader:
            for dataset in _datasets(loader['dataset']):
                yield name, dataset


def split_specs(cfg: Config, dataloaders: Iterable[str]) -> List[SplitSpec]:
    """The image/annotation folders of the named dataloaders' datasets (concatenated and
    wrapped datasets included), with the label range of the model's decode head."""
    num_classes = cfg.model.get('decode_head', {}).get('num_classes')
    specs = []
    for name, dataset in _loader_datasets(cfg, dataloaders):
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


_MAX_LISTED = 100


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
                      f'pairs {how}',
                      logger='current')
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


def name_files_on_error(cfg: Config, dataloaders: Iterable[str]) -> None:
    """Wrap the pipeline of the named dataloaders' datasets in
    :class:`~mmseg_incnext.transforms.NameFilesOnError`, so a file that cannot be read
    during the run is named in the error."""
    for _, dataset in _loader_datasets(cfg, dataloaders):
        pipeline = dataset.get('pipeline')
        if pipeline and not (len(pipeline) == 1
                             and pipeline[0].get('type') == 'NameFilesOnError'):
            dataset['pipeline'] = [dict(type='NameFilesOnError', transforms=pipeline)]


def data_failure_message(err: BaseException, work_dir: str) -> str:
    """What to tell the user when training stopped on a sample it could not read: the
    file, the error, and the checkpoint that ``--resume`` continues from."""
    lines = [line[line.index(FAILURE_PREFIX):] for line in str(err).splitlines()
             if FAILURE_PREFIX in line]
    what = lines[-1] if lines else str(err)
    checkpoint = latest_complete_checkpoint(work_dir)
    resume = (f'--resume continues from {checkpoint}' if checkpoint else
              f'no checkpoint was saved in {work_dir} yet, so the run starts over')
    return (f'Training stopped: {what}\nRestore or fix the file (or remove the sample), then '
            f'run again with --resume; {resume}.')


def finish_distributed() -> None:
    """Tear the process group down at the end of a run.

    mmengine leaves it alive; with gloo, a process exiting with a live group aborts
    ("terminate called without an active exception") and torchrun reports a failure.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
