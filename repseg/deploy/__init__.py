# Copyright (c) repseg contributors. All rights reserved.
"""Deployment: the fused segmentor built from a config and a checkpoint,
deploy checkpoints with a config that describes them exactly, ONNX."""
from .build import (SegForward, build_fused, build_segmentor, check_channels,
                    check_model, check_shape)
from .convert import convert_checkpoint, deploy_model_cfg
from .onnx import export_onnx, to_onnx

__all__ = [
    'SegForward', 'build_fused', 'build_segmentor', 'check_channels',
    'check_model', 'check_shape', 'convert_checkpoint', 'deploy_model_cfg',
    'export_onnx', 'to_onnx'
]
