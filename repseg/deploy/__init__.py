# Copyright (c) repseg contributors. All rights reserved.
"""Deployment: the fused segmentor built from a config and a checkpoint,
deploy checkpoints with a config that describes them exactly, the export
to ONNX / OpenVINO IR, and the runtimes that run them
(:mod:`.runtimes`)."""
from .build import (SegForward, build_fused, build_segmentor, check_channels,
                    check_model, check_shape)
from .convert import convert_checkpoint, deploy_model_cfg
from .onnx import export_model, export_onnx, to_onnx
from .record import check_belongs, model_record, config_input_size
from .runtimes import get_runtime, runtime_of_file

__all__ = [
    'SegForward', 'build_fused', 'build_segmentor', 'check_channels',
    'check_model', 'check_shape', 'convert_checkpoint', 'deploy_model_cfg',
    'export_model', 'export_onnx', 'to_onnx', 'get_runtime',
    'runtime_of_file', 'check_belongs', 'model_record', 'config_input_size'
]
