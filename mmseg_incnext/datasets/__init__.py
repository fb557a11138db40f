"""Dataset preparation and checks; importing the package registers only the
:class:`~.transforms.NameFilesOnError` pipeline wrapper."""
from .transforms import NameFilesOnError

__all__ = ['NameFilesOnError']
