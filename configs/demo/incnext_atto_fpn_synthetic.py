# The offline demo (`make demo`, tools/run_demo.py): InceptionNeXt-atto + Semantic FPN on the
# synthetic ADE20K-layout dataset of tools/make_synthetic_ade20k.py, trained from scratch on
# a CPU in a few minutes. It keeps the FPN recipe's structure with demo-sized settings; the
# real recipes are configs/fpn and configs/upernet.
_base_ = ['../fpn/incnext_t_ade20k.py']

# Its own folder, not the inherited FPN-T one (--work-dir overrides it).
work_dir = './work_dirs/demo_incnext_atto_fpn_synthetic'
data_root = 'data/synthetic_ade'
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)  # single process, CPU
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='atto', drop_path_rate=0.0, init_cfg=None, norm_cfg=norm_cfg,
        out_norm_cfg=norm_cfg),
    neck=dict(in_channels=[40, 80, 160, 320], out_channels=64),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 300
optim_wrapper = dict(optimizer=dict(lr=2e-3))  # from scratch, small batch: higher lr
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters),
    visualization=dict(draw=False))
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=8)
