"""The suite reads mmseg's metafiles once per process, not once per ``mmseg::`` base.

mmengine 0.10.7 resolves each ``mmseg::`` base of a config by parsing mmseg's
``.mim/model-index.yml`` and every metafile it lists (53 YAML files) before it falls back to
the base folder, and our configs name up to four such bases: the 15 shipped configs load in
10.0 s of CPU that way, 3.8 s with the files read once. They do not change during a test
session and mmengine only reads what it loads, so memoizing that one ``load`` gives the
same configs (compared dict by dict). The tools as users run them
are untouched: this runs only in the pytest process and in the tests' one-process tool
driver (tests/helpers.py).
"""
import functools


def cache_mmseg_metafiles() -> None:
    """Memoize the YAML loading of mmengine's metafile lookup (idempotent; nothing where
    mmengine's config utilities have another shape)."""
    from mmengine.config import utils
    if callable(getattr(utils, '_get_cfg_metainfo', None)) and callable(
            getattr(utils, 'load', None)) and not hasattr(utils.load, 'cache_info'):
        utils.load = functools.lru_cache(maxsize=None)(utils.load)
