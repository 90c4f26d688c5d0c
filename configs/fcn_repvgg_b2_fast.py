# FCN, RepVGG-B2-fast: dilation only in the last 5 layers (the
# paper's "-fast" setting), output stride 8.
_base_ = './fcn_repvgg_b2.py'
model = dict(backbone=dict(dilation_mode='fast'))
