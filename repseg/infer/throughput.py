# Copyright (c) repseg contributors. All rights reserved.
"""How fast a folder is segmented, against how fast the network alone runs:
per model file and thread count, latency and throughput mode, model-only
(the prepared inputs through the network, as many in flight as the run
allows) and end to end (reading, preprocessing, network and writing, with
and without the pipeline), medians of interleaved rounds in one process,
the CPU's ISA beside the figures."""
import dataclasses
import os.path as osp
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence

from .driver import plan
from .engine import run
from .job import InferSettings, Summary
from .network import load_network
from .predict import logits_are_final, prepare
from .sources import read_image


@dataclasses.dataclass
class Row:
    """One model file, thread count and mode: images/s (medians)."""
    model: str
    threads: int
    mode: str
    streams: int
    requests: int
    model_only: float
    pipelined: float
    sequential: float

    @property
    def ratio(self) -> float:
        """End to end (pipelined) over model-only."""
        return self.pipelined / self.model_only if self.model_only else 0.0


def _model_only(net, inputs, images) -> float:
    """Images/s of the network alone on prepared inputs, with as many calls
    in flight as the run makes (its requests), each the call the run makes
    (the runtime's class map where the image takes that path)."""
    calls = [net.labels if net.labels is not None and
             logits_are_final(x, img, net.recipe) else net.run
             for x, img in zip(inputs, images)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max(1, net.info.requests)) as pool:
        list(pool.map(lambda c, x: c(x), calls, inputs))
    return len(inputs) / (time.perf_counter() - start)


def _end_to_end(net, sources, total, settings, pipeline: bool) -> float:
    s = dataclasses.replace(settings, pipeline=pipeline, force=True,
                            quiet=True)
    with tempfile.TemporaryDirectory(prefix='repseg-tp-') as out:
        summary = Summary()
        for _ in run(net, sources, total, out, s, summary):
            pass
    return summary.images_per_s


def measure(models: Sequence[str], folder: str,
            threads: Sequence[int] = (1, 2), rounds: int = 3,
            modes: Sequence[str] = ('latency', 'throughput')) -> List[Row]:
    """The rows of every model file x thread count x mode on the images of
    ``folder``: ``rounds`` interleaved rounds (each round runs every
    configuration once; the medians are reported)."""
    base = InferSettings(quiet=True, recursive=True)
    sources, total = plan([folder], base)
    images = [read_image(s.path) for s in sources if s.kind == 'image']
    nets, figures = {}, {}
    for model in models:
        for t in threads:
            for mode in modes:
                s = dataclasses.replace(base, threads=t, mode=mode)
                net = load_network(model, settings=s, images=total)
                inputs = [prepare(img, net.recipe) for img in images]
                nets[(model, t, mode)] = (net, s, inputs)
    for _ in range(rounds):
        for key, (net, s, inputs) in nets.items():
            got = figures.setdefault(key, dict(m=[], p=[], q=[]))
            got['m'].append(_model_only(net, inputs, images))
            got['p'].append(_end_to_end(net, sources, total, s, True))
            got['q'].append(_end_to_end(net, sources, total, s, False))
    rows = []
    for (model, t, mode), got in figures.items():
        info = nets[(model, t, mode)][0].info
        med: Dict[str, float] = {k: statistics.median(v)
                                 for k, v in got.items()}
        rows.append(Row(osp.basename(model), t, info.mode, info.streams,
                        info.requests, med['m'], med['p'], med['q']))
    return rows


def table(rows: Sequence[Row], isa: str, images: int, rounds: int) -> str:
    """The rows as a markdown table."""
    lines = [f'CPU: {isa}; {images} images, medians of {rounds} '
             'interleaved rounds', '',
             '| model | threads | mode (streams x requests) | model-only '
             'img/s | end to end, pipelined | end to end, one after the '
             'other | pipelined / model-only |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r.model} | {r.threads} | {r.mode} ({r.streams} x '
                     f'{r.requests}) | {r.model_only:.1f} | '
                     f'{r.pipelined:.1f} | {r.sequential:.1f} | '
                     f'{r.ratio:.2f}x |')
    return '\n'.join(lines)


__all__ = ['Row', 'measure', 'table']
