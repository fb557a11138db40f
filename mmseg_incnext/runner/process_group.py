"""Starting and ending the process group of a launched run, on GPUs and on CPUs."""
import gc

import torch
from mmengine.config import Config

from mmseg_incnext.utils.compat import init_gloo_process_group


def init_distributed(cfg: Config) -> None:
    """Start the process group of a launched job now (mmengine's Runner reuses it), so that
    ranks can share the data check's verdict before anything is built. A no-op without a
    launcher or when a group exists.

    mmengine's ``init_dist`` selects a CUDA device unconditionally, so without CUDA the
    gloo group is created here directly, with ``env_cfg.dist_cfg.timeout`` (seconds).
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.distributed.is_initialized():
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    if torch.cuda.is_available():
        from mmengine.dist import init_dist
        init_dist(launcher, **dist_cfg)
        return
    if launcher != 'pytorch':
        raise RuntimeError(f'Without CUDA only the pytorch launcher (torchrun) is supported, '
                           f'got launcher={launcher!r}')
    init_gloo_process_group(dist_cfg.get('timeout'))


def finish_distributed() -> None:
    """Tear the process group down at the end of a run; call it once the runner is dropped.

    mmengine leaves the group alive; with gloo, a process exiting with a live group aborts
    ("terminate called without an active exception") and torchrun reports a failure. On
    torch 2.15 a rank also aborts so, now and then, where the group is destroyed while a
    DistributedDataParallel model still exists: the runner's reference cycles keep its model
    until a garbage collection, so collect first.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
