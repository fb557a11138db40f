_base_ = ['../_base_/upernet_cityscapes_80k.py']

# Each config trains and tests in its own folder (--work-dir overrides it).
work_dir = './work_dirs/upernet_incnext_s_cityscapes'
# The authors' ImageNet-1K weights (the URL: mmseg_incnext.RELEASE_URLS['small']).
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='inceptionnext://small')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
