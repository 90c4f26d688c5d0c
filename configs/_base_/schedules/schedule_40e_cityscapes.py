# The paper's segmentation recipe (RepVGG, Sect. 4.3): SGD, momentum 0.9,
# weight decay 1e-4, poly learning rate from 0.01 with power 0.9 (per
# iteration), 40 epochs of Cityscapes train at a global batch of 16:
# 40 * 2975 / 16 = 7437.5 -> 7440 iterations.
max_iters = 7440
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
# Validate every 10 epochs (1860 iterations) and at the end.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=1860)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # a checkpoint every 4 epochs; `tools/train.py CONFIG --resume` continues
    # from the newest one
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=744,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# The recipe's global batch is 16 = 8 GPUs x 2 images
# (train_dataloader.batch_size is per GPU). With G GPUs keep the global batch
# by setting train_dataloader.batch_size=16 // G (e.g. 4 GPUs x 4); if that
# does not fit in memory, pass --auto-scale-lr to tools/train.py, which scales
# the learning rate linearly with the actual global batch (base: 16).
auto_scale_lr = dict(enable=False, base_batch_size=16)
