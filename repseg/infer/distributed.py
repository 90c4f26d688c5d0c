# Copyright (c) repseg contributors. All rights reserved.
"""The Ray executor of the run driver (:mod:`.driver`): the job's units
(image paths, or a video's frame ranges: never images) go to Ray Data
actors that each hold one compiled model (its threads and streams set from
the CPUs Ray gives the actor) and segment them with a
:class:`~.engine.ThreadExecutor` of their own, writing the outputs where
one process would (a filesystem every worker shares); the driver keeps the
books (the manifest, counts, areas, failures, overlay videos). A worker
lost in the middle (a machine gone, a killed process) is restarted by Ray
Data's actor pool and its unfinished unit runs again; outputs are written
atomically, so an image is never half-written, and the driver counts each
image once.

Ray is imported only here, and only when a run asks for it."""
import dataclasses
import logging
import os
import pickle
import threading
import time
from typing import Callable, Iterable, Iterator, List, Optional

import numpy as np

from ..errors import UsageError, opt
from .driver import Stalled, Unit
from .engine import ThreadExecutor
from .job import InferSettings, Network, Result
from .outputs import remove_stale_temporaries

#: units queued at an actor while it segments one (the next starts at
#: once; the last units still go to whichever actor is free first)
IN_FLIGHT_PER_ACTOR = 2


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


@dataclasses.dataclass
class _Shipment:
    """What an actor sends back of one unit: its results, the stall that
    ended it (or None), and the times (``time.time()``) of the actor:
    ``times`` = (its process id, created, network loaded, unit began, unit
    ended) (:attr:`RayExecutor.timeline`)."""
    results: List[Result]
    stalled: Optional[Stalled]
    times: tuple


#: seconds an actor whose image stalled lives on (its results reach the
#: driver meanwhile; later units are refused with the stall)
LEAVE_AFTER_STALL = 10.0


def _leave_soon() -> None:
    """End this process in :data:`LEAVE_AFTER_STALL` s, whatever it does:
    a thread stuck in the network never returns, and Python's exit (Ray
    Data releases an actor, or the cluster stops) would wait for it
    forever."""
    timer = threading.Timer(LEAVE_AFTER_STALL, os._exit, args=(1, ))
    timer.daemon = True
    timer.start()


class _Actor:
    """One Ray actor: the network loaded once (``load(settings)``) for the
    CPUs the actor has, each unit segmented as one process segments it."""

    def __init__(self, load: Callable[[InferSettings], Network],
                 settings: InferSettings, out_dir: str, created: float):
        self.executor = ThreadExecutor(load(settings=settings), settings,
                                       out_dir)
        self.times = (os.getpid(), created, time.time())
        #: the stall that ended a unit: the actor takes no more (a thread
        #: of it is stuck in the network)
        self.stalled: Optional[Stalled] = None

    def __call__(self, batch: dict) -> dict:
        return dict(out=np.array([self._unit(pickle.loads(blob))
                                  for blob in batch['unit']], dtype=object))

    def _unit(self, unit: Unit) -> bytes:
        began, results = time.time(), []
        try:
            if self.stalled is None:
                for res in self.executor.results([unit]):
                    results.append(res)
        except Stalled as e:   # the finished ones count; the driver stops
            self.stalled = e
            _leave_soon()
        return pickle.dumps(_Shipment(results, self.stalled, self.times + (
            began, time.time())))


def _actor_class():
    """The class Ray Data instantiates in each actor, defined in a function
    so that it travels by value: an actor unpickles it without importing
    repseg. With ``deployed`` (a deployed file needs neither torch nor an
    OpenMMLab package) the actor then imports repseg as the deployment
    install does, without the training stack (seconds of imports per actor
    saved); the run's arguments are unpickled after that."""

    class RepsegActor:

        def __init__(self, payload: bytes, deployed: bool):
            import importlib.abc
            import pickle
            import sys
            import time
            created = time.time()

            class NoTrainingStack(importlib.abc.MetaPathFinder):

                def find_spec(self, name, path=None, target=None):
                    if name.split('.')[0] in ('torch', 'torchvision',
                                              'mmcv', 'mmengine', 'mmseg',
                                              'mmpretrain'):
                        raise ModuleNotFoundError(
                            f'No module named {name!r}', name=name)
                    return None

            if deployed and 'repseg' not in sys.modules:
                sys.meta_path.insert(0, NoTrainingStack())
            from repseg.infer.distributed import _Actor
            self.actor = _Actor(*pickle.loads(payload), created)

        def __call__(self, batch: dict) -> dict:
            return self.actor(batch)

    return RepsegActor


