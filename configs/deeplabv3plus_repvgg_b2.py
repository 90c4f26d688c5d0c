# DeepLabV3+, RepVGG-B2 backbone, all 3x3 convs of the last two stages
# dilated (output stride 8), Cityscapes 713x713, the RepVGG paper's
# PSPNet recipe.
# Train: python tools/train.py configs/deeplabv3plus_repvgg_b2.py
_base_ = [
    './_base_/models/deeplabv3plus_repvgg.py',
    './_base_/datasets/cityscapes_713x713.py', './_base_/default_runtime.py',
    './_base_/schedules/schedule_40e_cityscapes.py'
]
crop_size = (713, 713)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='B2',
        dilation_mode='full',
        # ImageNet-pretrained RepVGG-B2 (training-time weights); see the
        # README, "Pretrained backbones". To train from scratch:
        # --cfg-options model.backbone.init_cfg=None
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/RepVGG-B2-train.pth')),
    decode_head=dict(in_channels=2560, c1_in_channels=160),
    auxiliary_head=dict(in_channels=640),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(476, 476)))
