# FCN (mmseg's own model base, inherited) with a RepVGG backbone at output
# stride 8: FCNHead (2 convs, input concatenated) on stage 4, FCN auxiliary
# head on stage 3. Leaf configs set the arch, the dilation mode and the
# head in_channels (README.md, "Plugging RepVGG into any mmseg model").
_base_ = 'mmseg::_base_/models/fcn_r50-d8.py'
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
    decode_head=dict(in_channels=2560, in_index=3),
    auxiliary_head=dict(in_channels=640, in_index=2))
