# UPerNet (mmseg's own model base, inherited, not copied) with a RepVGG
# backbone instead of its ResNet-50: UPerHead on stages 1-4 (output strides
# 4, 8, 16, 32, no dilation, as mmseg's UPerNets), FCN auxiliary head on
# stage 3. Leaf configs set the arch and the head in_channels (README.md,
# "Plugging RepVGG into any mmseg model", has the channel table).
_base_ = 'mmseg::_base_/models/upernet_r50.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,   # the base names ResNet weights
    backbone=dict(
        _delete_=True,   # drop every ResNet argument (depth, style, ...)
        type='RepVGG',
        arch='B2',
        dilation_mode='none',
        out_indices=(1, 2, 3, 4),   # index i of the outputs = stage i + 1
        norm_cfg=norm_cfg,
        norm_eval=False,
        with_cp=False,
        deploy=False),
    decode_head=dict(in_channels=[160, 320, 640, 2560], in_index=[0, 1, 2,
                                                                  3]),
    auxiliary_head=dict(in_channels=640, in_index=2))
