"""Evaluate a checkpoint (mIoU) with an InceptionNeXt config; --tta for multi-scale + flip.

Same arguments as mmsegmentation's tools/test.py. The paper's UperNet numbers are
multi-scale (--tta); its Semantic FPN numbers are single-scale. CHECKPOINT may be an .onnx
file from tools/export_onnx.py (--output logits) or tools/quantize_onnx.py: ONNX Runtime (or
OpenVINO with --backend openvino, in fp32 or --precision bf16) then runs the graph inside
mmseg's test, whole-image or sliding-window as the config says, with or without --tta
(sliding windows and --tta need a --dynamic export).
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import argparse
import os

from mmengine.runner import Runner

import mmseg_incnext.utils.stack_fixes  # noqa: F401  (safe checkpoint reading, atomic writes)
from mmseg_incnext.runner.pipeline_errors import name_files_on_error
from mmseg_incnext.runner.process_group import finish_distributed, init_distributed
from mmseg_incnext.runner.arguments import (add_backend_arguments, add_run_arguments,
                                            check_backend_arguments, parse_run_args)
from mmseg_incnext.runner.config import load_run_config
from mmseg_incnext.datasets.config_check import check_data


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a segmentor checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file, or an .onnx export')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', help='dir to save raw predictions for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='dir (under work_dir) to save painted images')
    parser.add_argument('--wait-time', type=float, default=2, help='interval of show (s)')
    parser.add_argument('--tta', action='store_true',
                        help='multi-scale (0.5-1.75) and flip test-time augmentation')
    add_backend_arguments(parser)
    add_run_arguments(parser)
    return parse_run_args(parser)


def main():
    args = parse_args()
    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint file not found: {args.checkpoint}')
    onnx = args.checkpoint.endswith('.onnx')
    check_backend_arguments(args, onnx)
    if onnx and args.launcher != 'none':
        raise SystemExit('An .onnx model is tested in one process (its runtime uses every '
                         'core); run tools/test.py without a launcher')
    cfg = load_run_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    init_distributed(cfg)
    check_data(cfg, ['test_dataloader'], skip=args.skip_data_check)
    if onnx:
        from mmseg_incnext.deploy.onnx_runtime import onnx_model_cfg
        cfg.model = onnx_model_cfg(cfg.model, args.checkpoint, backend=args.backend,
                                   precision=args.precision)
    else:
        cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        hooks = cfg.default_hooks
        assert 'visualization' in hooks, 'the config has no visualization hook'
        hooks.visualization.draw = True
        hooks.visualization.show = args.show
        hooks.visualization.wait_time = args.wait_time
        if args.show_dir:
            cfg.visualizer.save_dir = args.show_dir
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    name_files_on_error(cfg, ['test_dataloader'])
    runner = Runner.from_cfg(cfg)
    runner.test()
    del runner  # its model goes before the process group
    finish_distributed()


if __name__ == '__main__':
    main()
