_base_ = ['../_base_/mask2former_ade20k_160k.py']

# Each config trains and tests in its own folder (--work-dir overrides it).
work_dir = './work_dirs/mask2former_incnext_s_ade20k'
# The authors' ImageNet-1K weights (the URL: mmseg_incnext.RELEASE_URLS['small']).
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,  # the paper's rate for UperNet-S
        init_cfg=dict(type='Pretrained', checkpoint='inceptionnext://small')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
