# Copyright (c) repseg contributors. All rights reserved.
"""The ASGI app (FastAPI): ``POST /segment``, ``GET /health``, ``/ready``,
``/metrics``, ``/model`` and FastAPI's OpenAPI pages (``/docs``). Every
answer carries ``X-Request-ID``; every refusal is one JSON line
``{"error": ..., "status": ..., "request_id": ...}``; a 5xx is logged with
its request id and never shows a traceback."""
import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from typing import Literal

from .limits import ServeError, check_length, check_type, drain, \
    form_image, read_body
from .metrics import CONTENT_TYPE
from .service import Service

log = logging.getLogger('repseg.serve')
#: paths answered without the API key (probes)
OPEN_PATHS = ('/health', '/ready')
_PATHS = ('/segment', '/health', '/ready', '/metrics', '/model', '/docs',
          '/openapi.json')
_REQUEST_ID = re.compile(r'^[A-Za-z0-9._-]{1,64}$')
_BODY = {'requestBody': {'required': True, 'content': {
    'image/*': {'schema': {'type': 'string', 'format': 'binary'}},
    'application/octet-stream': {'schema': {'type': 'string',
                                            'format': 'binary'}},
    'multipart/form-data': {'schema': {'type': 'object', 'properties': {
        'image': {'type': 'string', 'format': 'binary'}}}}}}}


def error_response(status: int, message: str, request_id: str,
                   headers=None):
    from starlette.responses import Response
    body = json.dumps(dict(error=message, status=status,
                           request_id=request_id))
    return Response(body + '\n', status, headers=headers,
                    media_type='application/json')


def _request_id(request) -> str:
    given = request.headers.get('x-request-id', '')
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def _authorized(request, key: bytes) -> bool:
    auth = request.headers.get('authorization', '')
    given = auth[7:] if auth.lower().startswith('bearer ') else \
        request.headers.get('x-api-key', '')
    return hmac.compare_digest(given.encode('utf-8', 'replace'), key)


def _handlers(app, service: Service) -> None:
    """JSON error lines for every refusal, and the frame of every request
    (its id, the key, the request counts; a 5xx logged)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    key = service.settings.key()
    key = key.encode() if key else None

    @app.exception_handler(ServeError)
    async def refused(request, e: ServeError):
        if e.status >= 500:   # every 5xx in the log, with its request id
            log.log(logging.INFO if e.status == 503 else logging.WARNING,
                    'request %s (%s %s): %d %s', request.state.request_id,
                    request.method, request.url.path, e.status, e.message)
        return error_response(e.status, e.message,
                              request.state.request_id, e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        return error_response(e.status_code, str(e.detail),
                              request.state.request_id, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        where = '; '.join(f'{".".join(map(str, d.get("loc", ())))}: '
                          f'{d.get("msg", "")}' for d in e.errors())
        return error_response(422, f'invalid request ({where}): see '
                              '/docs', request.state.request_id)

    @app.middleware('http')
    async def frame(request, call_next):
        rid = request.state.request_id = _request_id(request)
        path = request.url.path
        if key is not None and path not in OPEN_PATHS \
                and not _authorized(request, key):
            response = error_response(
                401, 'missing or wrong API key: send it as Authorization: '
                'Bearer KEY (or X-API-Key: KEY)', rid,
                {'WWW-Authenticate': 'Bearer'})
        else:
            try:
                response = await call_next(request)
            except Exception:  # noqa: B902  (never a traceback to a client)
                log.exception('request %s (%s %s) failed', rid,
                              request.method, path)
                response = error_response(
                    500, f'internal error (request id {rid}, in the '
                    "server's log)", rid)
        response.headers['X-Request-ID'] = rid
        service.metrics.request(path if path in _PATHS else 'other',
                                response.status_code)
        return response


async def _segment(service: Service, request, output: str):
    """``POST /segment``'s work: admitted, read, segmented in time."""
    from starlette.responses import JSONResponse, Response
    limit = service.settings.max_body
    try:
        if not service.ready.is_set():
            raise ServeError(503, 'the model is not ready yet (loading or '
                             'failed: see /ready): retry shortly', {
                                 'Retry-After':
                                 str(service.settings.retry_after)})
        kind = check_type(request.headers.get('content-type', ''))
        check_length(request.headers, limit)   # 413: read no further
        start = time.monotonic()
        service.admission.enter()
    except ServeError as e:
        if e.status != 413:
            await drain(request.stream(), limit, 5.0)
        raise
    submitted = False
    try:
        try:
            data = await asyncio_wait(read_body(request.stream(), limit),
                                      service.settings.timeout)
        except TimeoutError:
            raise service.too_late() from None
        if kind == 'form':
            data = await form_image(request.headers, data)
        submitted = True
        answer = await service.run(data, output, start)
    finally:
        if not submitted:   # else freed when its work ends
            service.admission.leave()
    if answer.data is not None:
        return JSONResponse(answer.data)
    return Response(answer.body, media_type=answer.media_type)


async def asyncio_wait(awaitable, seconds: float):
    import asyncio
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise TimeoutError from None


def create_app(service: Service):
    """The FastAPI app of ``service`` (loaded and warmed on a thread when
    the app starts: ``/ready`` says when)."""
    from fastapi import FastAPI, Request
    from starlette.responses import JSONResponse, Response

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if not service.ready.is_set() and service.net is None:
            service.start()
        yield
        service.close()

    app = FastAPI(title='repseg-serve', lifespan=lifespan,
                  description='Semantic segmentation of one image per '
                  'request with a repseg model file.')
    _handlers(app, service)

    @app.post('/segment', openapi_extra=_BODY, responses={200: {
        'content': {'image/png': {}, 'application/json': {}}}})
    async def segment(request: Request,
                      output: Literal['labels', 'overlay', 'json'] = 'labels'):
        """An encoded image (the body, or the one file of a form) -> its
        label map PNG (train ids), its overlay PNG or JSON."""
        t0, status = time.perf_counter(), 500
        try:
            response = await _segment(service, request, output)
            status = 200
            return response
        except ServeError as e:
            status = e.status
            raise
        finally:
            service.metrics.segment(time.perf_counter() - t0, status)

    @app.get('/health')
    async def health():
        """The process answers."""
        return {'status': 'ok'}

    @app.get('/ready')
    async def ready():
        """The model is compiled and warm (503 until then)."""
        if service.ready.is_set():
            return {'status': 'ready'}
        return JSONResponse({'status': 'failed' if service.error else
                             'loading', 'error': service.error}, 503,
                            headers={'Retry-After': '1'})

    @app.get('/metrics')
    async def metrics():
        """Prometheus text format."""
        return Response(service.metrics.text(), media_type=CONTENT_TYPE)

    @app.get('/model')
    async def model():
        """The model file's record and what runs."""
        if not service.ready.is_set():
            raise ServeError(503, 'the model is not ready yet: retry '
                             'shortly', {'Retry-After': '1'})
        return service.model()

    return app


__all__ = ['create_app', 'error_response', 'OPEN_PATHS']
