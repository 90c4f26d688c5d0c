# Copyright (c) repseg contributors. All rights reserved.
"""Python inference with mmseg's own API on repseg's files: a segmentor
loaded strictly (config and checkpoint must fit: one clear error
otherwise), fused by default, ready for ``mmseg.apis.inference_model``,
``show_result_pyplot`` and ``MMSegInferencer``."""
import copy
from typing import Optional, Union

from mmengine.config import Config

from ..deploy.build import build_segmentor, dataset_meta
from ..engine.checkpoint import load_any_checkpoint, read_checkpoint
from ..engine.config import adapt_to_device, load_cfg
from ..errors import UsageError
from ..reparam import reparameterize_model


def init_model(config: Union[str, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cpu',
               cfg_options: Optional[dict] = None,
               fused: bool = True,
               allow_unsafe: bool = False):
    """The segmentor of ``config`` with the weights of ``checkpoint``, like
    ``mmseg.apis.init_model`` but strict.

    Args:
        config (str or Config): a training or a deploy config.
        checkpoint (str, optional): a training or a fused (deploy)
            checkpoint; loaded safely and with strict key checking (a fused
            checkpoint given with a training config builds the fused form
            first). One that fits neither form of the model is a
            :class:`~repseg.errors.CheckpointError` naming the mismatch
            (stock mmseg only warns and runs a partly random model).
        device (str): 'cpu' (default) or e.g. 'cuda:0'.
        cfg_options (dict, optional): overrides of the config.
        fused (bool): re-parameterize the model (default; the outputs are
            the same, the model is faster). False keeps the training form
            of a training checkpoint.
        allow_unsafe (bool): allow full unpickling of a checkpoint that
            needs it (only for files you trust).

    Returns:
        nn.Module: the segmentor in eval mode with ``cfg`` and
        ``dataset_meta`` (classes and palette: from the checkpoint's meta,
        else from the config's test dataset), as mmseg's ``init_model``
        sets them.
    """
    refuse_deployed_file(checkpoint)
    cfg = config if isinstance(config, Config) else load_cfg(
        config, cfg_options=cfg_options)
    if isinstance(config, Config) and cfg_options:
        cfg = copy.deepcopy(cfg)
        cfg.merge_from_dict(cfg_options)
    if not str(device).startswith('cuda'):
        cfg = adapt_to_device(cfg)
    model = build_segmentor(cfg)
    meta = None
    if checkpoint is not None:
        ckpt = read_checkpoint(checkpoint, allow_unsafe)
        load_any_checkpoint(model, checkpoint, ckpt=ckpt)
        if isinstance(ckpt, dict):
            meta = (ckpt.get('meta') or {}).get('dataset_meta')
    if fused:
        reparameterize_model(model, inplace=True)
    model.cfg = cfg
    model.dataset_meta = meta or dataset_meta(cfg)
    return model.to(device).eval()


def refuse_deployed_file(checkpoint: Optional[str]) -> None:
    """A deployed file (.onnx, OpenVINO .xml; fp32 or INT8) is not a
    PyTorch checkpoint: say where it runs instead."""
    from ..deploy.runtimes import runtime_of_file
    runtime = checkpoint and runtime_of_file(checkpoint)
    if runtime:
        raise UsageError(
            f'{checkpoint!r} is a deployed {runtime.label} file, not a '
            'PyTorch checkpoint: segment images with it through '
            'repseg.infer.Segmenter (tools/infer.py --model FILE), evaluate '
            'it with repseg.apis.test / tools/test.py CONFIG FILE, or run it '
            'with repseg.deploy.runtime_of_file(FILE).load(FILE)')


__all__ = ['init_model', 'refuse_deployed_file']
