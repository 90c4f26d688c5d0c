# Copyright (c) repseg contributors. All rights reserved.
"""The entry points the tools call (each tool is argparse + one of these):
train, test, convert, export, quantize, benchmark, infer and the demo,
with their pre-flight checks and settings objects. Names are imported
when first used (``infer`` needs neither torch nor OpenMMLab for
deployed files)."""
from .._lazy import lazy_names

_NAMES = dict(
    BenchmarkSettings='..benchmark.settings', ExportSettings='..deploy.onnx',
    load_any_checkpoint='..engine.checkpoint',
    adapt_to_device='..engine.config', load_cfg='..engine.config',
    check_cityscapes='..datasets', convert_label_ids='..datasets.cityscapes',
    OFFICIAL_COUNTS='..datasets.cityscapes',
    replace_syncbn='..engine.config', DatasetError='..errors',
    RepsegError='..errors', UsageError='..errors', run_command='..errors',
    InferSettings='..infer', unsearched_subfolders='..infer.sources',
    # repseg-infer (tools/infer.py): its parser and its run
    infer_parser='..infer.cli', infer_args='..infer.cli',
    benchmark='.benchmarking',
    check_data='.checks', check_pretrained='.checks',
    check_work_dir='.checks', convert='.deploy', convert_summary='.deploy',
    export='.deploy', export_summary='.deploy', infer='.segmenting',
    init_model='.inference', QuantizeSettings='.quantization',
    quantize='.quantization', quantize_report='.quantization',
    TestSettings='.evaluation', test='.evaluation',
    train='.training',
    # what the tools' shared flags are made of (tools import repseg.apis
    # only): the runtime registry and each runtime's own settings
    DEFAULT_RUNTIME='..deploy.runtimes',
    DEFAULT_CALIB_METHOD='..deploy.runtimes',
    calibration_methods='..deploy.runtimes',
    runtime_label='..deploy.runtimes', runtime_names='..deploy.runtimes',
    runtime_settings='..deploy.runtimes', PYTORCH='..deploy.runs',
    # repseg-serve (tools/serve.py): its parser, its run, the settings
    serve='..serve.server', ServeSettings='..serve',
    serve_parser='..serve.cli', serve_args='..serve.cli')
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
