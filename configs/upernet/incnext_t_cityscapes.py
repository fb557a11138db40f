_base_ = ['../_base_/upernet_cityscapes_80k.py']

# Each config trains and tests in its own folder (--work-dir overrides it).
work_dir = './work_dirs/upernet_incnext_t_cityscapes'
# The authors' ImageNet-1K weights (the URL: mmseg_incnext.RELEASE_URLS['tiny']).
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='inceptionnext://tiny')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
