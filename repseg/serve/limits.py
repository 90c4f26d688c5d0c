# Copyright (c) repseg contributors. All rights reserved.
"""What the service lets in: a bounded admission (requests in flight plus
a bounded queue; past it a refusal at once, never an unbounded queue), a
request body read up to a size limit (no further), and an uploaded image
decoded only after its header's pixel count is checked (Pillow's lazy
header read; OpenCV decodes it exactly as ``tools/infer.py`` reads a
file)."""
import io
from typing import Dict, Optional

import numpy as np

#: the content types ``POST /segment`` takes as a raw body
RAW_TYPES = ('image/', 'application/octet-stream')
FORM_TYPE = 'multipart/form-data'


class ServeError(Exception):
    """A request refused: its HTTP status, one line saying what was wrong
    and what to do, and extra response headers."""

    def __init__(self, status: int, message: str,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = headers or {}


class Admission:
    """At most ``running + queue`` requests admitted at once (used on the
    event loop only: no lock). :meth:`enter` refuses one more with a 503
    (``Retry-After``) at once; :meth:`leave` frees a place."""

    def __init__(self, running: int, queue: int, retry_after: int):
        self.running, self.queue = running, queue
        self.limit = running + queue
        self.retry_after = retry_after
        self.admitted = 0

    def enter(self) -> None:
        if self.admitted >= self.limit:
            raise ServeError(
                503, f'the service is at its limit ({self.running} '
                f'request(s) running, {self.queue} queued): retry after '
                f'{self.retry_after} s', {'Retry-After':
                                          str(self.retry_after)})
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1

    @property
    def waiting(self) -> int:
        """Admitted requests beyond those the runtime runs at once."""
        return max(0, self.admitted - self.running)


def check_length(headers, max_body: int) -> None:
    """413 for a Content-Length over ``max_body`` (before reading)."""
    length = headers.get('content-length')
    if length is not None and length.isdigit() and int(length) > max_body:
        raise too_large(max_body)


def too_large(max_body: int) -> ServeError:
    return ServeError(413, f'the request body is over the limit of '
                      f'{max_body} bytes: send a smaller image (the '
                      'server\'s max_body setting)')


async def read_body(stream, max_body: int) -> bytes:
    """The body of ``stream`` (Starlette's ``request.stream()``), refused
    with 413 as soon as it passes ``max_body`` bytes."""
    parts, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_body:
            raise too_large(max_body)
        parts.append(chunk)
    return b''.join(parts)


async def drain(stream, max_body: int, seconds: float) -> None:
    """Read and drop the body of a request refused before reading it (at
    most ``max_body`` bytes, ``seconds``): a server that closes a socket
    with unread bytes resets it, and the client may lose the answer."""
    import asyncio

    async def read():
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > max_body:
                return

    try:
        await asyncio.wait_for(read(), seconds)
    except (asyncio.TimeoutError, OSError, RuntimeError):
        pass


def check_type(content_type: str) -> str:
    """'raw' or 'form' for a Content-Type ``POST /segment`` takes; 415
    otherwise."""
    kind = content_type.split(';')[0].strip().lower()
    if kind == FORM_TYPE:
        return 'form'
    if kind.startswith(RAW_TYPES[0]) or kind == RAW_TYPES[1]:
        return 'raw'
    if kind.startswith('video/'):
        raise ServeError(415, f'a video ({kind}) is not served: send its '
                         'frames as images, one request each (tools/infer.py '
                         'segments whole videos)')
    raise ServeError(
        415, f'Content-Type {kind or "(none)"!r} is not an image: send the '
        'image as the body with Content-Type image/png, image/jpeg (any '
        'image/*) or application/octet-stream, or as the one file of a '
        'multipart/form-data form')


async def form_image(headers, body: bytes) -> bytes:
    """The one file of a multipart body (400 when there is none)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once():
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=1,
                                     max_fields=8).parse()
    except MultiPartException as e:
        raise ServeError(400, f'the multipart form cannot be read ({e}): '
                         'send one image file in it') from None
    files = [v for _, v in form.multi_items() if hasattr(v, 'read')]
    if not files:
        raise ServeError(400, 'the multipart form holds no file: send the '
                         'image as a file field (curl -F image=@a.png)')
    try:
        return await files[0].read()
    finally:
        await form.close()


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """The BGR uint8 image of ``data``, as ``tools/infer.py`` reads a file
    (``cv2.imdecode(..., IMREAD_COLOR)``: a grey image becomes three equal
    channels, an alpha channel is dropped, 16 bits become 8); its header's
    size checked against ``max_pixels`` first (Pillow reads only the
    header), so a decompression bomb is never decoded."""
    import cv2
    from PIL import Image, UnidentifiedImageError
    if not data:
        raise ServeError(400, 'the request body is empty: send an image '
                         '(PNG, JPEG, ...) as the body or as a form file')
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
    except Image.DecompressionBombError:
        raise ServeError(413, 'the image claims more pixels than the '
                         f'server takes ({max_pixels}): send a smaller '
                         'image') from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ServeError(415, 'the body is not an image (PNG, JPEG, BMP, '
                         'TIFF, WebP, ...): send the encoded image file; a '
                         'video is not served (send its frames)') from None
    if w * h > max_pixels:
        raise ServeError(413, f'the image claims {w}x{h} = {w * h} pixels, '
                         f'over the server\'s limit of {max_pixels}: send '
                         'a smaller image (the server\'s max_pixels '
                         'setting)')
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ServeError(400, f'the {fmt} image cannot be decoded (truncated '
                         'or corrupt): send the whole file')
    return img


__all__ = ['ServeError', 'Admission', 'check_length', 'read_body', 'drain',
           'check_type', 'form_image', 'decode_image']
