#!/usr/bin/env python
"""The former name of tools/export.py (kept working): export the fused
segmentor to ONNX or OpenVINO IR and verify it against PyTorch.
python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape H W]"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from export import build_parser, main  # noqa: E402,F401

if __name__ == '__main__':
    main(prog='export_onnx.py')
