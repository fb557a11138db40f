"""The suite reads mmseg's metafiles once per process, not once per ``mmseg::`` base.

mmengine 0.10.7 resolves each ``mmseg::`` base of a config by parsing mmseg's
``.mim/model-index.yml`` and every metafile it lists (53 YAML files, about 0.7 s) before it
falls back to the base folder; our configs name four such bases, so each config load spends
about 3 s there. The files do not change during a test session and mmengine only reads what
it loads, so memoizing that one ``load`` gives the same configs. The tools as users run them
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
