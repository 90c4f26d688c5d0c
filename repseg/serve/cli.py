# Copyright (c) repseg contributors. All rights reserved.
"""``repseg-serve``'s command line (``tools/serve.py`` is the same): the
parser and ``main``; any :class:`~repseg.errors.RepsegError` is one
``error:`` line (exit status 1)."""
import argparse
import os
import sys

from ..deploy.runtimes import MODES
from .settings import ServeSettings

DOC = """Serve a repseg model over HTTP: POST an image to /segment, get its
label map PNG (the bytes tools/infer.py writes), its overlay or JSON.

  repseg-serve deploy/model_int8.xml --port 8000
  curl -s --data-binary @a.png -H 'Content-Type: image/png' \\
      http://127.0.0.1:8000/segment -o a_labels.png
  REPSEG_API_KEY=secret repseg-serve m.onnx --host 0.0.0.0 --queue 8
  repseg-serve m.onnx --ray --replicas 2 --threads 1   # on Ray Serve
"""


def serve_parser(doc: str = DOC, prog=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('model', metavar='MODEL',
                   help='A deployed file (.onnx, .xml) or a config (.py) '
                   'with --checkpoint.')
    p.add_argument('--checkpoint', help="The config's checkpoint.")
    p.add_argument('--config', help='The config a deployed file was '
                   'exported from, for files that do not record their '
                   'inference recipe.')
    p.add_argument('--host',
                   help='The address to bind (default %(default)s: this '
                   'machine only; 0.0.0.0 for every interface).')
    p.add_argument('--port', type=int,
                   help='The TCP port (default %(default)s).')
    p.add_argument('--queue', type=int, metavar='N',
                   help='Requests admitted beyond those the runtime runs at '
                   'once (default: twice those); past them 503 with '
                   'Retry-After at once.')
    p.add_argument('--timeout', type=float, metavar='SECONDS',
                   help='Time limit of a request (default %(default)g; 504 '
                   'past it).')
    p.add_argument('--max-body', type=int, metavar='BYTES',
                   help='Largest request body (default %(default)s; 413 '
                   'past it).')
    p.add_argument('--max-pixels', type=int, metavar='N',
                   help="Most pixels an image's header may claim (default "
                   '%(default)s; 413 past it, not decoded).')
    p.add_argument('--api-key', help='A key every request but /health and '
                   '/ready must carry (Authorization: Bearer KEY); default: '
                   'the REPSEG_API_KEY environment variable (not shown in '
                   'ps), else none.')
    p.add_argument('--threads', type=int,
                   help="The runtime's threads in all (default: every CPU "
                   'this process may use); with --ray, the CPUs and threads '
                   'of each replica (default 1).')
    p.add_argument('--mode', choices=list(MODES),
                   help='Several requests in the runtime at once '
                   '(throughput) or one with every thread (latency; '
                   'default %(default)s).')
    p.add_argument('--cache-dir', help='OpenVINO: a folder for compiled '
                   'models (the next start is faster).')
    p.add_argument('--opacity', type=float,
                   help='The overlay colours\' opacity (default '
                   '%(default)s).')
    p.add_argument('--connections', type=int,
                   help='Open connections at most (default %(default)s; not '
                   'with --ray: Serve\'s proxy takes the connections).')
    ray = p.add_argument_group(
        'Ray Serve', 'The same app on Ray Serve: --replicas processes, each '
        'with its own model\nand --threads CPUs, behind Serve\'s HTTP proxy '
        '(--host, --port); a replica\nthat dies is replaced.')
    ray.add_argument('--ray', action='store_true',
                     help='Serve on Ray Serve (pip install '
                     '"repseg[ray,serve]"); a local cluster on this machine '
                     'unless --ray-address.')
    ray.add_argument('--ray-address', metavar='ADDR',
                     help='The Ray cluster to join, e.g. 10.0.0.5:6379 or '
                     'auto (implies --ray).')
    ray.add_argument('--replicas', type=int, metavar='N',
                     help='Replicas of the model (default 1; only with '
                     '--ray).')
    ServeSettings.defaults_into(p)
    return p


def serve_args(args) -> None:
    """Serve what ``args`` (the parsed command line) names."""
    # OpenCV's own pixel limit too, where cv2 is not imported yet (the
    # service refuses larger headers itself before decoding)
    os.environ.setdefault('OPENCV_IO_MAX_IMAGE_PIXELS', str(args.max_pixels))
    settings = ServeSettings.of(vars(args))
    if settings.ray:
        from .ray_serve import serve_on_ray as serve
    else:
        from .server import serve
    serve(args.model, args.checkpoint, args.config, settings)


def main(argv=None) -> None:
    """``repseg-serve``."""
    parser = serve_parser(prog='repseg-serve')
    args = parser.parse_args(argv)
    from ..errors import RepsegError
    try:
        serve_args(args)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')


__all__ = ['serve_parser', 'serve_args', 'main']
