# Copyright (c) repseg contributors. All rights reserved.
"""The service's counters in the Prometheus text format (version 0.0.4),
written here (no client library): requests by endpoint and status, the
latency histogram of ``POST /segment``, requests in flight and queued,
images failed, requests refused at the queue bound."""
import threading
from collections import Counter
from typing import Callable, Dict, Tuple

#: upper bounds (seconds) of the latency histogram's buckets
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0)
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'


class Metrics:
    """Counts kept by the service; ``gauges`` maps a gauge's name to
    (help, a function returning its value now)."""

    def __init__(self, gauges: Dict[str, Tuple[str, Callable[[], float]]]):
        self.gauges = gauges
        self._lock = threading.Lock()
        self.requests: Counter = Counter()
        self.failed: Counter = Counter()
        self.buckets = [0] * len(BUCKETS)
        self.count, self.total = 0, 0.0

    def request(self, path: str, status: int) -> None:
        with self._lock:
            self.requests[path, status] += 1

    def segment(self, seconds: float, status: int) -> None:
        """One ``POST /segment`` answered: its latency, and whether the
        image failed (any status but 200 and the queue's 503)."""
        with self._lock:
            self.count += 1
            self.total += seconds
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
            if status != 200 and status != 503:
                self.failed[status] += 1

    def text(self) -> str:
        with self._lock:
            out = ['# HELP repseg_serve_requests_total HTTP requests '
                   'answered, by endpoint and status.',
                   '# TYPE repseg_serve_requests_total counter']
            out += [f'repseg_serve_requests_total{{path="{p}",status="{s}"}}'
                    f' {n}' for (p, s), n in sorted(self.requests.items())]
            out += ['# HELP repseg_serve_segment_seconds Latency of POST '
                    '/segment, admission to answer.',
                    '# TYPE repseg_serve_segment_seconds histogram']
            out += [f'repseg_serve_segment_seconds_bucket{{le="{b}"}} {n}'
                    for b, n in zip(BUCKETS, self.buckets)]
            out += [f'repseg_serve_segment_seconds_bucket{{le="+Inf"}} '
                    f'{self.count}',
                    f'repseg_serve_segment_seconds_sum {self.total:.6f}',
                    f'repseg_serve_segment_seconds_count {self.count}',
                    '# HELP repseg_serve_images_failed_total Images not '
                    'segmented (bad input, time limit, errors), by status.',
                    '# TYPE repseg_serve_images_failed_total counter']
            out += [f'repseg_serve_images_failed_total{{status="{s}"}} {n}'
                    for s, n in sorted(self.failed.items())]
        for name, (help_, value) in self.gauges.items():
            out += [f'# HELP {name} {help_}', f'# TYPE {name} gauge',
                    f'{name} {value()}']
        return '\n'.join(out) + '\n'


__all__ = ['Metrics', 'BUCKETS', 'CONTENT_TYPE']
