# Copyright (c) repseg contributors. All rights reserved.
"""Deployment: the fused segmentor built from a config and a checkpoint,
deploy checkpoints with a config that describes them exactly, the export
to ONNX / OpenVINO IR, and the runtimes that run them
(:mod:`.runtimes`). Names are imported when first used: the runtimes
(numpy only) import without the training stack."""
from .._lazy import lazy_names

_NAMES = dict(
    SegForward='.build', build_fused='.build', build_segmentor='.build',
    check_channels='.build', check_model='.build', check_input_size='.build',
    convert_checkpoint='.convert', deploy_model_cfg='.convert',
    export_model='.onnx', to_onnx='.onnx',
    ExportSettings='.onnx', check_belongs='.record',
    model_record='.record', record_of='.record', recipe_of='.record',
    config_input_size='.record', ModelRecord='.runtimes.record',
    get_runtime='.runtimes', runtime_of_file='.runtimes')
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
