# PSPNet with the quantization-friendly QARepVGG block (Chu et al. 2022)
# instead of RepVGG's; otherwise configs/pspnet_repvgg_b2.py, the
# paper's Table-8 recipe (plain L2 weight decay, which QARepVGG needs).
# The ImageNet RepVGG weights load as QARepVGG blocks that compute the
# same function (README.md, "INT8-friendly blocks: QARepVGG").
_base_ = './pspnet_repvgg_b2.py'
model = dict(backbone=dict(block_type='qarepvgg'))