class _RayData:
    """While a run executes, Ray Data draws no progress bar and logs no
    progress (the driver draws the run's bar): its bars off, its log lines
    from warnings up only, none of its progress module's (which would say
    the bars are off); all as they were afterwards."""

    #: logger -> the level during a run
    LEVELS = {'ray.data': logging.WARNING,
              'ray.data._internal.progress': logging.ERROR}

    def __init__(self, ray):
        self.context = ray.data.DataContext.get_current()

    def __enter__(self):
        c = self.context
        self.saved = (c.enable_progress_bars, c.print_on_execution_start,
                      {n: logging.getLogger(n).level for n in self.LEVELS})
        c.enable_progress_bars = c.print_on_execution_start = False
        for name, level in self.LEVELS.items():
            logging.getLogger(name).setLevel(level)

    def __exit__(self, *exc):
        c = self.context
        c.enable_progress_bars, c.print_on_execution_start, levels = \
            self.saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class RayExecutor:
    """Segments a job's units on Ray Data actors (an executor of
    :func:`~.driver.drive`).

    Args:
        load: ``load(settings=...)`` -> the :class:`~.job.Network` each actor
            segments with (picklable: it runs in the actors), e.g.
            ``functools.partial(load_network, model, checkpoint, config)``.
        settings (InferSettings): the run's; ``threads`` is each actor's
            CPUs (default 2, or the cluster's CPUs if fewer), the actors as
            many as the cluster's CPUs allow.
        out_dir (str): the output folder, on a filesystem every worker
            shares.
        address (str, optional): the cluster to join; None: a local one.
        deployed (bool): ``load`` runs a deployed file: the actors import
            neither torch nor an OpenMMLab package (as the deployment
            install; they start seconds sooner).
    """

    #: units go to other processes; the busy time is not measured
    remote, busy_seconds = True, None

    def __init__(self, load: Callable[[InferSettings], Network],
                 settings: InferSettings, out_dir: str,
                 address: Optional[str] = None, deployed: bool = False):
        self.ray = _ray()
        _connect(self.ray, address)
        cpus = int(self.ray.cluster_resources().get('CPU', 1))
        self.per_actor = max(1, min(settings.threads or 2, cpus))
        #: the actors (at most: no more than the units)
        self.workers = max(1, cpus // self.per_actor)
        self.out_dir, self.deployed = out_dir, deployed
        mine = dataclasses.replace(
            settings, threads=self.per_actor, mode='throughput', quiet=True,
            keep_labels=False)
        self.payload = pickle.dumps((load, mine, out_dir))
        self.startup_seconds: Optional[float] = None
        #: when the units went to Ray, and per unit (the actor's process
        #: id, created, loaded, unit began, unit ended, images, received by
        #: the driver), all ``time.time()`` (a profile of the run:
        #: tools/dev/infer_ray.py)
        self.started = 0.0
        self.timeline: List[tuple] = []

    def _dataset(self, units: List[Unit]):
        ray = self.ray
        ds = ray.data.from_items([{'unit': pickle.dumps(u)} for u in units],
                                 override_num_blocks=len(units))
        return ds.map_batches(
            _actor_class(), batch_size=1, num_cpus=self.per_actor,
            compute=ray.data.ActorPoolStrategy(
                size=min(self.workers, len(units)),
                max_tasks_in_flight_per_actor=IN_FLIGHT_PER_ACTOR),
            fn_constructor_kwargs=dict(payload=self.payload,
                                       deployed=self.deployed))

    def results(self, units: Iterable[Unit]) -> Iterator[Result]:
        """One result per image of ``units`` as the actors finish each
        unit (a unit's in its order); :class:`~.driver.Stalled` when an
        actor's image made no progress."""
        units = list(units)
        if not units:
            return
        self.started, self.timeline = time.time(), []
        ds = self._dataset(units)   # what Ray says of it is shown
        try:
            with _RayData(self.ray):
                for batch in ds.iter_batches(batch_size=None,
                                             batch_format='numpy'):
                    for blob in batch['out']:
                        got: _Shipment = pickle.loads(blob)
                        self._record(got)
                        yield from got.results
                        if got.stalled is not None:
                            raise got.stalled
        finally:
            # a killed worker's temporary file (only a temporary: the
            # output is renamed into place whole) is removed here
            remove_stale_temporaries(self.out_dir)

    def _record(self, got: _Shipment) -> None:
        """The shipment's times on :attr:`timeline`; the start-up: until
        the first unit began."""
        self.timeline.append(got.times + (len(got.results), time.time()))
        first = min(t[3] for t in self.timeline)
        self.startup_seconds = max(0.0, first - self.started)


__all__ = ['RayExecutor']
