"""Shared test fixtures' building blocks: seeded timm models and checkpoints in every format."""
import copy
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from typing import Dict, List, NamedTuple, Optional

import numpy as np
import timm
import torch

TIMM_NAMES = {arch: f'inception_next_{arch}' for arch in ('atto', 'tiny', 'small', 'base')}


def seeded_timm_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A timm InceptionNeXt in eval mode with every parameter and buffer randomised.

    BatchNorm statistics and the layer scale are randomised too: with the default
    ``gamma = 1e-6`` a wrong MLP branch would hide below any tolerance.
    """
    torch.manual_seed(seed)
    model = timm.create_model(TIMM_NAMES[arch], pretrained=False)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith('running_var'):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith('running_mean'):
                tensor.normal_(0, 0.2)
            elif name.endswith('gamma'):
                tensor.uniform_(0.2, 1.0)
            elif tensor.is_floating_point() and (name.endswith('.bias') or '.norm' in name
                                                 or name.startswith('stem.1')
                                                 or 'downsample.0' in name):
                tensor.normal_(1.0 if name.endswith('weight') else 0.0, 0.1)
    return model.eval()


def timm_stage_outputs(model: torch.nn.Module, x: torch.Tensor):
    with torch.no_grad():
        return model.forward_intermediates(x, intermediates_only=True)


def save_checkpoint_formats(model: torch.nn.Module, folder: str) -> Dict[str, str]:
    """Write ``model``'s weights in each format the backbone accepts; return their paths."""
    from safetensors.torch import save_file
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    paths = {
        'release_pth': os.path.join(folder, 'released.pth'),
        'safetensors': os.path.join(folder, 'model.safetensors'),
        'mmseg': os.path.join(folder, 'segmentor_iter_10.pth'),
        'official_training': os.path.join(folder, 'official_checkpoint.pth.tar'),
    }
    torch.save(state, paths['release_pth'])
    save_file(state, paths['safetensors'])
    segmentor = {f'backbone.{k}': v for k, v in state.items() if not k.startswith('head.')}
    segmentor['decode_head.conv_seg.weight'] = torch.zeros(150, 8, 1, 1)
    torch.save({'meta': {'iter': 10, 'mmengine': '0.10.7'}, 'state_dict': segmentor},
               paths['mmseg'])
    torch.save({'model': state, 'epoch': 3}, paths['official_training'])
    return paths


