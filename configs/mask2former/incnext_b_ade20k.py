_base_ = ['../_base_/mask2former_ade20k_160k.py']

# Each config trains and tests in its own folder (--work-dir overrides it).
work_dir = './work_dirs/mask2former_incnext_b_ade20k'
# The authors' ImageNet-1K weights (the URL: mmseg_incnext.RELEASE_URLS['base']).
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,  # the paper's rate for UperNet-B
        init_cfg=dict(type='Pretrained', checkpoint='inceptionnext://base')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))
