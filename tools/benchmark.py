"""Speed and memory benchmark: InceptionNeXt against its peers, side by side.

All contenders run in ONE process, interleaved after a warm-up, each round in another
order (a Williams design: over n rounds, 2n for an odd number n of models, every model
takes every position and follows every other model equally often), so slow drifts of the
machine and the after-effects of the previous model's step hit every contender alike.
Reports images/s (median and min-max over repeats) and peak memory for inference and
training steps (forward, backward, AdamW step), in NCHW and channels_last; ``*`` marks the
better layout per model.
Each table gives ratios against its references (timm's InceptionNeXt, ConvNeXt-T); a
control pair (two copies of the same model) shows the noise; with ``--max-control-gap``
a run whose pair ran further apart is measured again and does not count. The first line
names the machine as torch reports it (version, CPU capability, oneDNN, threads).
With ``--onnx`` or ``--openvino`` each inference table is followed by its hardware floor:
the segmentor's MACs over the CPU's peak in each contender's number format, as a large
matrix product measured here gives it (:mod:`mmseg_incnext.runner.benchmark.floor`);
``--profile N`` then says where the time above the floor goes.
The work is done by :mod:`mmseg_incnext.runner.benchmark`, one module per concern.

Examples::

    python tools/benchmark.py                                   # backbones, 224x224
    python tools/benchmark.py --level segmentor --batch 2      # UperNet / FPN, 512x512
    python tools/benchmark.py --level segmentor --sizes 512 1024 2048 --modes infer
    python tools/benchmark.py --level segmentor --onnx --only "ONNX Runtime" --modes infer
    python tools/benchmark.py --level segmentor --openvino --modes infer --batch 1   # OpenVINO
    python tools/benchmark.py --sizes 512 --batch 1 --modes infer --runs 3   # three runs
    python tools/benchmark.py --sizes 512 --batch 2 --modes train --runs 3 \
        --only "no output norms" --max-control-gap 3           # runs with noise under 3%

Peak memory: CUDA ``torch.cuda.max_memory_allocated``; CPU the peak resident-set growth
during one extra step (sampled every millisecond after ``malloc_trim``), in MiB.
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# after the checkout is on the path
from mmseg_incnext.runner.benchmark.cli import main  # noqa: E402

if __name__ == '__main__':
    main()
