# Copyright (c) repseg contributors. All rights reserved.
"""Timing side by side: interleaved rounds (so that ratios between models
are measured under the same machine conditions) and a note when the
figures cannot be trusted. Used by the speed benchmark and the INT8
report alike; imports neither torch nor a runtime."""
import os
import time
from typing import Callable, Dict, Hashable, List, Optional


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


__all__ = ['time_interleaved', 'contention_note', 'SPREAD_LIMIT']
