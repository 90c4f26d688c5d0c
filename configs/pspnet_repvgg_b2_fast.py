# PSPNet, RepVGG-B2-fast: dilation only in the last 5 layers (the last 4 of
# the paper's stage 4 and the stage-5 layer), still output stride 8
# (paper Table 8: 79.52 mIoU, faster than PSPNet-ResNet-101).
_base_ = './pspnet_repvgg_b2.py'
model = dict(backbone=dict(dilation_mode='fast'))
