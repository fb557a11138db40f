# The paper's UperNet recipe on ADE20K (Sec. 4.2 and App. B.2), which follows Swin's:
# AdamW lr 6e-5, weight decay 0.01, 1500-iteration linear warm-up then poly decay (power 1),
# 160K iterations at a total batch of 16 (8 GPUs x 2 images), 512x512 crops.
_base_ = [
    './models/upernet_incnext.py',
    'mmseg::_base_/datasets/ade20k.py',
    './incnext_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # Swin's recipe exempts norm layers from weight decay; the layer scale is exempt too,
    # as in the ImageNet training of InceptionNeXt (timm) and ConvNeXt.
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={'.gamma': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 8 GPUs x 2 images. On fewer GPUs pass --auto-scale-lr to scale lr to the actual batch.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
