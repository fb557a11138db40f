"""Small synthetic datasets for demos and tests: ADE20K in mmseg's layout, Cityscapes as
its official archives unpack.

ADE20K (:func:`make_synthetic_ade20k`): each image is a scene of textured backgrounds (sky
or wall above, floor below) with a few shapes (table rectangles, lamp discs, plant
triangles); ``hard`` scenes add classes whose textures resemble those (chair and cabinet
wood, rug and floor checks, ceiling and curtain beside wall), more and smaller shapes,
stronger noise and a brightness change per image, so that a small model trained briefly
stays well below 100 mIoU. Labels use ADE20K's annotation values (1..150, 0 = unlabelled,
which ``reduce_zero_label`` turns into the ignore index), so the real ``ADE20KDataset`` and
configs read it unchanged::

    ROOT/images/{training,validation}/NAME.jpg
    ROOT/annotations/{training,validation}/NAME.png

Cityscapes (:func:`make_synthetic_cityscapes`): street scenes labelled with the official
label ids, which tools/prepare_cityscapes.py converts to mmseg's train ids.
"""
import os
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

# ADE20K annotation values (class index + 1) of the classes drawn.
SKY, WALL, FLOOR, TABLE, LAMP, PLANT = 3, 1, 4, 16, 37, 18
CEILING, CABINET, CURTAIN, CHAIR, RUG = 6, 11, 19, 20, 29
CLASS_VALUES: Dict[str, int] = dict(sky=SKY, wall=WALL, floor=FLOOR, table=TABLE, lamp=LAMP,
                                    plant=PLANT)


