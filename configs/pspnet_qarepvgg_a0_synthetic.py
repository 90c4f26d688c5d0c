# The demo's setting (PSPNet-A0 on the synthetic dataset) with the
# quantization-friendly QARepVGG block: configs/pspnet_repvgg_a0_synthetic.py
# with block_type='qarepvgg'.
_base_ = './pspnet_repvgg_a0_synthetic.py'
model = dict(backbone=dict(block_type='qarepvgg'))
