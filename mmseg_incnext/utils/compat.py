"""Differences between the torch versions the plugin supports, decided by feature checks.

Everything that depends on the installed version lives here, so
the rest of the package calls one function whatever the stack.
"""
import re

import torch


def _onnx_export_takes_dynamo() -> bool:
    import inspect
    return 'dynamo' in inspect.signature(torch.onnx.export).parameters  # torch >= 2.5


def onnx_export(model: torch.nn.Module, args: tuple, path: str, **kwargs) -> None:
    """``torch.onnx.export`` with the TorchScript-based exporter on every torch (newer torch
    would pick the dynamo exporter, which cannot export these models with free H and W)."""
    if _onnx_export_takes_dynamo():
        kwargs['dynamo'] = False
    torch.onnx.export(model, args, path, **kwargs)


def register_load_state_dict_pre_hook(module: torch.nn.Module, hook) -> None:
    """``hook(module, state_dict, prefix, ...)`` before ``module`` loads a state dict: torch's
    public method where it has one (torch >= 2.5), its private one before."""
    if hasattr(module, 'register_load_state_dict_pre_hook'):
        module.register_load_state_dict_pre_hook(hook)
    else:
        module._register_load_state_dict_pre_hook(hook, with_module=True)


def onednn_version() -> tuple:
    """(major, minor) of the oneDNN torch was built with, () if it reports none."""
    match = re.search(r'(?:MKL-DNN|oneDNN)\D*v(\d+)\.(\d+)', torch.__config__.show())
    return (int(match[1]), int(match[2])) if match else ()


def timm_stage_outputs(model: torch.nn.Module):
    """The function returning the stage outputs of a timm ``model``: its
    ``forward_intermediates`` where it has one (timm 1.0 and later, per model), else
    ``forward_features`` (every stage run, the last one returned)."""
    if hasattr(model, 'forward_intermediates'):
        return lambda x: model.forward_intermediates(x, intermediates_only=True)
    return model.forward_features


_FUSED_ADAMW = {}


def fused_adamw_runs_on(device_type: str) -> bool:
    """Whether torch has a fused AdamW for float parameters on ``device_type`` (CUDA on
    every torch we support; CPU on torch 2.13, not on 2.1); asked once per device type."""
    if device_type not in _FUSED_ADAMW:
        probe = torch.zeros(1, device=device_type, requires_grad=True)
        try:
            torch.optim.AdamW([probe], fused=True)
        except RuntimeError:  # fused=True on a device without the kernel
            _FUSED_ADAMW[device_type] = False
        else:
            _FUSED_ADAMW[device_type] = True
    return _FUSED_ADAMW[device_type]


def _profiler_device_time_key() -> str:
    from torch.autograd.profiler_util import FunctionEventAvg
    fields = vars(FunctionEventAvg())
    return 'self_device_time_total' if 'self_device_time_total' in fields else (
        'self_cuda_time_total')  # torch 2.1


_PROFILER_DEVICE_TIME_KEY = _profiler_device_time_key()


def profiler_self_time_key(device_type: str) -> str:
    """The attribute of a ``torch.profiler`` average holding an op's self time on
    ``device_type`` (CPU, or the accelerator: ``device`` on torch 2.13, ``cuda`` on 2.1)."""
    return 'self_cpu_time_total' if device_type == 'cpu' else _PROFILER_DEVICE_TIME_KEY


def _tensor_rebuilders() -> dict:
    names = ('_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_tensor_v3',
             '_rebuild_parameter', '_rebuild_parameter_with_state')
    return {f'torch._utils.{name}': getattr(torch._utils, name) for name in names
            if hasattr(torch._utils, name)}


_TENSOR_REBUILDERS = _tensor_rebuilders()


def tensor_rebuilders() -> dict:
    """torch's functions that pickled tensors and parameters call, by the name a pickle
    gives them (``'torch._utils._rebuild_tensor_v2'``): those of the five this torch has,
    as the set differs between versions."""
    return dict(_TENSOR_REBUILDERS)


def _default_process_group_timeout():
    import inspect
    # None on torch >= 2.2 (each backend's own default); torch 2.1 has a timedelta there
    # and refuses None.
    return inspect.signature(torch.distributed.init_process_group).parameters['timeout'].default


def init_gloo_process_group(timeout_s: float | None = None) -> None:
    """Start a gloo process group from the launcher's environment (``torchrun``), with
    ``timeout_s`` seconds, or torch's default timeout when it is None."""
    import datetime
    timeout = (datetime.timedelta(seconds=timeout_s) if timeout_s else
               _default_process_group_timeout())
    torch.distributed.init_process_group(backend='gloo', timeout=timeout)


def _meta_value_read_error() -> type:
    # torch 2.1 has no meta kernel for a value read (NotImplementedError); later torch
    # refuses it with a RuntimeError.
    try:
        torch.empty((), device='meta').item()
    except (NotImplementedError, RuntimeError) as err:
        return type(err)
    return RuntimeError


_META_VALUE_READ_ERROR = _meta_value_read_error()


def meta_value_read_error() -> type:
    """The exception type a model raises on the ``meta`` device where it reads a tensor's
    value (``.item()``, a Python ``if`` on a tensor)."""
    return _META_VALUE_READ_ERROR


def count_flops(run) -> int:
    """FLOPs of the operations ``run()`` calls, counted by ``FlopCounterMode`` as a whole.

    Per-module counts are left out on purpose: torch < 2.4 tracks modules through hooks
    that break modules taking a tuple (mmseg's FPN neck); count a part by running it alone.
    """
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()
