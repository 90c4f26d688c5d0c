# PSPNet, RepVGG-B1g2 backbone (groupwise convs, g=2), all 3x3 convs of the
# last two stages dilated (output stride 8), Cityscapes 713x713
# (paper Table 8: 78.70 mIoU).
_base_ = './pspnet_repvgg_b2.py'
model = dict(
    backbone=dict(
        arch='B1g2',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/RepVGG-B1g2-train.pth')),
    decode_head=dict(in_channels=2048),   # 512 * 4
    auxiliary_head=dict(in_channels=512))  # 256 * 2
