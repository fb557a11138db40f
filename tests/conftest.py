"""Session-wide fixtures: a tiny ADE20K-layout dataset, released-format weights, and a
short run of the offline demo (a small trained segmentor with its data)."""
import os
import sys

import pytest
import torch

from tests.helpers import run_command, seeded_timm_model
from tests.metafile_cache import cache_mmseg_metafiles

cache_mmseg_metafiles()


@pytest.fixture(scope='session', autouse=True)
def private_cache(tmp_path_factory):
    """Data-check verdicts go to a folder of this session, not the user's cache."""
    os.environ['MMSEG_INCNEXT_CACHE'] = str(tmp_path_factory.mktemp('cache'))


@pytest.fixture(scope='session', autouse=True)
def launchers_run_this_python():
    """tools/dist_*.sh and slurm_*.sh run $PYTHON, else the repository's .venv: each stack's
    suite must launch its own interpreter, not the current stack's."""
    os.environ['PYTHON'] = sys.executable


@pytest.fixture(scope='session')
def tiny_ade20k(tmp_path_factory):
    """Varied image sizes, every label value 0..150 present somewhere, 6 train / 3 val."""
    from mmseg_incnext.datasets.synthetic import make_synthetic_ade20k
    root = tmp_path_factory.mktemp('ade') / 'ADEChallengeData2016'
    return str(make_synthetic_ade20k(str(root), num_train=6, num_val=3,
                                     sizes=((70, 90), (96, 64), (81, 81)), extra_labels=True))


@pytest.fixture(scope='session')
def released_weights(tmp_path_factory):
    """A checkpoint in the released format (timm key names, with classifier head) per arch."""
    folder = tmp_path_factory.mktemp('released')
    cache = {}

    def get(arch: str) -> str:
        if arch not in cache:
            path = folder / f'inceptionnext_{arch}.pth'
            torch.save(seeded_timm_model(arch).state_dict(), path)
            cache[arch] = str(path)
        return cache[arch]
    return get


@pytest.fixture(scope='session')
def demo_run(tmp_path_factory):
    """A shortened run of the main job (`make demo`): 40 iterations on 12 images."""
    work = tmp_path_factory.mktemp('demo')
    result = run_command([sys.executable, 'tools/run_demo.py', '--work-dir', str(work), '--iters',
                          '40', '--num-train', '12', '--num-val', '4'], check=True)
    return work, result.stdout
