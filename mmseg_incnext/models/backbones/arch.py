"""The InceptionNeXt variants (the released checkpoints' and timm's), as plain data.

Shared by the backbone, which builds them, and by :mod:`.weights`, which names the variant a
checkpoint was made for.
"""
from typing import Dict

ARCH_SETTINGS: Dict[str, dict] = {
    'atto': dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320),
                 band_kernel_size=9, branch_ratio=0.25),
    'tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    'small': dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    'base': dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
}
ARCH_DEFAULTS = dict(mlp_ratios=(4, 4, 4, 3), square_kernel_size=3, band_kernel_size=11,
                     branch_ratio=0.125)
