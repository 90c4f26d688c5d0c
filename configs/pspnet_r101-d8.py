# Baseline: mmseg's PSPNet-ResNet-101-D8 with the same recipe as the RepVGG
# configs (see pspnet_r50-d8.py).
_base_ = './pspnet_r50-d8.py'
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))
