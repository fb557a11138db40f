# UperNet on Cityscapes: mmseg's Cityscapes data (512x1024 crops, 19 classes) and the length
# and batch of mmseg's UperNet Cityscapes schedule (80K iterations at 4 GPUs x 2 images).
# The optimizer is the paper's UperNet one (as on ADE20K), not that schedule's SGD lr 0.01:
# SGD is ResNet's recipe, and the backbone is fine-tuned as Swin's and ConvNeXt's are.
_base_ = [
    './models/upernet_incnext.py',
    'mmseg::_base_/datasets/cityscapes.py',
    './incnext_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # Swin's recipe exempts norm layers from weight decay; the layer scale is exempt too,
    # as in the ImageNet training of InceptionNeXt (timm) and ConvNeXt.
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={'.gamma': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]

# 4 GPUs x 2 images. On fewer GPUs pass --auto-scale-lr to scale lr to the actual batch.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=8)
