"""A data-pipeline wrapper that names the sample behind an error during a run."""
from typing import List

from mmengine.dataset import Compose
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS

FAILURE_PREFIX = 'Data pipeline failed on '


class DataReadError(RuntimeError):
    """A sample's files could not be loaded or transformed; the message names them."""


@TRANSFORMS.register_module()
class NameFilesOnError(BaseTransform):
    """Run ``transforms``; if one raises, raise :class:`DataReadError` naming the sample's
    image and annotation files (mmcv's and PIL's errors often name neither).

    Config::

        pipeline = [dict(type='NameFilesOnError', transforms=[...the pipeline...])]

    Our ``tools/train.py`` and ``tools/test.py`` wrap every dataset's pipeline so.
    """

    def __init__(self, transforms: List[dict]) -> None:
        self.transforms = Compose(transforms)

    def transform(self, results: dict) -> dict:
        files = [str(results[key]) for key in ('img_path', 'seg_map_path') if results.get(key)]
        try:
            return self.transforms(results)
        except Exception as err:
            raise DataReadError(f'{FAILURE_PREFIX}{", ".join(files) or "a sample"}: '
                                f'{type(err).__name__}: {err}') from err
