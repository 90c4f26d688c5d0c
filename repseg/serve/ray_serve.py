# Copyright (c) repseg contributors. All rights reserved.
"""Serving on Ray Serve (``repseg-serve MODEL --ray --replicas N``): the
same FastAPI app (:func:`.app.create_app`) as one process serves, mounted
with ``serve.ingress`` in N replicas. Each replica is a Ray actor with
``threads`` CPUs that loads the model once through the same
:class:`~.service.Service` (the numpy pipeline of ``tools/infer.py``, so
its label maps are the same bytes) before Serve sends it a request; its
health check is the service's readiness. Serve's HTTP proxy listens on
the address given (127.0.0.1:8000 by default), spreads requests over the
replicas and replaces a replica whose process dies.

Ray is imported only here, and only when ``ray`` is asked for."""
import dataclasses
import logging
import os
import signal
import socket
import threading
from typing import Optional

from ..errors import BackendError, UsageError, opt
from .settings import ServeSettings

log = logging.getLogger('repseg.serve')
#: the Serve application's name (``serve status`` shows it)
APP_NAME = 'repseg'
#: seconds between two health checks of a replica (a dead one is noticed
#: within about this time, and replaced)
HEALTH_CHECK_SECONDS = 2.0
#: requests a replica takes beyond its admission bound: the probes
#: (/health, /ready, /metrics) of a busy replica
PROBES = 2


def _ray_serve():
    """``(ray, ray.serve)``, or one line naming the extra to install."""
    try:
        import fastapi  # noqa: F401
        import ray
        from ray import serve
    except ImportError as e:
        raise UsageError(
            f'{opt("ray")} needs Ray Serve and FastAPI, which cannot be '
            f'imported here ({e}): pip install "repseg[ray,serve]"'
        ) from None
    return ray, serve


def _replica_class(serve):
    """The deployment's class, defined in a function so that it travels by
    value: a replica unpickles it without importing repseg. For a deployed
    file (which needs neither torch nor an OpenMMLab package) the replica
    then imports repseg as the deployment install does, without the
    training stack (as ``tools/infer.py --ray``'s actors: seconds sooner
    to start, and no torch in its memory)."""

    @serve.ingress()   # the app is built per replica, on its own service
    class RepsegReplica:
        """One replica: the model loaded and warmed once (the replica
        takes requests after that), the app of its service."""

        async def __init__(self, model: str, checkpoint, config,
                           fields: dict, deployed: bool):
            import asyncio
            import importlib.abc
            import sys

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
            from repseg.serve.server import model_service
            from repseg.serve.settings import ServeSettings
            self.service = model_service(model, checkpoint, config,
                                         ServeSettings(**fields))
            await asyncio.to_thread(self.service.start().join)
            if not self.service.ready.is_set():
                raise RuntimeError('the model could not be loaded: '
                                   f'{self.service.error}')

        def __serve_build_asgi_app__(self):
            from repseg.serve.app import create_app
            from repseg.serve.ray_serve import OneRequestId
            app = create_app(self.service)
            app.add_middleware(OneRequestId)
            return app

        def check_health(self) -> None:
            """Serve's health check: the service's readiness (/ready)."""
            service = self.service
            if not service.ready.is_set() or service.error:
                raise RuntimeError('the replica\'s model is not ready: '
                                   f'{service.error or "loading"}')

    return RepsegReplica


