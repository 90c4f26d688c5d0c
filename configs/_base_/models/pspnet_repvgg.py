# PSPNet with a RepVGG backbone at output stride 8 (RepVGG paper, Table 8):
# PSP decode head (pool scales 1, 2, 3, 6) on stage 4 (the paper's stage 5),
# FCN auxiliary head (loss weight 0.4) on stage 3 (the paper's stage 4).
# Leaf configs set the arch, the dilation mode and the head in_channels.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='RepVGG',
        arch='B2',
        dilation_mode='full',
        out_indices=(3, 4),
        norm_cfg=norm_cfg,
        norm_eval=False,
        with_cp=False,
        deploy=False),
    decode_head=dict(
        type='PSPHead',
        in_channels=2560,
        in_index=1,
        channels=512,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=640,
        in_index=0,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
