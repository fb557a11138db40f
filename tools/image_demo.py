"""Segment images with a trained checkpoint: colour overlays with a legend, and label PNGs.

    python tools/image_demo.py CONFIG CHECKPOINT INPUT [INPUT ...] [--out-dir DIR] [--device cpu]
        [--backend onnxruntime|openvino] [--precision fp32|bf16]    # for an .onnx CHECKPOINT

Each INPUT is an image, a folder of images, or a .txt file listing image paths. For every
image, DIR gets NAME_overlay.png (prediction over the image, with the classes present) and
NAME_labels.png (the class index of each pixel). Grayscale, RGBA and 16-bit images are
converted; very large images are segmented in sliding 512x512 windows. An image that cannot
be read is reported by name and the others are still processed (exit code 1 at the end).
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import argparse
import os
import sys
from typing import List

import torch
from mmengine.config import ConfigDict
from mmengine.utils import ProgressBar

import mmseg_incnext.utils.stack_fixes  # noqa: F401  (safe checkpoint reading, atomic writes)
from mmseg_incnext.runner.arguments import add_backend_arguments, check_backend_arguments
from mmseg_incnext.runner.visualization import IMAGE_EXTENSIONS, ImageReadError, read_image, \
    save_prediction

SLIDE_TEST_CFG = ConfigDict(mode='slide', crop_size=(512, 512), stride=(341, 341))


def collect_inputs(inputs: List[str]) -> List[str]:
    """Expand folders and .txt lists into image paths (missing files are kept, to report)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise SystemExit(f'error: no images ({", ".join(IMAGE_EXTENSIONS)}) in folder '
                                 f'{item}')
            paths.extend(found)
        elif item.endswith('.txt') and os.path.isfile(item):
            with open(item) as f:
                paths.extend(line.strip() for line in f if line.strip())
        else:
            paths.append(item)
    return paths


def output_name(path: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, k = stem, 1
    while name in used:
        name, k = f'{stem}_{k}', k + 1
    used.add(name)
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint of the trained segmentor, or an .onnx '
                        'file from tools/export_onnx.py (run with ONNX Runtime or OpenVINO)')
    parser.add_argument('inputs', nargs='+', help='images, folders or .txt lists of images')
    parser.add_argument('--out-dir', default='work_dirs/demo_outputs', help='output folder')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--opacity', type=float, default=0.5, help='overlay opacity (0-1)')
    parser.add_argument('--mode', choices=['auto', 'whole', 'slide'], default='auto',
                        help='whole-image or sliding-window inference; auto slides over '
                        'images larger than --slide-above pixels')
    parser.add_argument('--slide-above', type=int, default=4_000_000,
                        help='pixel count above which auto mode slides (default 4 MP)')
    add_backend_arguments(parser)
    args = parser.parse_args()
    check_backend_arguments(args, args.checkpoint.endswith('.onnx'))

    from mmseg.apis import inference_model, init_model
    paths = collect_inputs(args.inputs)
    if args.checkpoint.endswith('.onnx'):
        from mmseg_incnext.deploy.onnx_runtime import init_onnx_model
        model = init_onnx_model(args.config, args.checkpoint, device=args.device,
                                backend=args.backend, precision=args.precision)
    else:
        model = init_model(args.config, args.checkpoint, device=args.device)
    whole_test_cfg = model.test_cfg
    classes, palette = model.dataset_meta['classes'], model.dataset_meta['palette']

    failures, used_names = [], set()
    progress = ProgressBar(len(paths))
    for path in paths:
        try:
            image = read_image(path)
        except ImageReadError as err:
            failures.append(str(err))
            progress.update()
            continue
        slide = args.mode == 'slide' or (args.mode == 'auto' and
                                         image.shape[0] * image.shape[1] > args.slide_above)
        model.test_cfg = SLIDE_TEST_CFG if slide else whole_test_cfg
        with torch.no_grad():
            result = inference_model(model, image)
        labels = result.pred_sem_seg.data[0].cpu().numpy()
        save_prediction(args.out_dir, output_name(path, used_names), image, labels, classes,
                        palette, args.opacity)
        progress.update()

    done = len(paths) - len(failures)
    print(f'\n{done}/{len(paths)} images segmented; results in {args.out_dir}')
    for failure in failures:
        print(f'skipped {failure}', file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