def _texture(rng: np.random.Generator, shape: Tuple[int, int], kind: int,
             noise_std: float = 8.0, jitter: float = 15.0) -> np.ndarray:
    """An RGB texture per class, with per-image colour jitter and pixel noise."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    noise = rng.normal(0, noise_std, (h, w, 1))
    jitter = rng.uniform(-jitter, jitter, 3)
    if kind == SKY:
        base = np.stack([90 + 0 * yy, 150 + 40 * yy / max(h, 1), 230 + 0 * yy], -1)
    elif kind == WALL:
        stripes = 20 * (np.sin(xx / 3.0) > 0)
        base = np.stack([170 + stripes, 165 + stripes, 155 + stripes], -1)
    elif kind == FLOOR:
        checker = 40 * (((yy // 8) + (xx // 8)) % 2)
        base = np.stack([120 + checker, 80 + checker, 40 + 0 * yy], -1)
    elif kind == TABLE:
        grain = 25 * np.sin(yy / 2.0)
        base = np.stack([150 + grain, 90 + grain, 50 + 0 * yy], -1)
    elif kind == LAMP:
        base = np.stack([250 + 0 * yy, 220 + 0 * yy, 60 + 0 * yy], -1)
    elif kind == PLANT:
        speckle = 60 * (rng.random((h, w)) > 0.7)
        base = np.stack([30 + 0 * yy, 140 + speckle, 40 + 0 * yy], -1)
    elif kind == CEILING:  # the wall's colour, without its stripes
        base = np.stack([175 + 0 * yy, 170 + 0 * yy, 160 + 0 * yy], -1)
    elif kind == CURTAIN:  # the wall's colour, wider stripes
        stripes = 20 * (np.sin(xx / 7.0) > 0)
        base = np.stack([165 + stripes, 160 + stripes, 150 + stripes], -1)
    elif kind == CHAIR:  # the table's wood, grain across
        grain = 25 * np.sin(xx / 2.0)
        base = np.stack([150 + grain, 90 + grain, 50 + 0 * yy], -1)
    elif kind == CABINET:  # darker wood in panels
        panels = 20 * ((yy // 12) % 2)
        base = np.stack([120 + panels, 75 + panels, 45 + 0 * yy], -1)
    elif kind == RUG:  # the floor's checks, finer
        checker = 40 * (((yy // 4) + (xx // 4)) % 2)
        base = np.stack([125 + checker, 80 + checker, 45 + 0 * yy], -1)
    else:  # any other ADE20K class: a flat colour derived from its value
        colour = np.array([(kind * 37) % 256, (kind * 91) % 256, (kind * 53) % 256])
        base = np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
    return base + jitter + noise


def make_scene(rng: np.random.Generator, height: int, width: int,
               extra_labels: bool = False, hard: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """One RGB image (uint8) and its ADE20K-valued label map (uint8)."""
    label = np.empty((height, width), np.uint8)
    horizon = int(height * rng.uniform(0.4, 0.65))
    if hard:
        label[:horizon] = rng.choice([SKY, WALL, CEILING])
    else:
        label[:horizon] = SKY if rng.random() < 0.5 else WALL
    label[horizon:] = FLOOR
    yy, xx = np.mgrid[0:height, 0:width]
    if hard:
        kinds = [TABLE, LAMP, PLANT, CHAIR, CABINET, RUG, CURTAIN]
        count, smallest = (4, 10), (4, 16)
    else:
        kinds, count, smallest = [TABLE, LAMP, PLANT], (2, 5), (6, 8)  # (floor, divisor)
    for _ in range(rng.integers(*count)):
        kind = rng.choice(kinds)
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        size = rng.integers(max(smallest[0], min(height, width) // smallest[1]),
                            max(8, min(height, width) // 3))
        if kind in (TABLE, CABINET, RUG, CURTAIN):
            mask = (abs(yy - cy) < size // 2) & (abs(xx - cx) < size)
        elif kind in (LAMP, CHAIR):
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < size ** 2
        else:
            mask = (yy < cy + size) & (yy > cy - size) & (abs(xx - cx) < (yy - cy + size) / 2)
        label[mask] = kind
    if extra_labels:  # a sprinkle of every other class, and unlabelled pixels
        for value in rng.integers(1, 151, size=6):
            y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
            label[y:y + 4, x:x + 4] = value
        label[:, :2] = 0
    image = np.zeros((height, width, 3), np.float32)
    noise = dict(noise_std=24.0, jitter=30.0) if hard else {}
    for value in np.unique(label):
        if value == 0:
            continue
        mask = label == value
        image[mask] = _texture(rng, (height, width), int(value), **noise)[mask]
    if hard:
        image *= rng.uniform(0.6, 1.3)
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_synthetic_ade20k(root: str, num_train: int = 40, num_val: int = 10,
                          sizes: Sequence[Tuple[int, int]] = ((128, 160), (160, 128),
                                                              (144, 144)),
                          extra_labels: bool = False, seed: int = 0, hard: bool = False) -> str:
    """Write the dataset under ``root`` (created if needed); return ``root``. ``hard``:
    the harder scenes of the module's docstring."""
    rng = np.random.default_rng(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        image_dir = os.path.join(root, 'images', split)
        label_dir = os.path.join(root, 'annotations', split)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        for i in range(count):
            height, width = sizes[i % len(sizes)]
            image, label = make_scene(rng, height, width, extra_labels, hard)
            name = f'ADE_{split[:5]}_{i:08d}'
            Image.fromarray(image).save(os.path.join(image_dir, f'{name}.jpg'), quality=95)
            Image.fromarray(label).save(os.path.join(label_dir, f'{name}.png'))
    return root


# Cityscapes label ids (cityscapesScripts' table) of the street scene's parts.
CS_SKY, CS_BUILDING, CS_ROAD, CS_SIDEWALK, CS_CAR, CS_PERSON, CS_POLE, CS_VEGETATION = (
    23, 11, 7, 8, 26, 24, 17, 21)
CITYSCAPES_CITIES = {'train': ('aachen', 'bochum'), 'val': ('frankfurt', ), 'test': ('berlin', )}


def make_street_scene(rng: np.random.Generator, height: int, width: int,
                      every_label_id: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """One RGB image (uint8) and its Cityscapes label-id map (uint8): sky, buildings, road
    and sidewalk, with cars, people, poles and trees. ``every_label_id`` adds a block of
    each label id 0..33 (one 2x2 block per id along the top rows)."""
    label = np.empty((height, width), np.uint8)
    skyline, kerb = int(height * rng.uniform(0.2, 0.35)), int(height * rng.uniform(0.55, 0.7))
    label[:skyline] = CS_SKY
    label[skyline:kerb] = CS_BUILDING
    label[kerb:] = CS_ROAD
    label[kerb:kerb + max(2, height // 12), :] = CS_SIDEWALK
    for _ in range(rng.integers(1, 4)):
        kind = rng.choice([CS_CAR, CS_PERSON, CS_POLE, CS_VEGETATION])
        x = int(rng.integers(0, width - 4))
        if kind == CS_CAR:
            label[kerb:kerb + height // 6, x:x + width // 6] = kind
        elif kind == CS_PERSON:
            label[kerb - height // 5:kerb + 2, x:x + max(2, width // 30)] = kind
        elif kind == CS_POLE:
            label[skyline // 2:kerb + 2, x:x + 2] = kind
        else:
            label[skyline - height // 10:kerb, x:x + width // 8] = kind
    if every_label_id:
        for label_id in range(34):
            y, x = 2 * (label_id // (width // 2)), 2 * (label_id % (width // 2))
            label[y:y + 2, x:x + 2] = label_id
    image = np.zeros((height, width, 3), np.float32)
    for value in np.unique(label):
        mask = label == value
        image[mask] = _texture(rng, (height, width), 200 + int(value))[mask]
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_synthetic_cityscapes(root: str, per_city: int = 2, size: Tuple[int, int] = (64, 128),
                              cities: Dict[str, Sequence[str]] = CITYSCAPES_CITIES,
                              every_label_id: bool = True, seed: int = 0) -> str:
    """Write Cityscapes as its official archives unpack (label ids, not train ids) under
    ``root``; return ``root``::

        ROOT/leftImg8bit/SPLIT/CITY/CITY_000000_0000NN_leftImg8bit.png
        ROOT/gtFine/SPLIT/CITY/CITY_000000_0000NN_gtFine_labelIds.png   (and _color.png)

    ``size`` is (height, width); tools/prepare_cityscapes.py converts the result (or its
    zips, :func:`zip_synthetic_cityscapes`) into mmseg's layout.
    """
    rng = np.random.default_rng(seed)
    for split, names in cities.items():
        for city in names:
            image_dir = os.path.join(root, 'leftImg8bit', split, city)
            label_dir = os.path.join(root, 'gtFine', split, city)
            os.makedirs(image_dir, exist_ok=True)
            os.makedirs(label_dir, exist_ok=True)
            for i in range(per_city):
                image, label = make_street_scene(rng, *size, every_label_id)
                name = f'{city}_000000_{i * 19:06d}'
                Image.fromarray(image).save(os.path.join(image_dir, f'{name}_leftImg8bit.png'))
                labels = os.path.join(label_dir, name + '_gtFine_')
                Image.fromarray(label).save(labels + 'labelIds.png')
                ids = label.astype(np.int64)
                colour = np.stack([ids * 37 % 256, ids * 91 % 256, ids * 53 % 256], -1)
                Image.fromarray(colour.astype(np.uint8)).save(labels + 'color.png')
    return root


def zip_synthetic_cityscapes(root: str, out_dir: str) -> Tuple[str, str]:
    """Pack :func:`make_synthetic_cityscapes`'s folders as the official archives are packed
    (``leftImg8bit/...`` and ``gtFine/...`` at the top, with a README and license.txt);
    return the paths of leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip."""
    import zipfile
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for folder, archive_name in (('leftImg8bit', 'leftImg8bit_trainvaltest.zip'),
                                 ('gtFine', 'gtFine_trainvaltest.zip')):
        path = os.path.join(out_dir, archive_name)
        with zipfile.ZipFile(path, 'w') as archive:
            archive.writestr('README', 'synthetic Cityscapes-layout data\n')
            archive.writestr('license.txt', 'none\n')
            for current, _, files in sorted(os.walk(os.path.join(root, folder))):
                for name in sorted(files):
                    full = os.path.join(current, name)
                    archive.write(full, os.path.relpath(full, root).replace(os.sep, '/'))
        paths.append(path)
    return paths[0], paths[1]
