# A small PSPNet-RepVGG-A0 for CPU experiments on Cityscapes: plain BN (no
# SyncBN), 'fast' dilation, narrower heads, 512x512 crops, 2 images a step.
# Same schedule shape as the paper (poly 0.9 from 0.01), fewer iterations.
_base_ = [
    './_base_/models/pspnet_repvgg.py',
    './_base_/datasets/cityscapes_713x713.py', './_base_/default_runtime.py',
    './_base_/schedules/schedule_40e_cityscapes.py'
]
norm_cfg = dict(type='BN', requires_grad=True)
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(arch='A0', dilation_mode='fast', norm_cfg=norm_cfg),
    decode_head=dict(in_channels=1280, channels=128, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=192, channels=64, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(1024, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1024, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
env_cfg = dict(dist_cfg=dict(backend='gloo'))
