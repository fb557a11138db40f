"""The Cityscapes label table and the label-id to train-id conversion.

The official annotations (``*_gtFine_labelIds.png``) hold the 34 label ids 0..33; mmseg's
``CityscapesDataset`` reads train ids (``*_gtFine_labelTrainIds.png``): the 19 evaluated
classes as 0..18 and every other label as 255, the ignore index. The table is the one of
the Cityscapes benchmark (cityscapesScripts' ``labels.py``, Cordts et al. 2016), written
here as data. Its ``license plate`` entry has id -1 and never appears in an image.
"""
from typing import Dict, NamedTuple, Tuple

import numpy as np

IGNORE = 255


class Label(NamedTuple):
    name: str
    id: int
    train_id: int  # 255: not evaluated


LABELS: Tuple[Label, ...] = (
    Label('unlabeled', 0, IGNORE),
    Label('ego vehicle', 1, IGNORE),
    Label('rectification border', 2, IGNORE),
    Label('out of roi', 3, IGNORE),
    Label('static', 4, IGNORE),
    Label('dynamic', 5, IGNORE),
    Label('ground', 6, IGNORE),
    Label('road', 7, 0),
    Label('sidewalk', 8, 1),
    Label('parking', 9, IGNORE),
    Label('rail track', 10, IGNORE),
    Label('building', 11, 2),
    Label('wall', 12, 3),
    Label('fence', 13, 4),
    Label('guard rail', 14, IGNORE),
    Label('bridge', 15, IGNORE),
    Label('tunnel', 16, IGNORE),
    Label('pole', 17, 5),
    Label('polegroup', 18, IGNORE),
    Label('traffic light', 19, 6),
    Label('traffic sign', 20, 7),
    Label('vegetation', 21, 8),
    Label('terrain', 22, 9),
    Label('sky', 23, 10),
    Label('person', 24, 11),
    Label('rider', 25, 12),
    Label('car', 26, 13),
    Label('truck', 27, 14),
    Label('bus', 28, 15),
    Label('caravan', 29, IGNORE),
    Label('trailer', 30, IGNORE),
    Label('train', 31, 16),
    Label('motorcycle', 32, 17),
    Label('bicycle', 33, 18),
)
NUM_CLASSES = 19
ID_TO_TRAIN_ID: Dict[int, int] = {label.id: label.train_id for label in LABELS}
# The evaluated classes in train-id order (mmseg's CityscapesDataset.METAINFO['classes']).
CLASSES: Tuple[str, ...] = tuple(
    label.name for label in sorted(LABELS, key=lambda label: label.train_id)
    if label.train_id != IGNORE)

_KNOWN = np.zeros(256, bool)
_KNOWN[list(ID_TO_TRAIN_ID)] = True
_LOOKUP = np.full(256, IGNORE, np.uint8)
_LOOKUP[list(ID_TO_TRAIN_ID)] = list(ID_TO_TRAIN_ID.values())


class UnknownLabelIdError(ValueError):
    """An annotation holds a value that is no Cityscapes label id."""


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """The train-id map (uint8) of a label-id map (any integer dtype).

    Raises:
        UnknownLabelIdError: for values that are no label id (outside 0..33), listing them.
    """
    values = np.unique(label_ids)
    unknown = values[(values < 0) | (values > 255)]
    if not unknown.size:
        unknown = values[~_KNOWN[values.astype(np.intp)]]
    if unknown.size:
        raise UnknownLabelIdError(
            f'values {unknown.tolist()[:10]} are no Cityscapes label ids (0..33); is this a '
            '*_gtFine_labelIds.png annotation?')
    return _LOOKUP[label_ids.astype(np.intp)]
