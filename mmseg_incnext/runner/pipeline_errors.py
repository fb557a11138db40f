"""Naming the file when a sample fails during a run: every pipeline of a config wrapped in
:class:`.transforms.NameFilesOnError`, and what to tell the user when training stops on one."""
from typing import Iterable

from mmengine.config import Config

from mmseg_incnext.utils.checkpoint_io import latest_complete_checkpoint
from mmseg_incnext.datasets.config_check import dataloader_datasets
from mmseg_incnext.datasets.transforms import FAILURE_PREFIX


def name_files_on_error(cfg: Config, dataloaders: Iterable[str]) -> None:
    """Wrap the pipeline of the named dataloaders' datasets in
    :class:`~mmseg_incnext.datasets.transforms.NameFilesOnError`, so a file that cannot be read
    during the run is named in the error."""
    for _, dataset in dataloader_datasets(cfg, dataloaders):
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
