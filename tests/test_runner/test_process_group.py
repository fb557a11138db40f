"""The process group of a launched run on a CPU: started with or without a configured
timeout (torch 2.1 refuses timeout=None), and torn down at the end, after the model wrapper
the runner held. Two-process runs: tests/test_data_check.py and tests/test_reliability.py."""
import gc
import weakref

import pytest
import torch
from mmengine.config import Config

from mmseg_incnext.runner.process_group import finish_distributed, init_distributed
from tests.helpers import free_port


def as_torchrun_sets_one_process(monkeypatch):
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(name, value)


@pytest.mark.skipif(torch.cuda.is_available(), reason='the gloo path is taken without CUDA')
@pytest.mark.parametrize('dist_cfg', [{}, {'timeout': 60}], ids=['default timeout', '60 s'])
def test_one_rank_group_starts_and_ends(monkeypatch, dist_cfg):
    as_torchrun_sets_one_process(monkeypatch)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='gloo',
                                                                     **dist_cfg))))
    try:
        init_distributed(cfg)
        assert torch.distributed.is_initialized()
        assert torch.distributed.get_backend() == 'gloo'
        assert torch.distributed.get_world_size() == 1
    finally:
        finish_distributed()
    assert not torch.distributed.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason='the gloo path is taken without CUDA')
def test_a_wrapper_in_a_reference_cycle_is_gone_before_the_group(monkeypatch):
    """A runner holds its DistributedDataParallel model in reference cycles, which only a
    garbage collection frees; on torch 2.15 destroying a gloo group under a live wrapper
    aborts a rank at exit now and then. Automatic collection is off here, so only
    finish_distributed's own can free it."""
    as_torchrun_sets_one_process(monkeypatch)
    init_distributed(Config(dict(launcher='pytorch')))

    class Runner:  # the cycle: a hook holding the runner that holds the model
        pass
    runner = Runner()
    runner.model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    runner.hook = runner
    wrapper = weakref.ref(runner.model)
    del runner
    gc.disable()
    try:
        assert wrapper() is not None
        finish_distributed()
    finally:
        gc.enable()
    assert wrapper() is None and not torch.distributed.is_initialized()
