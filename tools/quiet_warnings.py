"""Imported first by our command-line tools: hides third-party warnings a user cannot act on.

Only these known messages are filtered, and only in our tools; every other warning and
error stays visible, and mmseg's own tools are untouched.
"""
import warnings

KNOWN_WARNINGS = (
    # setuptools, on every mmengine/mmcv import; those packages need pkg_resources.
    'pkg_resources is deprecated as an API',
    # mmseg's own decode heads build their losses through its deprecated helper.
    '``build_loss`` would be deprecated soon',
)
for message in KNOWN_WARNINGS:
    warnings.filterwarnings('ignore', message=message, category=UserWarning)
