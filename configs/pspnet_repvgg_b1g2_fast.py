# PSPNet, RepVGG-B1g2-fast: dilation only in the last 5 layers, output
# stride 8 (paper Table 8: 78.88 mIoU, faster than PSPNet-ResNet-50).
_base_ = './pspnet_repvgg_b1g2.py'
model = dict(backbone=dict(dilation_mode='fast'))
