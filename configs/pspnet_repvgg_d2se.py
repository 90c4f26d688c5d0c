# PSPNet, RepVGG-D2se backbone (the family's strongest: layers 1, 8, 14, 24,
# 1, B2's widths, squeeze-and-excitation in every block, the stem included),
# all 3x3 convs of the last two stages dilated (output stride 8), Cityscapes
# 713x713: the B2 config's recipe (poly LR) and heads (same widths).
# Train: python tools/train.py configs/pspnet_repvgg_d2se.py
_base_ = './pspnet_repvgg_b2.py'
model = dict(
    backbone=dict(
        arch='D2se',
        # ImageNet-pretrained RepVGG-D2se (the official, timm or mmpretrain
        # file, training-time or deploy); see the README, "Pretrained
        # backbones". To train from scratch:
        # --cfg-options model.backbone.init_cfg=None
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/RepVGG-D2se-200epochs-train.pth')))
