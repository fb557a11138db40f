"""Reading a run's config: the file, the command line's overrides, the work dir, the device."""
import os
from typing import Optional

from mmengine.config import Config

from mmseg_incnext.runner.device import adapt_to_device


def load_run_config(path: str, launcher: str = 'none', cfg_options: Optional[dict] = None,
                    work_dir: Optional[str] = None) -> Config:
    """What tools/train.py and tools/test.py do first: read the config, apply the command
    line and adapt to the device (:func:`.device_adaptation.adapt_to_device`).

    Args:
        path: the config file.
        launcher: ``--launcher``, stored as ``cfg.launcher``.
        cfg_options: ``--cfg-options``, merged into the config.
        work_dir: ``--work-dir``; without it the config's ``work_dir``, else
            ``work_dirs/<config name>``.
    """
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = os.path.join('./work_dirs', os.path.splitext(os.path.basename(path))[0])
    adapt_to_device(cfg)
    return cfg