def train_toy_runner(work_dir: str, max_iters: int = 2, resume: bool = False):
    """Train a tiny model with mmengine's Runner and CheckpointHook (real training loop).

    Used to produce real mmengine training checkpoints (with ``message_hub`` history
    buffers, numpy scalars, optimizer and scheduler state) without a segmentation model.
    """
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    class ToyModel(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.linear(inputs)
            if mode == 'loss':
                return dict(loss=(out - data_samples).pow(2).mean())
            return out

    class ToyDataset(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index):
            g = torch.Generator().manual_seed(index)
            return dict(inputs=torch.randn(2, generator=g),
                        data_samples=torch.randn(1, generator=g))

    runner = Runner(
        # A unique name: mmengine shares MessageHub instances between runners of one name.
        model=ToyModel(), work_dir=work_dir, experiment_name=f'toy_{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=ToyDataset(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=dict(type='PolyLR', power=0.9, eta_min=1e-4, by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), resume=resume, default_scope='mmseg')
    runner.train()
    return runner


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The timeout of every subprocess a test runs: it only tells a hung run from a slow one
# (a loaded 2-core machine runs the slowest tool in minutes), inside CI's 90-minute limit.
HUNG_AFTER_S = 30 * 60

# mmseg's own tools/train.py and tools/test.py, as its wheel installs them.
MMSEG_TOOLS = os.path.join(os.path.dirname(__import__('mmseg').__file__), '.mim', 'tools')


def run_command(args, env=None, cwd=REPO_ROOT, check=False) -> subprocess.CompletedProcess:
    """Run a command line to its end, its stdout and stderr captured as text; ``env`` adds
    to this process's environment; with ``check``, fail with the output's tail where it
    exits non-zero. A run past HUNG_AFTER_S fails the test."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                            timeout=HUNG_AFTER_S, env={**os.environ, **(env or {})})
    assert not check or result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def run_tool(args, env=None, cwd=REPO_ROOT) -> str:
    """The output (stdout, then stderr) of a command line that must succeed."""
    result = run_command(args, env, cwd, check=True)
    return result.stdout + result.stderr


# Runs tools one after another in one interpreter, each as `python tool args` would (its
# folder first on sys.path, run as __main__): the imports, and the reading of mmseg's
# metafiles (tests/metafile_cache.py), are paid once. After each run, its error (or none)
# and a separator go to stdout and stderr; the next run starts regardless.
_TOOLS_DRIVER = """
import json, os, runpy, sys, traceback
sys.path.insert(0, sys.argv[2])  # the repository, for tests.metafile_cache
from tests.metafile_cache import cache_mmseg_metafiles
cache_mmseg_metafiles()
sys.path.pop(0)
for argv in json.loads(sys.argv[1]):
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
    sys.argv = list(argv)
    error = None
    try:
        runpy.run_path(argv[0], run_name='__main__')
    except SystemExit as exit:
        if exit.code not in (None, 0):
            error = f'SystemExit: {exit.code}'
        if not isinstance(exit.code, (int, type(None))):
            print(exit.code, file=sys.stderr)  # as the interpreter does on exit
    except Exception as err:
        traceback.print_exc()
        error = f'{type(err).__name__}: {err}'
    sys.path.pop(0)
    for stream in (sys.stdout, sys.stderr):
        stream.write(f'\\n@@run ended: {json.dumps(error)}@@\\n')
        stream.flush()
"""
_RUN_END = re.compile(r'\n@@run ended: (.*)@@\n')


class ToolRun(NamedTuple):
    stdout: str
    stderr: str
    error: Optional[str]  # 'Type: message' of what it raised, None if it succeeded

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_tools_in_one_process(runs, env=None, cwd=REPO_ROOT, check=True,
                             python=sys.executable) -> List[ToolRun]:
    """Run each of ``runs`` (``[tool.py, *args]``) to its end in one ``python`` process, in
    order, and return how each ended; with ``check``, fail with the output's tail where one
    raised. mmengine's named instances live on between runs: the visualizer of mmseg's
    configs (one name) keeps the first run's folder, unless a config names its own."""
    result = run_command([python, '-c', _TOOLS_DRIVER, json.dumps(runs), REPO_ROOT], env, cwd,
                         check=True)
    stdout, stderr = (_RUN_END.split(out) for out in (result.stdout, result.stderr))
    # split: [output, error, output, error, ..., rest]
    ended = [ToolRun(out, err, json.loads(error)) for out, err, error in
             zip(stdout[0::2], stderr[0::2], stdout[1::2])]
    assert len(ended) == len(runs), (result.stdout + result.stderr)[-4000:]
    if check:
        for run, argv in zip(ended, runs):
            assert run.error is None, f'{argv}: {run.error}\n{run.output[-4000:]}'
    return ended


def free_port() -> int:
    """A TCP port nothing listens on now, for a distributed run's rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def miou(output: str) -> float:
    """The last mIoU an mmseg evaluation printed in ``output``."""
    values = re.findall(r'mIoU: ([0-9.]+)', output)
    assert values, output[-2000:]
    return float(values[-1])


TINY_CONFIG = '''_base_ = ['{base}']
data_root = '{data_root}'
crop_size = ({crop}, {crop})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, {crop}), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, {crop}), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
model = {model!r}
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={iters}, val_interval={iters})
default_hooks = dict(
    checkpoint=dict(interval={iters}), logger=dict(interval=1),
    visualization=dict(draw=False))
randomness = dict(seed=0)
{extra}
'''


ATTO_DIMS = [40, 80, 160, 320]
# InceptionNeXt-atto with narrow heads, for tests about the tools rather than the model.
ATTO_MODELS = {
    'upernet': dict(backbone=dict(arch='atto'),
                    decode_head=dict(in_channels=ATTO_DIMS, channels=32),
                    auxiliary_head=dict(in_channels=ATTO_DIMS[2], channels=32)),
    'fpn': dict(backbone=dict(arch='atto'), neck=dict(in_channels=ATTO_DIMS, out_channels=32),
                decode_head=dict(in_channels=[32] * 4, channels=32)),
}


def atto_model(config: str) -> dict:
    """The model overrides making ``config`` (a path under configs/upernet or configs/fpn)
    an atto one."""
    return ATTO_MODELS[os.path.basename(os.path.dirname(config))]


def write_tiny_config(folder: str, base: str, data_root: str, checkpoint: str, crop: int = 64,
                      batch: int = 2, iters: int = 2, extra: str = '') -> str:
    """A config inheriting a real one, shrunk to tiny crops and a few iterations; FPN and
    UperNet ones to the atto backbone with narrow heads (``checkpoint``: atto weights)."""
    path = os.path.join(folder, 'tiny_' + os.path.basename(base))
    model = copy.deepcopy(ATTO_MODELS.get(os.path.basename(os.path.dirname(base)), {}))
    model['data_preprocessor'] = dict(size=(crop, crop))
    model.setdefault('backbone', {})['init_cfg'] = dict(type='Pretrained', checkpoint=checkpoint)
    with open(path, 'w') as f:
        f.write(TINY_CONFIG.format(base=os.path.join(REPO_ROOT, base), data_root=data_root,
                                   model=model, crop=crop, batch=batch, iters=iters,
                                   extra=extra))
    return path


class WritesFile:
    """Pickles as ``getattr(numpy.ndarray, 'tofile')(array, marker)``: with a plain
    ``getattr`` allowed, loading would write a file; any method could be reached so."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (np.ndarray.tofile, (np.zeros(1), self.marker))


class RunsShell:
    """The classic: ``os.system(command)`` as a global call."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class EvalsCode:
    """``builtins.eval`` of code that writes the marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').write('x')", ))


# Files built from these must be refused by every loader, without the marker appearing.
CRAFTED_PAYLOADS = (WritesFile, RunsShell, EvalsCode)
