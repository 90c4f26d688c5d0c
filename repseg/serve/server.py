# Copyright (c) repseg contributors. All rights reserved.
"""Serve a model file: the checks before anything starts (one error line
for a wrong model or setting), the network loaded as ``tools/infer.py``
loads it, and uvicorn (its graceful shutdown: on SIGTERM it stops
accepting, finishes every accepted request, then the process exits)."""
import logging
from typing import Optional

from ..errors import UsageError
from .service import Service
from .settings import ServeSettings


def model_service(model: str, checkpoint: Optional[str] = None,
                  config: Optional[str] = None,
                  settings: Optional[ServeSettings] = None) -> Service:
    """The :class:`Service` of a model as ``tools/infer.py`` names one (a
    deployed file, or a config with ``checkpoint``); what is named is
    checked now (the network loads when the app starts)."""
    from ..infer import InferSettings
    from ..infer.cli import config_named, require_training_stack
    from ..infer.network import describe_network, load_network
    s = settings or ServeSettings()
    s.check()
    needs = config_named(model, config)
    if needs:   # one line where the training stack is missing
        require_training_stack(*needs)
    describe_network(model, checkpoint, config)   # a wrong name: one line
    infer = InferSettings(threads=s.threads, mode=s.mode,
                          cache_dir=s.cache_dir)
    return Service(s, lambda: load_network(model, checkpoint, config, infer,
                                           images=2))


def uvicorn_config(app, settings: ServeSettings):
    """uvicorn's settings for ``app``: the address, the graceful shutdown's
    time, the open connections (past them uvicorn answers 503 itself)."""
    import uvicorn
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level='info',
        access_log=False, timeout_graceful_shutdown=int(
            settings.shutdown_seconds),
        limit_concurrency=settings.connections, lifespan='on')


def run_service(service: Service) -> None:
    """Serve ``service`` until SIGTERM / SIGINT (blocking)."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        raise UsageError(f'serving needs {e.name!r}: pip install '
                         '"repseg[serve]" (fastapi, uvicorn, '
                         'python-multipart)') from None
    s = service.settings
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format='%(asctime)s %(levelname)s %(name)s: '
                            '%(message)s')
    _exit_quietly_after_a_signal()
    uvicorn.Server(uvicorn_config(create_app(service), s)).run()


def _exit_quietly_after_a_signal() -> None:
    """uvicorn shuts down gracefully on SIGTERM / SIGINT, then raises the
    signal again under the handlers it found: these make that exit 0 (a
    finished graceful shutdown) for SIGTERM and 130 for Ctrl-C, without a
    traceback."""
    import signal
    import sys
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.signal(signal.SIGINT, lambda *_: sys.exit(130))


def serve(model: str, checkpoint: Optional[str] = None,
          config: Optional[str] = None,
          settings: Optional[ServeSettings] = None) -> None:
    """Serve ``model`` over HTTP (``repseg-serve``) until SIGTERM."""
    run_service(model_service(model, checkpoint, config, settings))


__all__ = ['serve', 'model_service', 'run_service', 'uvicorn_config']
