# Copyright (c) repseg contributors. All rights reserved.
"""Serving a model file over HTTP (``repseg-serve``): one ASGI app
(FastAPI, served by uvicorn) on the numpy pipeline of ``tools/infer.py``,
with a bounded queue, request limits, metrics and a graceful shutdown.
FastAPI and uvicorn are imported when used (``pip install
"repseg[serve]"``)."""
from .settings import API_KEY_ENV, ServeSettings

__all__ = ['ServeSettings', 'API_KEY_ENV']
