# DeepLabV3+, RepVGG-B1g2 backbone: configs/deeplabv3plus_repvgg_b2.py with the
# B1g2 arch and its channels (README.md, "Plugging RepVGG into any mmseg
# model").
_base_ = './deeplabv3plus_repvgg_b2.py'
model = dict(
    backbone=dict(
        arch='B1g2',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/RepVGG-B1g2-train.pth')),
    decode_head=dict(in_channels=2048, c1_in_channels=128),
    auxiliary_head=dict(in_channels=512))
