"""The whole pipeline offline on a CPU: synthetic data -> training -> mIoU -> overlay.

    python tools/run_demo.py [--work-dir work_dirs/demo] [--iters 300] [--hard]

1. writes a synthetic dataset in ADE20K's layout (tools/make_synthetic_ade20k.py; with
   ``--hard`` its harder scenes, on which the model stays well below 100 mIoU, so that
   what int8 quantization loses can show);
2. trains InceptionNeXt-atto + Semantic FPN on it from scratch
   (configs/demo/incnext_atto_fpn_synthetic.py), with mmengine's progress log;
3. evaluates mIoU on the held-out split and compares it with chance;
4. segments a held-out image with mmseg's inference API and writes the overlay.
With a real ADE20K and config, the same steps are tools/train.py, tools/test.py and
tools/image_demo.py (see README).
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import argparse
import os

import numpy as np
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

import mmseg_incnext.utils.stack_fixes  # noqa: F401  (safe checkpoint reading, atomic writes)
from mmseg_incnext.runner.device import adapt_to_device
from mmseg_incnext.datasets.synthetic import make_synthetic_ade20k
from mmseg_incnext.runner.visualization import read_image, save_prediction

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO_ROOT, 'configs', 'demo', 'incnext_atto_fpn_synthetic.py')


def chance_miou(label_dir: str, num_classes: int = 150) -> float:
    """Expected mIoU (%) of guessing each pixel's class uniformly at random."""
    counts = np.zeros(256, np.int64)
    for name in os.listdir(label_dir):
        counts += np.bincount(np.asarray(Image.open(os.path.join(label_dir, name))).ravel(),
                              minlength=256)
    freq = counts[1:num_classes + 1] / counts[1:num_classes + 1].sum()  # 0 is unlabelled
    guess = 1.0 / num_classes
    present = freq > 0
    iou = freq[present] * guess / (freq[present] + guess - freq[present] * guess)
    return float(iou.mean() * 100)


def demo_config(work_dir: str, data_root: str, iters: int) -> Config:
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = work_dir
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    # Evaluate once, on the held-out split, after training.
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters)
    cfg.param_scheduler[0].end = min(30, iters // 5)
    cfg.param_scheduler[1].begin = min(30, iters // 5)
    cfg.param_scheduler[1].end = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.launcher = 'none'
    adapt_to_device(cfg)
    return cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--iters', type=int, default=300, help='training iterations')
    parser.add_argument('--num-train', type=int, default=40)
    parser.add_argument('--num-val', type=int, default=10)
    parser.add_argument('--hard', action='store_true',
                        help='harder scenes: more, similar-looking classes and more noise')
    args = parser.parse_args()
    work_dir = os.path.abspath(args.work_dir)
    data_root = os.path.join(work_dir, 'data')

    print(f'[1/4] synthetic ADE20K-layout dataset in {data_root}')
    make_synthetic_ade20k(data_root, args.num_train, args.num_val, hard=args.hard)

    print(f'[2/4] training InceptionNeXt-atto + Semantic FPN for {args.iters} iterations')
    cfg = demo_config(work_dir, data_root, args.iters)
    runner = Runner.from_cfg(cfg)
    runner.train()
    checkpoint = os.path.join(work_dir, f'iter_{args.iters}.pth')

    print('[3/4] evaluating on the held-out split')
    metrics = runner.test()
    chance = chance_miou(os.path.join(data_root, 'annotations', 'validation'))

    print('[4/4] segmenting a held-out image with mmseg.apis.inference_model')
    from mmseg.apis import inference_model, init_model
    model = init_model(cfg, checkpoint, device='cpu')
    image_path = os.path.join(data_root, 'images', 'validation',
                              sorted(os.listdir(os.path.join(data_root, 'images',
                                                             'validation')))[0])
    image = read_image(image_path)
    labels = inference_model(model, image).pred_sem_seg.data[0].cpu().numpy()
    overlay, label_png = save_prediction(os.path.join(work_dir, 'predictions'), 'held_out',
                                         image, labels, model.dataset_meta['classes'],
                                         model.dataset_meta['palette'])

    print('\n=== demo finished ===')
    print(f'held-out mIoU: {metrics["mIoU"]:.2f}  (aAcc {metrics["aAcc"]:.2f}; '
          f'random guessing: {chance:.2f})')
    print(f'dataset:    {data_root}')
    print(f'checkpoint: {checkpoint}')
    print(f'logs:       {os.path.join(work_dir, runner.timestamp)}')
    print(f'overlay:    {overlay}')
    print(f'labels:     {label_png}')


if __name__ == '__main__':
    main()
