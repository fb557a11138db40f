"""Inference: the offline demo job, mmseg's API with our checkpoints, and tools/image_demo.py."""
import os
import re

import cv2
import numpy as np
import pytest

import mmseg_incnext  # noqa: F401
from mmseg_incnext.runner.visualization import ImageReadError, read_image
from tests.helpers import REPO_ROOT, run_tools_in_one_process

DEMO_CONFIG = os.path.join(REPO_ROOT, 'configs', 'demo', 'incnext_atto_fpn_synthetic.py')


def test_demo_learns_far_above_chance(demo_run):
    work, out = demo_run
    found = re.search(r'held-out mIoU: ([0-9.]+) .*random guessing: ([0-9.]+)', out)
    assert found, out[-2000:]
    miou, chance = float(found.group(1)), float(found.group(2))
    assert chance < 2 and miou > 30, (miou, chance)
    overlay = cv2.imread(str(work / 'predictions' / 'held_out_overlay.png'))
    image = read_image(str(sorted((work / 'data' / 'images' / 'validation').iterdir())[0]))
    assert overlay.shape[0] >= image.shape[0] and overlay.shape[1] > image.shape[1]  # legend
    for line in ('dataset:', 'checkpoint:', 'overlay:', 'labels:'):
        assert line in out


@pytest.fixture(scope='module')
def checkpoint(demo_run):
    return str(demo_run[0] / 'iter_40.pth')


def test_mmseg_inference_api(checkpoint, tmp_path):
    from mmseg.apis import MMSegInferencer, inference_model, init_model, show_result_pyplot
    model = init_model(DEMO_CONFIG, checkpoint, device='cpu')
    assert type(model.backbone).__name__ == 'InceptionNeXt'
    assert len(model.dataset_meta['classes']) == 150
    image = np.random.default_rng(0).integers(0, 255, (75, 101, 3), dtype=np.uint8)
    path = str(tmp_path / 'odd.png')
    cv2.imwrite(path, image)
    # Paths first: mmseg's inference_model rewrites model.cfg's pipeline for arrays.
    batch = inference_model(model, [path, path])
    assert len(batch) == 2
    single = inference_model(model, cv2.imread(path))
    assert tuple(single.pred_sem_seg.data.shape[-2:]) == (75, 101)
    assert (batch[0].pred_sem_seg.data == single.pred_sem_seg.data).all()
    out_file = str(tmp_path / 'shown.png')
    show_result_pyplot(model, path, single, show=False, out_file=out_file, opacity=0.5)
    assert cv2.imread(out_file).shape[:2] == (75, 101)

    inferencer = MMSegInferencer(model=DEMO_CONFIG, weights=checkpoint, device='cpu')
    outputs = inferencer(path, return_datasamples=True)
    assert (outputs.pred_sem_seg.data == single.pred_sem_seg.data).all()


def write_inputs(folder):
    rng = np.random.default_rng(1)
    folder.mkdir()
    colour = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / 'photo.jpg'), colour)
    cv2.imwrite(str(folder / 'plain.png'), colour)
    cv2.imwrite(str(folder / 'gray.png'), colour[..., 0])
    cv2.imwrite(str(folder / 'rgba.png'), np.dstack([colour, colour[..., :1]]))
    cv2.imwrite(str(folder / 'deep16.png'), colour.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / 'odd.png'), rng.integers(0, 255, (37, 91, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / 'large.png'), rng.integers(0, 255, (600, 1100, 3), dtype=np.uint8))
    (folder / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not really a jpeg')
    return {'photo': (64, 80), 'plain': (64, 80), 'gray': (64, 80), 'rgba': (64, 80),
            'deep16': (64, 80), 'odd': (37, 91), 'large': (600, 1100)}


def test_image_demo_on_every_kind_of_input_and_an_empty_folder(checkpoint, tmp_path):
    expected = write_inputs(tmp_path / 'in')
    out = tmp_path / 'out'
    (tmp_path / 'empty').mkdir()
    every_kind, empty = run_tools_in_one_process([
        ['tools/image_demo.py', DEMO_CONFIG, checkpoint, str(tmp_path / 'in'),
         str(tmp_path / 'missing.png'), '--out-dir', str(out), '--device', 'cpu',
         '--slide-above', '500000'],
        ['tools/image_demo.py', DEMO_CONFIG, checkpoint, str(tmp_path / 'empty')]], check=False)
    assert every_kind.error == 'SystemExit: 1', every_kind.stderr[-3000:]
    assert 'corrupt.jpg: not a readable image' in every_kind.stderr
    assert 'missing.png: file not found' in every_kind.stderr
    assert f'{len(expected)}/{len(expected) + 2} images segmented' in every_kind.stdout
    for name, shape in expected.items():
        labels = cv2.imread(str(out / f'{name}_labels.png'), cv2.IMREAD_UNCHANGED)
        assert labels.shape == shape and labels.max() < 150, name
        overlay = cv2.imread(str(out / f'{name}_overlay.png'))
        assert overlay.shape[1] > shape[1], name
    # The 16-bit copy of the same picture is segmented like the 8-bit one.
    same = cv2.imread(str(out / 'deep16_labels.png'), cv2.IMREAD_UNCHANGED)
    assert (same == cv2.imread(str(out / 'plain_labels.png'), cv2.IMREAD_UNCHANGED)).all()

    assert empty.error is not None and 'no images' in empty.stderr, empty.output[-3000:]


def test_read_image_conversions(tmp_path):
    deep = np.full((4, 5), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / 'd.png'), deep)
    assert read_image(str(tmp_path / 'd.png')).shape == (4, 5, 3)
    assert read_image(str(tmp_path / 'd.png')).max() == 255
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 2] = 200
    cv2.imwrite(str(tmp_path / 'a.png'), rgba)
    converted = read_image(str(tmp_path / 'a.png'))
    assert converted.shape == (4, 5, 3) and converted[..., 2].min() == 200
    with pytest.raises(ImageReadError, match='not found'):
        read_image(str(tmp_path / 'none.png'))
    (tmp_path / 'bad.png').write_bytes(b'nope')
    with pytest.raises(ImageReadError, match='bad.png'):
        read_image(str(tmp_path / 'bad.png'))