class OneRequestId:
    """Serve's proxy names each request (the ``X-Request-ID`` its client
    sent, else a new id) in the request's headers, where the app takes its
    id from, and adds that header to every answer: the app's own copy is
    dropped, so that an answer carries one ``X-Request-ID``, not two.

    Args:
        app: the ASGI app (the service's FastAPI app) it wraps.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)

        async def send_one(message):
            if message['type'] == 'http.response.start':
                message['headers'] = [
                    (k, v) for k, v in message.get('headers', ())
                    if k.lower() != b'x-request-id']
            await send(message)

        await self.app(scope, receive, send_one)


def _check_port(settings: ServeSettings) -> None:
    """On a local cluster: the address is free to listen on (else
    Serve's proxy would fail to start, with a traceback)."""
    with socket.socket() as s:
        try:
            s.bind((settings.host, settings.port))
        except OSError as e:
            raise UsageError(
                f'{opt("port", settings.port)}: cannot listen on '
                f'{settings.host}:{settings.port} ({e.strerror}): choose '
                f'another port (or {opt("host", None)}), or end what '
                'listens there') from None


def _check_cpus(ray, settings: ServeSettings) -> None:
    n, t = settings.replicas or 1, settings.replica_threads()
    cpus = ray.cluster_resources().get('CPU', 0)
    if n * t > cpus:
        raise UsageError(
            f'{opt("replicas", n)} with {opt("threads", t)} each needs '
            f'{n * t} CPUs, but the Ray cluster has {cpus:g}: give fewer '
            'replicas or threads, or join a larger cluster '
            f'({opt("ray_address", None)})')


def _prepare(model: str, checkpoint: Optional[str], config: Optional[str],
             settings: Optional[ServeSettings]):
    """The checks before anything starts (one line each), then the cluster
    joined or started; returns ``(settings, ray, serve)``."""
    from ..infer.distributed import _connect
    from ..infer.network import describe_network
    s = dataclasses.replace(settings or ServeSettings(), ray=True)
    s.check()
    ray, serve = _ray_serve()
    describe_network(model, checkpoint, config)   # a wrong name: one line
    if not ray.is_initialized() and not s.ray_address:
        _check_port(s)
    _connect(ray, s.ray_address)
    _check_cpus(ray, s)
    return s, ray, serve


def _deploy(serve, model: str, checkpoint: Optional[str],
            config: Optional[str], s: ServeSettings) -> str:
    """Serve started (its HTTP address, unless it runs already) and the
    app run in ``s.replicas`` replicas; returns the URL once they are
    ready."""
    from ..deploy.runtimes import runtime_of_file
    n, t = s.replicas or 1, s.replica_threads()
    # what a replica needs of the driver's environment, resolved here
    mine = dataclasses.asdict(dataclasses.replace(
        s, threads=t, api_key=s.key(), ray=False, ray_address=None,
        replicas=None))
    deployed = runtime_of_file(model) is not None and not config
    pixels = os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS', str(s.max_pixels))
    bound = t + s.queue_for(t)   # a replica's admission (if t requests)
    serve.start(http_options=dict(
        host=s.host, port=s.port, request_timeout_s=s.timeout + 10))
    deployment = serve.deployment(
        _replica_class(serve), name='RepsegReplica', num_replicas=n,
        ray_actor_options=dict(num_cpus=t, runtime_env=dict(env_vars=dict(
            OPENCV_IO_MAX_IMAGE_PIXELS=pixels))),
        max_ongoing_requests=bound + PROBES, max_queued_requests=n * bound,
        health_check_period_s=HEALTH_CHECK_SECONDS,
        graceful_shutdown_timeout_s=s.shutdown_seconds)
    try:
        serve.run(deployment.bind(model, checkpoint, config, mine, deployed),
                  name=APP_NAME, route_prefix='/')
    except RuntimeError as e:   # the replicas failed to start
        why = _replicas_failed(serve) or _first_line(e)
        serve.delete(APP_NAME)
        raise BackendError(f'Ray Serve could not start the replicas: {why} '
                           '(their logs: /tmp/ray/session_latest/logs/'
                           'serve/)') from None
    url = f'http://{s.host}:{s.port}'
    log.info('serving %s on Ray Serve at %s: %d replica(s) of %d CPU(s)',
             os.path.basename(model), url, n, t)
    return url


def deploy_on_ray(model: str, checkpoint: Optional[str] = None,
                  config: Optional[str] = None,
                  settings: Optional[ServeSettings] = None) -> str:
    """Deploy ``model`` on Ray Serve in the Ray cluster this process is
    connected to (else the one at ``settings.ray_address``, else a local
    one on 127.0.0.1); returns the URL once every replica is loaded and
    ready. :func:`shutdown_ray` ends it.

    Args:
        model (str): a deployed file, or a config (.py) with
            ``checkpoint``, as ``repseg-serve`` names one.
        checkpoint (str, optional): the config's checkpoint.
        config (str, optional): the config a deployed file was exported
            from (files without a recipe in their record).
        settings (ServeSettings, optional): the service's; ``replicas``
            and ``threads`` (each replica's CPUs, default 1) say what is
            deployed, ``host`` and ``port`` where Serve listens (if it is
            not running on the cluster already).

    Returns:
        str: the base URL, e.g. ``http://127.0.0.1:8000``.
    """
    s, _, serve = _prepare(model, checkpoint, config, settings)
    return _deploy(serve, model, checkpoint, config, s)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _replicas_failed(serve) -> Optional[str]:
    """The last line of the error that stopped the replicas (Serve's
    status carries the constructor's traceback), or None."""
    try:
        app = serve.status().applications[APP_NAME]
        message = app.deployments['RepsegReplica'].message
    except Exception:  # noqa: B902  (the status is only the reason's)
        return None
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None


def shutdown_ray(joined: bool) -> None:
    """End what :func:`deploy_on_ray` started (the replicas finish the
    requests they took): on a cluster this process started, Serve itself;
    on one it joined, only this app (Serve keeps serving others' apps).

    Args:
        joined (bool): the cluster was there before (``ray_address``, or
            this process was connected to one already).
    """
    _, serve = _ray_serve()
    if joined:
        serve.delete(APP_NAME)
    else:
        serve.shutdown()


class _Stopped(BaseException):
    """SIGTERM / SIGINT while the replicas start (raised out of Serve's
    wait for them)."""


class _Signals:
    """SIGTERM and SIGINT, caught (Ray's own handler of SIGTERM would
    abort the process): the exit code to end with (0 after SIGTERM, 130
    after Ctrl-C, as the one-process server); while ``starting``, a signal
    interrupts the start."""

    def __init__(self):
        self.code: Optional[int] = None
        self.event = threading.Event()
        self.starting = True
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, self)

    def __call__(self, signum, _frame):
        self.code = 0 if signum == signal.SIGTERM else 130
        self.event.set()
        if self.starting:
            raise _Stopped

    def wait(self) -> int:
        self.starting = False
        while not self.event.wait(1.0):
            pass
        return self.code


