# DeepLabV3+, RepVGG-B1g2-fast: dilation only in the last 5 layers (the
# paper's "-fast" setting), output stride 8.
_base_ = './deeplabv3plus_repvgg_b1g2.py'
model = dict(backbone=dict(dilation_mode='fast'))
