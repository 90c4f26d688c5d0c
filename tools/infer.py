#!/usr/bin/env python
"""Segment your own images, folders and videos with any repseg model file
(the same as the ``repseg-infer`` command): a deployed file alone (.onnx
for ONNX Runtime, .xml for OpenVINO; fp32 or INT8) or a config with a
training or fused checkpoint (PyTorch). Label maps (PNG) keep each input's
name under DIR/labels/, overlays go to DIR/overlays/; a rerun into the same
DIR resumes.

  python tools/infer.py street/ --model deploy/model_int8.xml --out out
  python tools/infer.py a.jpg b.png --model CONFIG --checkpoint CKPT --out out
  python tools/infer.py drive.mp4 --model m.onnx --out out --every 5 --overlay
  python tools/infer.py photos/ --model OLD.onnx --config CONFIG --out out
  python tools/infer.py /shared/archive --recursive --model m.xml \\
      --out /shared/out --ray --ray-address HEAD:6379 --threads 4
"""
from _cli import run


def build_parser():
    from repseg.apis import infer_parser
    return infer_parser(__doc__)


def main(argv=None):
    from repseg.apis import infer_args
    run(build_parser(), infer_args, argv)


if __name__ == '__main__':
    main()
