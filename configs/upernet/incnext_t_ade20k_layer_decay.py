# UperNet InceptionNeXt-T with stage-wise lr decay 0.9 over the backbone, an option beside
# the paper's recipe (which has none); all else is incnext_t_ade20k.py. The decay type and
# num_layers are mmseg's ConvNeXt-T UperNet config's (stage_wise, 6): with the base lr
# 6e-5, the stem and downsampling layers train at 0.9**7, stages 0-3 at 0.9**6 .. 0.9**3,
# the output norms and the heads at 1 (the table is in
# mmseg_incnext.engine.optimizers.layer_decay_optimizer_constructor).
_base_ = ['./incnext_t_ade20k.py']

work_dir = './work_dirs/upernet_incnext_t_ade20k_layer_decay'
# The inherited norm_decay_mult=0 and '.gamma' decay_mult=0 still apply; the constructor
# also exempts biases, as mmseg's does.
optim_wrapper = dict(
    constructor='InceptionNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))
