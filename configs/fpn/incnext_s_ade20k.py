_base_ = ['../_base_/fpn_ade20k_40k.py']

# ImageNet-1K weights released by the authors (mmseg_incnext.RELEASE_URLS['small']).
checkpoint_file = 'https://github.com/sail-sg/inceptionnext/releases/download/model/inceptionnext_small.pth'  # noqa
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))
