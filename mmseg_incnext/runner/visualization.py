"""Reading arbitrary user images, and drawing segmentation overlays with a class legend."""
import os
from typing import Sequence, Tuple

import cv2
import numpy as np

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


class ImageReadError(ValueError):
    """An input image that does not exist or cannot be decoded."""


def read_image(path: str) -> np.ndarray:
    """Read ``path`` as an 8-bit, 3-channel BGR array, whatever its format.

    Grayscale is replicated to three channels, an alpha channel is dropped, and 16-bit or
    floating-point images are scaled to 8 bits (16-bit by 1/257, floats from [0, 1]).
    """
    if not os.path.isfile(path):
        raise ImageReadError(f'{path}: file not found')
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageReadError(f'{path}: not a readable image (corrupt or unsupported format)')
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f'{path}: unsupported pixel type {image.dtype}')
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] != 3:
        raise ImageReadError(f'{path}: {image.shape[2]} channels, expected 1, 3 or 4')
    return np.ascontiguousarray(image)


def render_overlay(image_bgr: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                   palette: Sequence[Sequence[int]], opacity: float = 0.5,
                   max_legend: int = 20) -> np.ndarray:
    """Blend the coloured label map over the image and add a legend of the classes present.

    Args:
        image_bgr: ``H x W x 3`` uint8 image.
        labels: ``H x W`` class indices (values outside ``classes`` are left uncoloured).
        classes, palette: class names and their RGB colours.
        opacity: weight of the colour over the image.
        max_legend: most classes listed (largest areas first).

    Returns:
        ``H x (W + legend) x 3`` uint8 BGR image.
    """
    palette_bgr = np.array([tuple(c)[::-1] for c in palette], np.uint8)
    valid = labels < len(classes)
    colour = np.zeros_like(image_bgr)
    colour[valid] = palette_bgr[labels[valid]]
    blended = image_bgr.copy()
    blended[valid] = (image_bgr[valid] * (1 - opacity) + colour[valid] * opacity).astype(np.uint8)

    present, counts = np.unique(labels[valid], return_counts=True)
    order = present[np.argsort(-counts)][:max_legend]
    height = blended.shape[0]
    row = max(14, min(24, height // max(len(order), 1)))
    scale = row / 30
    width = 40 + int(max((len(classes[i]) for i in order), default=4) * 16 * scale)
    legend = np.full((max(height, row * len(order) + 4), width, 3), 255, np.uint8)
    for k, index in enumerate(order):
        y = 2 + k * row
        cv2.rectangle(legend, (4, y + 2), (4 + row - 4, y + row - 2),
                      tuple(int(v) for v in palette_bgr[index]), -1)
        cv2.putText(legend, classes[index].strip(), (row + 6, y + row - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if legend.shape[0] > height:
        pad = np.full((legend.shape[0] - height, blended.shape[1], 3), 255, np.uint8)
        blended = np.concatenate([blended, pad], 0)
    return np.concatenate([blended, legend], 1)


def save_prediction(out_dir: str, name: str, image_bgr: np.ndarray, labels: np.ndarray,
                    classes: Sequence[str], palette: Sequence[Sequence[int]],
                    opacity: float = 0.5) -> Tuple[str, str]:
    """Write ``NAME_overlay.png`` (overlay and legend) and ``NAME_labels.png`` (class index
    per pixel, uint8); return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    overlay_path = os.path.join(out_dir, f'{name}_overlay.png')
    labels_path = os.path.join(out_dir, f'{name}_labels.png')
    cv2.imwrite(overlay_path, render_overlay(image_bgr, labels, classes, palette, opacity))
    cv2.imwrite(labels_path, labels.astype(np.uint8))
    return overlay_path, labels_path
