_base_ = ['../_base_/upernet_cityscapes_80k.py']

# Each config trains and tests in its own folder (--work-dir overrides it).
work_dir = './work_dirs/upernet_incnext_b_cityscapes'
# The authors' ImageNet-1K weights (the URL: mmseg_incnext.RELEASE_URLS['base']).
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='inceptionnext://base')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
