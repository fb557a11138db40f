"""Parameter and MAC counts of a segmentor config, as the paper's tables report them.

MACs are counted by ``torch.utils.flop_counter`` on the ``meta`` device: no weights are
allocated and nothing is computed, so even UperNet-B at 512x2048 takes a fraction of a
second. A model that reads a tensor's value while it runs (Mask2Former's deformable
attention checks its level shapes) cannot run there; it is counted on the CPU with random
weights instead. Convolutions and matrix products are counted (MACs = FLOPs / 2);
element-wise ops such as norms, activations, interpolation and deformable attention's
sampling are not, as in the paper's counts.
"""
from typing import Dict, NamedTuple, Tuple

import torch
from mmengine.config import Config

from mmseg.registry import MODELS
from mmseg_incnext.utils.compat import count_flops, meta_value_read_error
from mmseg_incnext.runner.device import replace_sync_bn

# Paper Tables 5 and 6: (params in M, GMACs, input height, input width).
PAPER_MODEL_SIZES: Dict[str, Tuple[float, float, int, int]] = {
    'upernet/incnext_t_ade20k.py': (56, 933, 512, 2048),
    'upernet/incnext_s_ade20k.py': (78, 1020, 512, 2048),
    'upernet/incnext_b_ade20k.py': (115, 1159, 512, 2048),
    'fpn/incnext_t_ade20k.py': (28, 44, 512, 512),
    'fpn/incnext_s_ade20k.py': (50, 65, 512, 512),
    'fpn/incnext_b_ade20k.py': (85, 100, 512, 512),
}


class ModelSize(NamedTuple):
    params: int
    macs: int
    backbone_macs: int


def count_params_and_macs(cfg: Config, shape: Tuple[int, int]) -> ModelSize:
    """Parameters, MACs and the backbone's share of the MACs of ``cfg.model`` for one
    image of ``shape`` (H, W).

    The MACs are those of a prediction: the backbone (and neck) and the decode head's
    ``predict``, which every mmseg head has (Mask2Former's ``forward`` needs data samples
    that ``mode='tensor'`` does not pass); auxiliary heads, used only in training, are not
    counted.
    """
    model_cfg = cfg.model.copy()
    model_cfg.pop('data_preprocessor', None)
    backbone = model_cfg.get('backbone', {})
    backbone.pop('init_cfg', None)
    replace_sync_bn(model_cfg)  # SyncBN cannot run outside a process group
    try:
        return _count_on(torch.device('meta'), model_cfg, shape)
    except meta_value_read_error():
        pass  # any other fault shows again on the CPU
    with torch.no_grad():
        return _count_on(torch.device('cpu'), model_cfg, shape)


def _count_on(device: torch.device, model_cfg: dict, shape: Tuple[int, int]) -> ModelSize:
    with device:
        model = MODELS.build(model_cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        image = torch.empty(1, 3, *shape).normal_()
        meta = dict(img_shape=shape, pad_shape=shape, ori_shape=shape)

        def predict():
            model.decode_head.predict(model.extract_feat(image), [meta], model.test_cfg)

        flops = count_flops(predict)
        backbone_flops = count_flops(lambda: model.backbone(image))
    return ModelSize(params, flops // 2, backbone_flops // 2)
