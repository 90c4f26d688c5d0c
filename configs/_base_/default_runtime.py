# Runtime defaults (mmseg 1.x default_runtime.py) plus repseg's additions.
default_scope = 'mmseg'
# Importing repseg registers RepVGG and FusedEvalHook in mmseg's registries.
custom_imports = dict(imports=['repseg'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
# Every validation during training and every tools/test.py run evaluates the
# FUSED (re-parameterized) model; training continues on the multi-branch one.
custom_hooks = [dict(type='FusedEvalHook', check_equivalence=True)]
