# UperNet with an InceptionNeXt backbone. The head and the FCN auxiliary head on stage 3
# come from mmseg's Swin UperNet base, as the paper follows Swin's UperNet setup.
_base_ = ['mmseg::_base_/models/upernet_swin.py']

custom_imports = dict(imports=['mmseg_incnext', 'mmseg_incnext.utils.stack_fixes'],
                      allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='InceptionNeXt',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        layer_scale_init_value=1e-6,
        norm_cfg=norm_cfg,
        # The authors add a SyncBN on the output of each stage for segmentation.
        out_norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
