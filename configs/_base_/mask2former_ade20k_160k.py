# Mask2Former with an InceptionNeXt backbone on ADE20K: mmseg's Swin-T Mask2Former recipe
# (head, losses, 512x512 crops, 160K iterations at 8 GPUs x 2 images, AdamW lr 1e-4,
# weight decay 0.05, backbone at 0.1x lr, gradients clipped to norm 0.01, poly decay
# power 0.9) with the backbone of our UperNet configs in place of Swin.
_base_ = ['mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py']

# mmseg_incnext.models.mask2former imports mmdet.models (the head's pixel decoder, losses and
# matcher), or fails naming the extra to install.
custom_imports = dict(
    imports=['mmseg_incnext', 'mmseg_incnext.utils.stack_fixes',
             'mmseg_incnext.models.mask2former'],
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
        out_norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='inceptionnext://tiny')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))

# Swin's per-parameter rules, for InceptionNeXt's parameter names (a new name: the base's
# top-level custom_keys, with Swin's names, would be merged in). A custom key overrides
# norm_decay_mult, so under the 'backbone' key each backbone norm is listed again, as
# Swin's config lists its own; the layer scales (gamma) are exempt from decay as in our
# UperNet recipe.
backbone_norm_multi = dict(lr_mult=0.1, decay_mult=0.0)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
incnext_custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'backbone.stem.1': backbone_norm_multi,
    'backbone.norm': backbone_norm_multi,  # the output norms norm0..norm3
    'query_embed': embed_multi,
    'query_feat': embed_multi,
    'level_embed': embed_multi,
}
incnext_custom_keys.update({
    f'backbone.stages.{stage}.downsample.0': backbone_norm_multi
    for stage in range(1, 4)
})
# Blocks per stage of the deepest arch (small, base); an arch's missing blocks match nothing.
deepest_depths = (3, 3, 27, 3)
incnext_custom_keys.update({
    f'backbone.stages.{stage}.blocks.{block}.{name}': backbone_norm_multi
    for stage, blocks in enumerate(deepest_depths)
    for block in range(blocks)
    for name in ('norm', 'gamma')
})
optim_wrapper = dict(
    paramwise_cfg=dict(_delete_=True, custom_keys=incnext_custom_keys, norm_decay_mult=0.0))

# The additions of ./incnext_runtime.py: mmengine refuses a key that two bases define, and
# mmseg's Mask2Former config brings its own runtime.
custom_hooks = [
    dict(type='NonFiniteLossHook', action='raise'),
    dict(type='ResumeRandomStateHook'),
    dict(type='ResumeSameModelHook'),
]
env_cfg = dict(dist_cfg=dict(timeout=1800))
