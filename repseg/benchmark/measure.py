# Copyright (c) repseg contributors. All rights reserved.
"""What the benchmark measures: time side by side (interleaved rounds),
peak memory of one forward, GFLOPs, and the environment (versions,
threads, the CPU's vector ISA)."""
import os
import platform
import time
from typing import Callable, Dict, Hashable, List, Optional

import torch
import torch.nn as nn

from ..ops.cpu import cpu_vector_isa


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(fns: Dict[Hashable, Callable],
                     call: Callable[[Callable], object],
                     repeat: int = 3,
                     iters: int = 1,
                     on_round: Optional[Callable[[int], None]] = None
                     ) -> Dict[Hashable, List[float]]:
    """Seconds of every ``call(fn)`` of each of ``fns``, timed in
    interleaved rounds: round r calls every function ``iters`` times, so the
    ratios between them are measured under the same machine conditions
    (turbo, other load). Warm up before; ``call`` must wait for the work
    (e.g. synchronize a GPU). ``on_round(r)`` runs after each round."""
    times = {key: [] for key in fns}
    for r in range(repeat):
        for key, fn in fns.items():
            for _ in range(iters):
                t = time.perf_counter()
                call(fn)
                times[key].append(time.perf_counter() - t)
        if on_round is not None:
            on_round(r)
    return times


#: a run whose timings spread by more than this fraction of their median
#: (max - min) is flagged as disturbed
SPREAD_LIMIT = 0.3


def contention_note(times: Dict[Hashable, List[float]],
                    names: Optional[Dict[Hashable, str]] = None) -> str:
    """A warning when the timings of :func:`time_interleaved` cannot be
    trusted ('' when they can): a run whose repeats spread by more than
    :data:`SPREAD_LIMIT` of their median, or a load average above the CPU
    count (other processes competing)."""
    import statistics
    reasons = []
    spreads = {k: (max(v) - min(v)) / statistics.median(v)
               for k, v in times.items() if len(v) > 1 and min(v) > 0}
    if spreads:
        key, spread = max(spreads.items(), key=lambda kv: kv[1])
        if spread > SPREAD_LIMIT:
            name = (names or {}).get(key, key)
            reasons.append(f'the repeats of {name} spread by '
                           f'{100 * spread:.0f}% of their median')
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    cpus = os.cpu_count() or 1
    if load > cpus + 0.5:
        reasons.append(f'the load average is {load:.1f} on {cpus} CPUs')
    if not reasons:
        return ''
    return ('timings may be unreliable: ' + '; '.join(reasons) + ' (other '
            'work competed for the CPU). Re-run on an idle machine, or with '
            'more repeats, before trusting the figures.')


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
    from .. import __version__
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
