"""Train a segmentor with an InceptionNeXt config (mmseg's train.py, plus conveniences).

Same arguments as mmsegmentation's tools/train.py, and:
  --auto-scale-lr  scale the learning rate from the config's base batch size
                   (auto_scale_lr.base_batch_size) to the actual total batch.
  --skip-data-check  skip the check of every dataset file (decoded, sizes, labels) that
                   otherwise runs before anything is built.
On a machine without CUDA, SyncBN becomes BN and distributed runs use gloo. A sample that
cannot be read during training stops the run naming the file and the checkpoint to resume.
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import argparse
import logging

from mmengine.logging import print_log
from mmengine.runner import Runner

from mmseg.registry import RUNNERS
import mmseg_incnext.utils.stack_fixes  # noqa: F401  (safe checkpoint reading, atomic writes)
from mmseg_incnext.utils.checkpoint_safety import CheckpointError
from mmseg_incnext.runner.pipeline_errors import data_failure_message, name_files_on_error
from mmseg_incnext.runner.process_group import finish_distributed, init_distributed
from mmseg_incnext.runner.arguments import add_run_arguments, parse_run_args
from mmseg_incnext.runner.config import load_run_config
from mmseg_incnext.datasets.config_check import check_data
from mmseg_incnext.datasets.transforms import DataReadError


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest complete checkpoint in the work_dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by actual total batch / base_batch_size')
    add_run_arguments(parser)
    return parse_run_args(parser)


def main():
    args = parse_args()
    cfg = load_run_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    init_distributed(cfg)
    check_data(cfg, ['train_dataloader', 'val_dataloader'], skip=args.skip_data_check)

    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.', logger='current',
                      level=logging.WARNING)
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True

    cfg.resume = args.resume
    if args.resume and cfg.get('load_from') is None:
        # mmengine trusts `last_checkpoint`; prefer the newest checkpoint that is complete.
        from mmseg_incnext.utils.checkpoint_io import latest_complete_checkpoint
        cfg.load_from = latest_complete_checkpoint(cfg.work_dir)
    name_files_on_error(cfg, ['train_dataloader', 'val_dataloader'])
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    try:
        runner.train()
    except DataReadError as err:
        raise SystemExit(data_failure_message(err, cfg.work_dir)) from None
    except CheckpointError as err:  # says what to do; a traceback adds nothing
        raise SystemExit(f'{type(err).__name__}: {err}') from None
    del runner  # its model goes before the process group
    finish_distributed()


if __name__ == '__main__':
    main()
