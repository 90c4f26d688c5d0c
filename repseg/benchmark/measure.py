# Copyright (c) repseg contributors. All rights reserved.
"""What the benchmark measures: time side by side (interleaved rounds),
peak memory of one forward, GFLOPs, and the environment (versions,
threads, the CPU's vector ISA)."""
import os
import platform
from typing import Optional

import torch
import torch.nn as nn

from ..ops.cpu import cpu_vector_isa
from ..ops.timing import (SPREAD_LIMIT, contention_note,  # noqa: F401
                         time_interleaved)


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _read_status(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _glibc():
    try:
        import ctypes
        return ctypes.CDLL('libc.so.6')
    except OSError:
        return None


def _set_mmap_threshold(nbytes: int) -> bool:
    libc = _glibc()
    if libc is None or not hasattr(libc, 'mallopt'):
        return False
    return bool(libc.mallopt(-3, nbytes))   # M_MMAP_THRESHOLD


@torch.no_grad()
def peak_forward_memory(fn, x, device) -> Optional[int]:
    """Peak memory of one forward in bytes: CUDA max allocated on GPU; on
    CPU the growth of the resident set over the forward.

    On CPU, for the duration of the measurement, large allocations are
    made to come from mmap (glibc ``M_MMAP_THRESHOLD`` = 1 MiB) so that
    freed tensors go back to the OS instead of staying in the heap, the
    heap is trimmed and the kernel's high-water mark reset: the figure is
    this forward's own, not inflated or hidden by earlier models. Afterwards
    the threshold goes back to glibc's maximum (32 MiB), so timing runs use
    the usual heap behaviour."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn(x)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    libc = _glibc()
    _set_mmap_threshold(1 << 20)
    try:
        if libc is not None and hasattr(libc, 'malloc_trim'):
            libc.malloc_trim(0)
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')     # reset VmHWM to the current RSS
        except OSError:
            return None
        base = _read_status('VmRSS')
        fn(x)
        peak = _read_status('VmHWM')
    finally:
        _set_mmap_threshold(32 << 20)
    if base is None or peak is None:
        return None
    return max(0, peak - base)


def count_gflops(model: nn.Module, x: torch.Tensor) -> Optional[float]:
    """GFLOPs of one forward with mmengine's complexity analysis (fvcore
    convention: one multiply-add counts as one FLOP)."""
    from mmengine.analysis import FlopAnalyzer
    try:
        flops = FlopAnalyzer(model, (x, ))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        return flops.total() / 1e9
    except Exception:  # noqa: B902  (tracing failures must not stop timing)
        return None


def environment(device, batch, dtype, args) -> dict:
    """Versions, threads, device and the CPU's vector ISA: what the
    figures of a run depend on."""
    import mmcv
    import mmengine

    import mmseg
    from ..version import __version__
    env = dict(
        device=str(device),
        device_name=(torch.cuda.get_device_name(device)
                     if device.type == 'cuda' else platform.processor()
                     or platform.machine()),
        torch=torch.__version__, mmcv=mmcv.__version__,
        mmengine=mmengine.__version__, mmseg=mmseg.__version__,
        repseg=__version__, threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(), batch=batch, dtype=dtype,
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        channels_last=args.get('channels_last', False),
        compile=args.get('compile', False), amp=args.get('amp', False),
        cpu_isa=cpu_vector_isa())
    return env


__all__ = [
    'sync', 'peak_forward_memory', 'contention_note', 'time_interleaved',
    'count_gflops', 'environment', 'cpu_vector_isa'
]
