"""What the Mask2Former configs (configs/mask2former/) import first: mmdet's models.

mmseg's ``Mask2FormerHead`` is mmdet's head, built from mmdet's pixel decoder, losses and
matcher. Without mmdet, mmseg quietly defines the head on a plain ``BaseModule`` and the
build fails later on an unrelated keyword argument. Importing this module (the configs'
``custom_imports``) registers mmdet's models, or raises an ImportError that names the
extra to install.
"""
MMDET_VERSION = '3.3.0'  # the last release that accepts mmcv 2.1.0 (it requires < 2.2)
INSTALL_HINT = f'pip install "mmseg-incnext[mask2former]" (mmdet=={MMDET_VERSION})'

try:
    import mmdet.models  # noqa: F401  (registers them in mmdet's registry)
except ImportError as err:
    raise ImportError(f'The Mask2Former configs need mmdet: {INSTALL_HINT}. '
                      f'Importing mmdet failed: {err}') from err
