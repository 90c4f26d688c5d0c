# DeepLabV3+ (mmseg's own model base, inherited) with a RepVGG backbone at
# output stride 8: DepthwiseSeparableASPPHead on stage 4 with the low-level
# features of stage 1 (output stride 4; stage 0 is the stem), FCN auxiliary
# head on stage 3. Leaf configs set the arch, the dilation mode and the
# channels (README.md, "Plugging RepVGG into any mmseg model").
_base_ = 'mmseg::_base_/models/deeplabv3plus_r50-d8.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='RepVGG',
        arch='B2',
        dilation_mode='full',
        out_indices=(1, 2, 3, 4),   # index i of the outputs = stage i + 1
        norm_cfg=norm_cfg,
        norm_eval=False,
        with_cp=False,
        deploy=False),
    decode_head=dict(in_channels=2560, in_index=3, c1_in_channels=160),
    auxiliary_head=dict(in_channels=640, in_index=2))
