# DeepLabV3+, RepVGG-B2 at output stride 16 (stage 4 dilated by 2, ASPP
# rates 6/12/18 as DeepLabV3+ at OS 16): about 4x cheaper head and last
# stage than output stride 8.
_base_ = './deeplabv3plus_repvgg_b2.py'
model = dict(
    backbone=dict(
        dilation_mode='none',
        strides=(2, 2, 2, 2, 1),
        dilations=(1, 1, 1, 1, 2)),
    decode_head=dict(dilations=(1, 6, 12, 18)))
