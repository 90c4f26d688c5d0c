#!/usr/bin/env bash
# Install everything repseg needs into the current Python, from PyPI alone.
# Idempotent: every step first checks whether its result is already there,
# so a second run installs and rebuilds nothing. Fails loudly (set -e) on
# the first step that goes wrong.
#
#   PYTHON=python3.11 bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip"
step() { printf '\n[repseg install] %s\n' "$*"; }

TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMSEG_VERSION=1.2.2

# 1. torch (the CPU wheel on this kind of machine; pip picks what fits).
if $PY -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  step "torch $TORCH_VERSION already installed"
else
  step "installing torch $TORCH_VERSION"
  $PIP install "torch==$TORCH_VERSION"
fi

# 2. mmcv with its compiled ops (mmseg's model registry imports them;
#    mmcv-lite lacks them and mmseg 1.2.x refuses mmcv >= 2.2). It is built
#    from source against the installed torch; its setup.py needs
#    setuptools<70, while torch 2.13 wants setuptools>=77 at run time, so
#    setuptools is restored after the build (below 81: mmengine's
#    `mmseg::` config inheritance imports pkg_resources, which setuptools 81
#    removed). pip caches the built wheel.
if $PY -c "import sys, mmcv; from mmcv import _ext; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
  step "mmcv $MMCV_VERSION (with ops) already installed"
else
  step "building mmcv $MMCV_VERSION with ops (about 7 minutes on 2 cores the first time)"
  $PIP install "mmengine==$MMENGINE_VERSION" ninja wheel "setuptools<70"
  MMCV_WITH_OPS=1 $PIP install --no-build-isolation "mmcv==$MMCV_VERSION"
  $PIP install "setuptools>=77,<81"
  $PY -c "from mmcv import _ext" || { echo "mmcv was installed without its ops" >&2; exit 1; }
fi

if $PY -c "import pkg_resources, setuptools, sys; v = tuple(int(x) for x in setuptools.__version__.split('.')[:2]); sys.exit(not (77, 0) <= v < (81, 0))" 2>/dev/null; then
  step "setuptools with pkg_resources already installed"
else
  step "installing setuptools>=77,<81 (torch needs >=77, mmengine needs pkg_resources)"
  $PIP install "setuptools>=77,<81"
fi

# 3. mmengine, mmsegmentation and repseg itself (editable) with every
#    extra: train (the training stack; mmcv with its ops is already built
#    above, so pip keeps it), the runtimes (onnxruntime + onnx, openvino;
#    nncf for OpenVINO's INT8 comes with train), ray (inference on a Ray
#    cluster, Ray Serve), serve (fastapi, uvicorn, python-multipart, httpx,
#    Pillow for repseg-serve) and tests (pytest, xdist, hypothesis, psutil).
#    This is the training route; a deployment box installs only what runs
#    deployed files: pip install "repseg[openvino]" (docs/deployment.md).
REPO=$(pwd)
EXTRAS=train,onnxruntime,openvino,ray,serve,tests
# run from / so that the check sees the installed repseg, not this folder;
# its commands must be declared too (an install from before they were
# lacks them)
if (cd / && $PY - <<PYEOF 2>/dev/null
import os, sys
from importlib.metadata import distribution
import mmengine, mmseg, pytest, xdist, hypothesis, onnx, onnxruntime, openvino, nncf, safetensors, ray.data, ray.serve, psutil, repseg
import fastapi, uvicorn, python_multipart, httpx, PIL  # the serve extra
ok = (mmengine.__version__ == '$MMENGINE_VERSION'
      and mmseg.__version__ == '$MMSEG_VERSION'
      and os.path.dirname(os.path.dirname(os.path.abspath(repseg.__file__)))
      == '$REPO'
      and {'repseg-infer', 'repseg-serve'} <= {
          e.name for e in distribution('repseg').entry_points})
sys.exit(0 if ok else 1)
PYEOF
)
then
  step "mmengine, mmsegmentation and repseg (with its commands) already installed"
else
  step "installing mmengine $MMENGINE_VERSION, mmsegmentation $MMSEG_VERSION and repseg[$EXTRAS]"
  $PIP install "mmengine==$MMENGINE_VERSION" "mmsegmentation==$MMSEG_VERSION" -e ".[$EXTRAS]"
fi

$PY -c "import repseg, mmseg, mmcv, torch; print('[repseg install] ok: torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmseg', mmseg.__version__, '| repseg', repseg.__version__)"
