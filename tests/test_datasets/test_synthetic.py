"""The synthetic ADE20K-layout data: the demo's scenes and the harder ones (``--hard``) that
keep a trained model's mIoU low enough for int8's loss to show."""
import sys

import numpy as np
from PIL import Image

from mmseg_incnext.datasets.synthetic import (CABINET, CHAIR, CURTAIN, FLOOR, LAMP, PLANT, RUG, SKY,
                                              TABLE, WALL, make_synthetic_ade20k)
from tests.helpers import run_command


def classes_and_floor_grain(root):
    """The label values drawn, and the median over images of the mean step between
    horizontally adjacent floor pixels (mostly the pixel noise)."""
    values, grain = set(), []
    for label_path in sorted((root / 'annotations').rglob('*.png')):
        label = np.asarray(Image.open(label_path))
        image_path = root / 'images' / label_path.parent.name / (label_path.stem + '.jpg')
        grey = np.asarray(Image.open(image_path)).astype(np.float32).mean(-1)
        values |= {int(v) for v in np.unique(label)}
        both_floor = (label[:, 1:] == FLOOR) & (label[:, :-1] == FLOOR)
        grain.append(np.abs(np.diff(grey, axis=1))[both_floor].mean())
    return values, float(np.median(grain))


def test_hard_scenes_add_look_alike_classes_and_noise(tmp_path):
    assert make_synthetic_ade20k(str(tmp_path / 'easy'), 8, 2) == str(tmp_path / 'easy')
    run_command([sys.executable, 'tools/make_synthetic_ade20k.py', str(tmp_path / 'hard'),
                 '--train', '8', '--val', '2', '--hard'], check=True)
    easy_values, easy_grain = classes_and_floor_grain(tmp_path / 'easy')
    hard_values, hard_grain = classes_and_floor_grain(tmp_path / 'hard')
    assert easy_values <= {SKY, WALL, FLOOR, TABLE, LAMP, PLANT}
    assert {FLOOR, CHAIR, CABINET, RUG, CURTAIN} <= hard_values
    assert hard_grain > 1.5 * easy_grain
    assert len(list((tmp_path / 'hard' / 'images' / 'validation').iterdir())) == 2
