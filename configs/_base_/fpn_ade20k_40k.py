# The paper's Semantic FPN recipe on ADE20K (Sec. 4.2), following PVT and PoolFormer:
# AdamW lr 2e-4, weight decay 1e-4, poly decay with power 0.9, 40K iterations at a total
# batch of 32 (8 GPUs x 4 images), 512x512 crops.
_base_ = [
    './models/fpn_incnext.py',
    'mmseg::_base_/datasets/ade20k.py',
    './incnext_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False),
]

# 8 GPUs x 4 images. On fewer GPUs pass --auto-scale-lr to scale lr to the actual batch.
train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=32)
