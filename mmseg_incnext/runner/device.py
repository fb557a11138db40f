"""Making a GPU config run where it is: SyncBN as BN, gloo and CPU DDP without CUDA."""
from typing import Any

import torch
from mmengine.config import Config
from mmengine.logging import print_log


def replace_sync_bn(node: Any) -> int:
    """Turn every ``SyncBN`` norm config under ``node`` into ``BN``; return how many.

    Also for building a model outside a process group (counting MACs, exporting), where
    SyncBN cannot run; in eval mode the two are identical.
    """
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += replace_sync_bn(value)
    return count


def adapt_to_device(cfg: Config) -> None:
    """Make a GPU config runnable on a machine without CUDA.

    ``torch.nn.SyncBatchNorm`` only synchronises CUDA tensors, and NCCL needs GPUs, so on a
    CPU-only machine SyncBN becomes BN and the process group uses gloo (created by
    :func:`.process_group.init_distributed`); mmengine's default DDP wrapper passes a GPU
    index as ``device_ids``, which CPU modules refuse. Nothing changes where CUDA is
    available.
    """
    if torch.cuda.is_available():
        return
    replaced = replace_sync_bn(cfg.model)
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    print_log(f'No CUDA device: {replaced} SyncBN layers configured as BN and the '
              'distributed backend set to gloo', logger='current')
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
