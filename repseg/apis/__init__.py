# Copyright (c) repseg contributors. All rights reserved.
"""The entry points the tools call (each tool is argparse + one of these):
train, test, convert, export, quantize, benchmark and the demo, with their
pre-flight checks and settings objects."""
from ..benchmark.run import BenchmarkSettings
from ..deploy.onnx import ExportSettings
from ..engine.checkpoint import load_any_checkpoint
from ..engine.config import adapt_to_device, load_cfg, replace_syncbn
from ..errors import DatasetError, RepsegError, UsageError
from ..infer import InferSettings
from .benchmark import benchmark
from .checks import check_data, check_pretrained, check_work_dir
from .deploy import convert, convert_summary, export, export_summary
from .infer import infer
from .inference import init_model
from .quantize import QuantizeSettings, quantize
from .test import TestSettings, test
from .train import train

__all__ = [
    'RepsegError', 'UsageError', 'DatasetError', 'adapt_to_device',
    'check_data', 'check_pretrained', 'check_work_dir', 'init_model',
    'load_any_checkpoint', 'load_cfg', 'quantize', 'QuantizeSettings',
    'replace_syncbn', 'test', 'TestSettings', 'train', 'benchmark',
    'BenchmarkSettings', 'export', 'export_summary', 'ExportSettings',
    'convert', 'convert_summary', 'infer', 'InferSettings'
]
