_base_ = ['../_base_/fpn_ade20k_40k.py']

# Each config trains and tests in its own folder (--work-dir overrides it).
work_dir = './work_dirs/fpn_incnext_s_ade20k'
# The authors' ImageNet-1K weights (the URL: mmseg_incnext.RELEASE_URLS['small']).
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='inceptionnext://small')),
    neck=dict(in_channels=[96, 192, 384, 768]))
