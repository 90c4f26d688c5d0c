# Copyright (c) repseg contributors. All rights reserved.
"""Turn a training checkpoint of a whole segmentor into a fused deploy
checkpoint (plus its deploy config), verified against the unfused model."""
import copy
import os
import os.path as osp
from typing import Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..engine.checkpoint import key_mismatch, load_any_checkpoint
from ..engine.config import adapt_to_device, without_pretrained
from ..errors import CheckpointError, UsageError
from ..reparam import (assert_fused, compare_outputs, describe,
                       find_conv_bn_pairs, reparameterize_model)
from .build import (SegForward, build_segmentor, check_input_size,
                    dataset_meta, refuse_overwrite, takes_argument)
from .record import block_type, config_input_size

# the top-level parts of an mmseg segmentor whose conv-BN pairs are folded
PARTS = ('backbone', 'neck', 'decode_head', 'auxiliary_head')


@torch.no_grad()
def compare_models(ref_model, fused_model,
                   shape: Sequence[int], seed: int = 0) -> dict:
    """Run both models (eval mode) on one random normalized image of
    ``shape`` and compare the logits at input resolution
    (:func:`repseg.reparam.compare_outputs`)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, *shape, generator=gen)
    return compare_outputs(SegForward(ref_model)(x),
                           SegForward(fused_model)(x))


def _part_cfgs(model_cfg, part: str) -> list:
    """The config dict(s) of one part (``auxiliary_head`` may be a list)."""
    node = model_cfg.get(part)
    if not node:
        return []
    return list(node) if isinstance(node, (list, tuple)) else [node]


def _part_modules(model: torch.nn.Module, part: str) -> list:
    module = getattr(model, part, None)
    if module is None:
        return []
    return list(module) if isinstance(module, torch.nn.ModuleList) else [
        module
    ]


def deploy_model_cfg(model_cfg, unfused: torch.nn.Module):
    """The model config that builds exactly the structure
    :func:`repseg.reparameterize_model` makes of ``unfused`` (built from
    ``model_cfg``), with stock mmseg.

    - a backbone that can build its fused form itself (a ``deploy``
      argument, e.g. RepVGG) gets ``deploy=True``;
    - another backbone whose conv-BN pairs are folded (mmseg's ResNets)
      gets ``conv_cfg=dict(type='ConvWithBias')`` and
      ``norm_cfg=dict(type='FoldedNorm')`` (see :mod:`repseg.models.folded`);
    - a neck or head whose conv-BN pairs are folded gets ``norm_cfg=None``:
      its ConvModules are then built without BN and with a bias.

    :func:`check_deploy_cfg` verifies the result against the fused model.
    """
    cfg = without_pretrained(copy.deepcopy(model_cfg))
    for part in PARTS:
        for node, module in zip(_part_cfgs(cfg, part),
                                _part_modules(unfused, part)):
            if part == 'backbone' and takes_argument(node['type'],
                                                      'deploy'):
                node['deploy'] = True
            elif not find_conv_bn_pairs(module):
                continue
            elif part == 'backbone':
                node['conv_cfg'] = dict(type='ConvWithBias')
                node['norm_cfg'] = dict(type='FoldedNorm')
            else:
                node['norm_cfg'] = None
    return cfg


def check_deploy_cfg(deploy_model: torch.nn.Module,
                     fused: torch.nn.Module) -> None:
    """Raise :class:`~repseg.engine.CheckpointError` naming the keys unless
    the model built from the deploy config has exactly the weights (names
    and shapes) of the fused model."""
    bad = key_mismatch(fused.state_dict(), deploy_model.state_dict())
    if bad:
        missing, unexpected, resized = bad
        raise CheckpointError(
            'the deploy config cannot describe the fused model of this '
            'config exactly, so stock mmseg would load the fused checkpoint '
            f'wrongly: weights of the fused model the deploy config lacks: '
            f'{missing[:5]}; weights it has that the fused model lacks: '
            f'{unexpected[:5]}; other shapes: {resized[:5]}. Nothing was '
            'written. Evaluate the training checkpoint with tools/test.py '
            '(it fuses the model) instead.')


def convert_checkpoint(cfg: Config,
                       checkpoint: str,
                       out: str,
                       force: bool = False,
                       input_size: Optional[Sequence[int]] = None,
                       allow_unsafe: bool = False) -> dict:
    """Fuse a training checkpoint into a deploy checkpoint.

    The fused model is verified against the unfused one on a random input
    of ``input_size`` ((H, W) or one side; default: the size the
    config's test loop runs, :func:`~.record.config_input_size`).

    Writes ``out`` (``{'state_dict', 'meta'}``) and, next to it, the deploy
    config ``<out without .pth>.py`` (:func:`deploy_model_cfg`, verified
    with :func:`check_deploy_cfg` and a forward). Refuses to overwrite
    either unless ``force``. Returns sizes and the verification figures.
    """
    if osp.isdir(out):
        raise UsageError(f'the output {out!r} is a folder; give a file name '
                         'ending in .pth (the deploy config is written next '
                         'to it)')
    cfg_path = osp.splitext(out)[0] + '.py'
    refuse_overwrite((out, cfg_path), force)
    cfg = adapt_to_device(copy.deepcopy(cfg))
    if input_size is not None:
        input_size = check_input_size(input_size)
    model = build_segmentor(cfg)
    # the shared loader: safe reading and the explained mismatch errors
    if load_any_checkpoint(model, checkpoint,
                           allow_unsafe=allow_unsafe) == 'fused':
        raise UsageError(f'{checkpoint!r} is already a fused checkpoint')
    if input_size is None:
        input_size = check_input_size(config_input_size(cfg))
    model.eval()
    fused = reparameterize_model(model)
    assert_fused(fused)
    check = compare_models(model, fused, input_size)
    # the deploy config must build exactly the fused model: checked by
    # building it (stock mmseg) and loading the fused weights strictly
    deploy_cfg = copy.deepcopy(cfg)
    deploy_cfg.model = deploy_model_cfg(cfg.model, model)
    deploy_model = build_segmentor(deploy_cfg)
    check_deploy_cfg(deploy_model, fused)
    deploy_model.load_state_dict(fused.state_dict(), strict=True)
    deploy_check = compare_models(fused, deploy_model, input_size)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = out + '.tmp'
    torch.save(
        dict(state_dict=fused.state_dict(),
             meta=dict(repseg_fused=True, source=osp.abspath(checkpoint),
                       dataset_meta=dataset_meta(cfg),
                       block_type=block_type(cfg))),
        tmp)
    os.replace(tmp, out)
    deploy_cfg.load_from = out
    # its own runs (tools/test.py, training) write elsewhere than the
    # training run's work dir
    deploy_cfg.work_dir = osp.join(
        './work_dirs', osp.splitext(osp.basename(cfg_path))[0])
    deploy_cfg.dump(cfg_path)
    result = dict(
        check,
        deploy_cfg_max_abs_diff=deploy_check['max_abs_diff'],
        deploy_cfg_argmax_agreement=deploy_check['argmax_agreement'],
        source_bytes=osp.getsize(checkpoint),
        fused_bytes=osp.getsize(out),
        deploy_config=cfg_path,
        input_size=list(input_size),
        out=out)
    print_log(
        f"fused checkpoint {out}: {result['fused_bytes'] / 2**20:.1f} MiB "
        f"(training checkpoint {result['source_bytes'] / 2**20:.1f} MiB); "
        f"{describe(check, 'fused - unfused')} on a "
        f'{input_size[0]}x{input_size[1]} input; deploy config '
        f'{cfg_path} (checked: builds the fused model exactly)',
        logger='current')
    return result
