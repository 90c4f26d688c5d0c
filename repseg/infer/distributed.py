# Copyright (c) repseg contributors. All rights reserved.
"""An inference run on a Ray cluster (Ray Data): the images' paths go in,
actors that each hold one compiled model (its threads and streams set from
the CPUs Ray gives the actor) segment them and write the outputs where one
process would (a filesystem every worker shares), and the driver keeps the
manifest: which images are done, which failed. A worker lost in the middle
(a machine gone, a killed process) is restarted by Ray and its unfinished
batch runs again; outputs are written atomically, so an image is never
half-written and ``done.txt`` lists each image once.

Ray is imported only here, and only when a run asks for it."""
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional

from ..errors import UsageError, opt
from .engine import (InferSettings, Result, Summary, _Job, _Progress,
                     _quiet_opencv)
from .network import describe_network, load_network
from .outputs import remove_stale_temporaries
from .sources import Item, Source

#: images per task sent to an actor (a lost worker redoes at most this many)
BATCH = 8


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise UsageError(
            f'{opt("ray")} needs Ray Data, which cannot be imported here '
            f'({e}): pip install "ray[data]" (the test extras bring it)'
        ) from None
    return ray


class _Worker:
    """One Ray actor: the network compiled once for the CPUs the actor has,
    its images segmented and written as one process does (several at once,
    as many as the network takes), the statuses returned to the driver."""

    def __init__(self, model: str, checkpoint: Optional[str],
                 config: Optional[str], settings: InferSettings,
                 items: List[Item], out_dir: str):
        _quiet_opencv()
        net = load_network(model, checkpoint, config, settings, images=2)
        # the class areas go back to the driver (one writer of the CSV)
        self.areas = settings.areas
        mine = dataclasses.replace(settings, areas=False,
                                   keep_labels=settings.areas)
        self.job = _Job(net, out_dir, mine, Summary(), manifest=False)
        self.items = items
        self.pool = ThreadPoolExecutor(max(1, net.info.requests))

    def __call__(self, batch: dict) -> dict:
        results = list(self.pool.map(
            lambda i: self.job.work(self.items[int(i)], None), batch['i']))
        return dict(i=list(batch['i']),
                    status=[r.status for r in results],
                    reason=[r.reason for r in results],
                    fit=[r.fit for r in results],
                    areas=[self.job.outputs.shares(r.labels)
                           if self.areas and r.labels is not None else []
                           for r in results])


def _connect(ray, address: Optional[str]) -> None:
    """Join the cluster at ``address`` or start a local one (127.0.0.1)."""
    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False,
                  configure_logging=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(_node_ip_address='127.0.0.1', **kwargs)


def run_on_ray(model: str, sources: List[Source], total: int, out_dir: str,
               checkpoint: Optional[str], config: Optional[str],
               settings: InferSettings, summary: Summary,
               address: Optional[str] = None) -> Iterator[Result]:
    """Segment the images of ``sources`` on Ray into ``out_dir``: one
    :class:`Result` per image as the actors finish them (not in input
    order; ``areas.csv`` and ``failures.txt`` are written in input order
    at the end, as one process writes them); ``settings.threads`` is each
    actor's CPUs (default 2, or the cluster's CPUs if fewer), the actors
    as many as the cluster's CPUs allow."""
    if any(s.kind == 'video' for s in sources):
        raise UsageError(f'{opt("ray")} segments image files; run videos '
                         f'without {opt("ray")} (one process reads a video '
                         'from its start)')
    ray = _ray()
    _connect(ray, address)
    cpus = int(ray.cluster_resources().get('CPU', 1))
    per_actor = max(1, min(settings.threads or 2, cpus))
    actors = max(1, cpus // per_actor)
    s = dataclasses.replace(settings, threads=per_actor, mode='throughput',
                            quiet=True)
    # the driver: the manifest (the model and the options), what is done;
    # it reads the model's record and recipe, the actors compile it
    net = describe_network(model, checkpoint, config)
    job = _Job(net, out_dir, settings, summary)
    items = [Item(src) for src in sources]
    todo = []
    start = time.perf_counter()
    try:
        for i, item in enumerate(items):
            done = job.skip(item)
            if done is not None:
                yield done
            else:
                todo.append(i)
        if todo:
            worker = dict(model=model, checkpoint=checkpoint, config=config,
                          settings=s, items=items, out_dir=out_dir)
            yield from _stream(ray, job, items, todo, worker, actors,
                               per_actor)
    finally:
        summary.seconds = time.perf_counter() - start
        summary.busy_seconds = None
        # a killed worker's temporary file (only a temporary: the output
        # is renamed into place whole) is removed here on this host
        remove_stale_temporaries(out_dir)
    job.outputs.finish_areas(job.order)
    place = {str(item): i for i, item in enumerate(items)}
    summary.failures_file = job.manifest.write_failures(sorted(
        job.failures, key=lambda f: place.get(f[0], len(items))))


def _stream(ray, job, items, todo, worker: dict, actors: int,
            per_actor: int) -> Iterator[Result]:
    """The results of the ``todo`` items as ``actors`` Ray actors of
    ``per_actor`` CPUs each (:class:`_Worker` built with ``worker``) finish
    them, recorded by the driver's ``job``."""
    ds = ray.data.from_items([{'i': i} for i in todo])
    ds = ds.map_batches(
        _Worker, batch_size=BATCH, concurrency=actors, num_cpus=per_actor,
        fn_constructor_kwargs=worker,
        # a lost actor is restarted and its batch runs again
        max_restarts=-1, max_task_retries=-1)
    progress = _Progress(len(todo), job.settings.quiet)
    try:
        for batch in ds.iter_batches(batch_size=None,
                                     batch_format='numpy'):
            for i, status, reason, fit, areas in zip(
                    batch['i'], batch['status'], batch['reason'],
                    batch['fit'], batch['areas']):
                item = items[int(i)]
                res = Result(str(item), item.key, str(status),
                             files=job.outputs.paths(item)
                             if status == 'done' else {},
                             reason=str(reason), fit=str(fit))
                if res.status == 'done':
                    if job.settings.areas:
                        job.outputs.add_areas(item.key, list(areas))
                    job.manifest.finished(item)
                progress.advance()
                yield job.count(res)
    finally:
        progress.close()


__all__ = ['run_on_ray', 'BATCH']
