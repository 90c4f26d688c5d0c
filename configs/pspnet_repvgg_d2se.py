# PSPNet, RepVGG-D2se backbone (the family's strongest: layers 1, 8, 14, 24,
# 1, B2's widths, squeeze-and-excitation in every block, the stem included),
# all 3x3 convs of the last two stages dilated (output stride 8), Cityscapes
# 713x713, the RepVGG paper's recipe as the B2 configs (poly LR).
# Train: python tools/train.py configs/pspnet_repvgg_d2se.py
_base_ = [
    './_base_/models/pspnet_repvgg.py',
    './_base_/datasets/cityscapes_713x713.py', './_base_/default_runtime.py',
    './_base_/schedules/schedule_40e_cityscapes.py'
]
crop_size = (713, 713)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='D2se',
        dilation_mode='full',
        # ImageNet-pretrained RepVGG-D2se (the official, timm or mmpretrain
        # file, training-time or deploy); see the README, "Pretrained
        # backbones". To train from scratch:
        # --cfg-options model.backbone.init_cfg=None
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/RepVGG-D2se-200epochs-train.pth')),
    decode_head=dict(in_channels=2560),   # 512 * 5
    auxiliary_head=dict(in_channels=640),  # 256 * 2.5
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(476, 476)))