def serve_on_ray(model: str, checkpoint: Optional[str] = None,
                 config: Optional[str] = None,
                 settings: Optional[ServeSettings] = None) -> None:
    """Serve ``model`` on Ray Serve (``repseg-serve --ray``) until SIGTERM
    or SIGINT, then shut it down (:func:`shutdown_ray`: the replicas finish
    the requests they took) and return (exit status 0) after SIGTERM, or
    exit with 130 after Ctrl-C (as the one-process server).

    Args:
        model (str): a deployed file, or a config (.py) with
            ``checkpoint``.
        checkpoint (str, optional): the config's checkpoint.
        config (str, optional): the config a deployed file was exported
            from.
        settings (ServeSettings, optional): the service's, ``replicas``
            and ``ray_address`` among them.
    """
    import sys
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format='%(asctime)s %(levelname)s %(name)s: '
                            '%(message)s')
    s = dataclasses.replace(settings or ServeSettings(), ray=True)
    s.check()
    ray, _ = _ray_serve()
    connected = ray.is_initialized()
    joined = bool(s.ray_address) or connected
    deploying = False
    try:
        s, ray, serve = _prepare(model, checkpoint, config, s)
        signals = _Signals()   # after Ray's (ray.init sets its own)
        try:
            deploying = True
            _deploy(serve, model, checkpoint, config, s)
            code = signals.wait()
        except _Stopped:
            code = signals.code
        log.info('stopping: the replicas finish the requests they took')
    finally:
        try:
            if deploying:
                shutdown_ray(joined)
        finally:
            if not connected and ray.is_initialized():
                ray.shutdown()   # the cluster it started, or its link
    if code:
        sys.exit(code)


__all__ = ['deploy_on_ray', 'serve_on_ray', 'shutdown_ray', 'APP_NAME']
