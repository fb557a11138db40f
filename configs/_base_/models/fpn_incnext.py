# Semantic FPN with an InceptionNeXt backbone, on mmseg's FPN base (as PoolFormer's).
_base_ = ['mmseg::_base_/models/fpn_r50.py']

custom_imports = dict(imports=['mmseg_incnext', 'mmseg_incnext.utils.stack_fixes'],
                      allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='InceptionNeXt',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        layer_scale_init_value=1e-6,
        norm_cfg=norm_cfg,
        out_norm_cfg=norm_cfg),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))
