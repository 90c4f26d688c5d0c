# Copyright (c) repseg contributors. All rights reserved.
"""Turn a training checkpoint of a whole segmentor into a fused deploy
checkpoint (plus its deploy config), verified against the unfused model."""
import copy
import os
import os.path as osp
from typing import Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from mmseg.registry import MODELS
from mmseg.utils import register_all_modules
from ..reparam import find_unfused, reparameterize_model
from .runner import (UsageError, adapt_to_device, load_any_checkpoint,
                     without_pretrained)


def build_segmentor(cfg: Config) -> torch.nn.Module:
    """Build ``cfg.model`` without any pretrained initialization (weights
    come from a checkpoint)."""
    register_all_modules(init_default_scope=True)
    return MODELS.build(without_pretrained(copy.deepcopy(cfg.model)))


@torch.no_grad()
def compare_outputs(ref_model, fused_model, shape: Sequence[int] = (713, 713),
                    seed: int = 0) -> dict:
    """Run both models (eval mode) on one random normalized image of
    ``shape`` and compare the logits at input resolution: max |difference|
    and the fraction of pixels whose argmax class agrees."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, *shape, generator=gen)
    meta = [dict(img_shape=tuple(shape), ori_shape=tuple(shape),
                 pad_shape=tuple(shape))]
    ref_model.eval()
    fused_model.eval()
    ref = ref_model.encode_decode(x, meta)
    out = fused_model.encode_decode(x, meta)
    return dict(
        max_abs_diff=(ref - out).abs().max().item(),
        max_abs=ref.abs().max().item(),
        argmax_agreement=(ref.argmax(1) == out.argmax(1)).float().mean()
        .item())


def convert_checkpoint(cfg: Config,
                       checkpoint: str,
                       out: str,
                       force: bool = False,
                       verify_shape: Sequence[int] = (713, 713),
                       allow_unsafe: bool = False) -> dict:
    """Fuse a training checkpoint into a deploy checkpoint.

    Writes ``out`` (``{'state_dict', 'meta'}``) and, next to it, the deploy
    config ``<out without .pth>.py`` (the config with
    ``model.backbone.deploy=True``). Refuses to overwrite either unless
    ``force``. Returns sizes and the verification figures.
    """
    cfg_path = osp.splitext(out)[0] + '.py'
    for path in (out, cfg_path):
        if osp.exists(path) and not force:
            raise UsageError(f'{path!r} exists; pass --force to overwrite it')
    cfg = adapt_to_device(copy.deepcopy(cfg))
    model = build_segmentor(cfg)
    # the shared loader: safe reading and the explained mismatch errors
    if load_any_checkpoint(model, checkpoint,
                           allow_unsafe=allow_unsafe) == 'fused':
        raise UsageError(f'{checkpoint!r} is already a fused checkpoint')
    model.eval()
    fused = reparameterize_model(model)
    assert not find_unfused(fused)
    check = compare_outputs(model, fused, verify_shape)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = out + '.tmp'
    torch.save(
        dict(state_dict=fused.state_dict(),
             meta=dict(repseg_fused=True, source=osp.abspath(checkpoint))),
        tmp)
    os.replace(tmp, out)
    deploy_cfg = copy.deepcopy(cfg)
    if deploy_cfg.model.get('backbone', {}).get('type') == 'RepVGG':
        deploy_cfg.model.backbone.deploy = True
    without_pretrained(deploy_cfg.model)
    deploy_cfg.load_from = out
    deploy_cfg.dump(cfg_path)
    result = dict(
        check,
        source_bytes=osp.getsize(checkpoint),
        fused_bytes=osp.getsize(out),
        deploy_config=cfg_path,
        out=out)
    print_log(
        f"fused checkpoint {out}: {result['fused_bytes'] / 2**20:.1f} MiB "
        f"(training checkpoint {result['source_bytes'] / 2**20:.1f} MiB); "
        f"max |fused - unfused| {check['max_abs_diff']:.3g} (max |logit| "
        f"{check['max_abs']:.3g}); argmax agreement "
        f"{100 * check['argmax_agreement']:.4f}% on a "
        f'{verify_shape[0]}x{verify_shape[1]} input; deploy config '
        f'{cfg_path}', logger='current')
    return result
