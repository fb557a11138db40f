"""The label-id to train-id conversion of Cityscapes, from the official label table.

The official annotations (``*_gtFine_labelIds.png``) hold the 34 label ids 0..33; mmseg's
``CityscapesDataset`` reads train ids (``*_gtFine_labelTrainIds.png``): the 19 evaluated
classes as 0..18 and every other label as 255, the ignore index. The table is
cityscapesScripts' ``helpers.labels`` (the package mmseg's own converter uses; ``pip
install -e .[cityscapes]``). Its ``license plate`` entry has id -1 and never appears in an
image. Ours is only the check that refuses values that are no label id.
"""
import numpy as np

try:
    from cityscapesscripts.helpers.labels import labels as LABELS
except ImportError as err:  # an optional dependency: only Cityscapes preparation needs it
    raise ImportError('Cityscapes preparation needs cityscapesScripts: pip install -e '
                      '.[cityscapes] (or pip install cityscapesscripts)') from err

IGNORE = 255
ID_TO_TRAIN_ID = {label.id: label.trainId for label in LABELS if label.id >= 0}
# The evaluated classes in train-id order (mmseg's CityscapesDataset.METAINFO['classes']).
CLASSES = tuple(label.name for label in sorted(LABELS, key=lambda label: label.trainId)
                if 0 <= label.trainId < IGNORE)
NUM_CLASSES = len(CLASSES)

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
