#!/usr/bin/env python
"""Serve a repseg model over HTTP (the same as the ``repseg-serve``
command): POST an image to /segment, get its label map PNG (the bytes
tools/infer.py writes), its overlay (?output=overlay) or JSON
(?output=json); /health, /ready, /metrics, /model and /docs.

  python tools/serve.py deploy/model_int8.xml --port 8000
  curl -s --data-binary @a.png -H 'Content-Type: image/png' \\
      http://127.0.0.1:8000/segment -o a_labels.png
  REPSEG_API_KEY=secret python tools/serve.py m.onnx --host 0.0.0.0
"""
from _cli import run


def build_parser():
    from repseg.apis import serve_parser
    return serve_parser(__doc__)


def main(argv=None):
    from repseg.apis import serve_args
    run(build_parser(), serve_args, argv)


if __name__ == '__main__':
    main()
