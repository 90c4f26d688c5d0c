# Copyright (c) repseg contributors. All rights reserved.
"""How the service runs: one field per option of ``repseg-serve``."""
import dataclasses
import os
from typing import Optional

from ..errors import UsageError, opt
from ..settings import Settings

#: the environment variable an API key may come from (not shown in ``ps``)
API_KEY_ENV = 'REPSEG_API_KEY'


@dataclasses.dataclass
class ServeSettings(Settings):
    """The service's settings.

    Args:
        host (str): the address to bind (127.0.0.1: this machine only;
            0.0.0.0 to take requests from other machines).
        port (int): the TCP port.
        queue (int or None): requests admitted beyond the ones the runtime
            runs at once; past ``requests + queue`` a request gets 503 with
            ``Retry-After`` at once. None: twice the requests in flight.
        timeout (float): seconds a request may take from admission to its
            answer (504 past it).
        max_body (int): bytes a request body may have (413 past it, read
            no further).
        max_pixels (int): pixels an image's header may claim (413 past it,
            refused before decoding).
        api_key (str or None): the key every request but /health and
            /ready must carry (``Authorization: Bearer KEY`` or
            ``X-API-Key: KEY``); None: :data:`API_KEY_ENV`, else no key.
        threads (int or None): the runtime's threads in all (default:
            every CPU this process may use); with ``ray``, each replica's
            CPUs and threads (default 1: a replica is what Ray Serve
            scales, and one that fits on any node).
        mode (str): the runtime's 'throughput' (several requests in
            flight, the default) or 'latency' (one with every thread).
        cache_dir (str or None): OpenVINO's cache of compiled models.
        opacity (float): the overlay colours' opacity.
        workers (int or None): threads that decode, prepare and encode
            (off the event loop); None: requests in flight + 2.
        retry_after (int): seconds the 503's ``Retry-After`` says.
        shutdown_seconds (float): on SIGTERM, how long accepted requests
            may take to finish before the process exits anyway.
        connections (int): open connections at most (past them uvicorn
            answers 503 without reading the request).
        ray (bool): serve on Ray Serve (:mod:`.ray_serve`): the same app
            in ``replicas`` processes, each with its own model.
        ray_address (str or None): the Ray cluster to join (implies
            ``ray``); None: a local cluster on this machine (127.0.0.1).
        replicas (int or None): with ``ray``, the replicas (processes
            holding one model each; default 1); refused without ``ray``.
    """
    host: str = '127.0.0.1'
    port: int = 8000
    queue: Optional[int] = None
    timeout: float = 30.0
    max_body: int = 20 * 2**20
    max_pixels: int = 40_000_000
    api_key: Optional[str] = None
    threads: Optional[int] = None
    mode: str = 'throughput'
    cache_dir: Optional[str] = None
    opacity: float = 0.5
    workers: Optional[int] = None
    retry_after: int = 1
    shutdown_seconds: float = 25.0
    connections: int = 256
    ray: bool = False
    ray_address: Optional[str] = None
    replicas: Optional[int] = None

    def __post_init__(self):
        if self.ray_address:
            self.ray = True

    def check(self) -> None:
        for name in ('max_body', 'max_pixels', 'retry_after',
                     'connections'):
            if getattr(self, name) < 1:
                raise UsageError(f'{opt(name, getattr(self, name))}: give 1 '
                                 'or more')
        for name in ('timeout', 'shutdown_seconds'):
            if not getattr(self, name) > 0:
                raise UsageError(f'{opt(name, getattr(self, name))}: give '
                                 'a number of seconds above 0')
        if self.queue is not None and self.queue < 0:
            raise UsageError(f'{opt("queue", self.queue)}: give 0 (no '
                             'queue) or more')
        for name in ('threads', 'workers'):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f'{opt(name, getattr(self, name))}: give 1 '
                                 'or more')
        if self.mode not in ('latency', 'throughput'):
            raise UsageError(f'{opt("mode", self.mode)} is not a mode: '
                             "choose 'throughput' or 'latency'")
        if not 0 <= self.opacity <= 1:
            raise UsageError(f'{opt("opacity", self.opacity)}: give a value '
                             'from 0 to 1')
        if self.replicas is not None and not self.ray:
            raise UsageError(f'{opt("replicas", self.replicas)} is for '
                             f'serving on Ray Serve: add {opt("ray")} (or '
                             f'{opt("ray_address", None)}), or leave it out')
        if self.replicas is not None and self.replicas < 1:
            raise UsageError(f'{opt("replicas", self.replicas)}: give 1 or '
                             'more')
        if not 0 < self.port < 65536:
            raise UsageError(f'{opt("port", self.port)}: give a TCP port '
                             '(1-65535)')

    def key(self) -> Optional[str]:
        """The API key in force (the setting, else the environment's)."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def replica_threads(self) -> int:
        """With ``ray``: each replica's CPUs and runtime threads."""
        return self.threads or 1

    def queue_for(self, requests: int) -> int:
        """The queue bound of a runtime that runs ``requests`` at once."""
        return 2 * requests if self.queue is None else self.queue


__all__ = ['ServeSettings', 'API_KEY_ENV']
