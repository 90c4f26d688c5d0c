# Baseline: mmseg's own PSPNet-ResNet-50-D8 model (inherited from the
# installed mmsegmentation, not copied), trained with the SAME recipe as the
# RepVGG configs: Cityscapes 713x713, 40 epochs at batch 16, SGD lr 0.01
# poly 0.9, weight decay 1e-4, aux FCN head 0.4, sliding-window inference.
_base_ = [
    'mmseg::_base_/models/pspnet_r50-d8.py',
    './_base_/datasets/cityscapes_713x713.py', './_base_/default_runtime.py',
    './_base_/schedules/schedule_40e_cityscapes.py'
]
crop_size = (713, 713)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(476, 476)))
