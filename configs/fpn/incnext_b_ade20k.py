_base_ = ['../_base_/fpn_ade20k_40k.py']

# ImageNet-1K weights released by the authors (mmseg_incnext.RELEASE_URLS['base']).
checkpoint_file = 'https://github.com/sail-sg/inceptionnext/releases/download/model/inceptionnext_base.pth'  # noqa
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
