# PSPNet, RepVGG-D2se-fast: dilation only in the last 5 layers (the last 4
# of the 24-layer stage and the last stage's layer), still output stride 8.
_base_ = './pspnet_repvgg_d2se.py'
model = dict(backbone=dict(dilation_mode='fast'))
