# Copyright (c) repseg contributors. All rights reserved.
"""The entry points the tools call (each tool is argparse + one of these):
train, test, convert, export, quantize, benchmark, infer and the demo,
with their pre-flight checks and settings objects. Names are imported
when first used (``infer`` needs neither torch nor OpenMMLab for
deployed files)."""
from .._lazy import lazy_names

_NAMES = dict(
    BenchmarkSettings='..benchmark.run', ExportSettings='..deploy.onnx',
    load_any_checkpoint='..engine.checkpoint',
    adapt_to_device='..engine.config', load_cfg='..engine.config',
    replace_syncbn='..engine.config', DatasetError='..errors',
    RepsegError='..errors', UsageError='..errors',
    InferSettings='..infer', benchmark='.benchmark',
    check_data='.checks', check_pretrained='.checks',
    check_work_dir='.checks', convert='.deploy', convert_summary='.deploy',
    export='.deploy', export_summary='.deploy', infer='.infer',
    init_model='.inference', QuantizeSettings='.quantize',
    quantize='.quantize', TestSettings='.test', test='.test',
    train='.train')
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
