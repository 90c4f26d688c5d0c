# Copyright (c) repseg contributors. All rights reserved.
"""Multi-process training on CPUs (gloo), which mmengine 0.10 does not do
out of the box: its launcher calls ``torch.cuda.set_device`` and its DDP
wrapper passes ``device_ids``, both of which fail without CUDA."""
import os

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS  # the Runner looks here


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for modules on the CPU: DDP requires
    ``device_ids=None`` for CPU modules, so the ids the Runner passes are
    dropped."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def init_cpu_distributed(launcher: str) -> bool:
    """Initialize the gloo process group for the 'pytorch' launcher (torchrun
    environment) when there is no CUDA, before mmengine's Runner would try
    (and fail) to. Returns True when it initialized the group."""
    if (launcher != 'pytorch' or torch.cuda.is_available()
            or not dist.is_available() or dist.is_initialized()):
        return False
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return False
    dist.init_process_group(backend='gloo')
    return True


def finish_distributed() -> None:
    """Wait for every rank, then close the process group: a gloo group left
    open while the processes exit can abort one of them ('terminate called
    without an active exception')."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
