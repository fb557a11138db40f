"""The process group of a launched run on a CPU: started with or without a configured
timeout (torch 2.1 refuses timeout=None), and torn down at the end. Two-process runs:
tests/test_data_check.py and tests/test_reliability.py."""
import pytest
import torch
from mmengine.config import Config

from mmseg_incnext.runner.process_group import finish_distributed, init_distributed
from tests.helpers import free_port


@pytest.mark.skipif(torch.cuda.is_available(), reason='the gloo path is taken without CUDA')
@pytest.mark.parametrize('dist_cfg', [{}, {'timeout': 60}], ids=['default timeout', '60 s'])
def test_one_rank_group_starts_and_ends(monkeypatch, dist_cfg):
    # what torchrun sets for one process
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(name, value)
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
