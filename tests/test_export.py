"""tools/export_onnx.py and tools/benchmark.py --backend onnxruntime."""
import json
import os.path as osp
import subprocess
import sys

import onnx
import pytest
import torch

from repseg.apis import UsageError, load_cfg
from repseg.apis.convert import build_segmentor
from repseg.apis.export import export_onnx
from repseg.testing import randomize_bn_

from .conftest import DEMO_CONFIG, ROOT


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    cfg = load_cfg(DEMO_CONFIG)
    model = randomize_bn_(build_segmentor(cfg), seed=11)
    path = str(tmp_path_factory.mktemp('export') / 'a0.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def test_export_tool_matches_pytorch(checkpoint, tmp_path):
    out = str(tmp_path / 'a0.onnx')
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'export_onnx.py'),
         DEMO_CONFIG, checkpoint, out, '--shape', '144', '144'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'checked with onnx.checker' in proc.stdout
    assert 'argmax agreement 100.0000%' in proc.stdout
    graph = onnx.load(out).graph
    ops = {n.op_type for n in graph.node}
    assert 'BatchNormalization' not in ops      # fused and folded
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'batch'
    # refuses to overwrite
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'export_onnx.py'),
         DEMO_CONFIG, checkpoint, out], capture_output=True, text=True,
        cwd=ROOT)
    assert proc.returncode != 0 and '--force' in proc.stderr


def test_export_difference_is_small(checkpoint, tmp_path):
    cfg = load_cfg(DEMO_CONFIG)
    r = export_onnx(cfg, checkpoint, str(tmp_path / 'm.onnx'), (144, 96))
    assert r['max_abs_diff'] <= 1e-4 * r['max_abs']
    assert r['argmax_agreement'] == 1.0


def test_export_rejects_unsupported_sizes(checkpoint, tmp_path):
    cfg = load_cfg(DEMO_CONFIG)
    with pytest.raises(UsageError, match='not supported'):
        export_onnx(cfg, checkpoint, str(tmp_path / 'm.onnx'), (16, 16))
    with pytest.raises(UsageError, match='does not exist'):
        export_onnx(cfg, str(tmp_path / 'none.pth'),
                    str(tmp_path / 'm.onnx'), (144, 144))


def test_benchmark_onnxruntime_backend(checkpoint, tmp_path):
    out = tmp_path / 'bench'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'benchmark.py'),
         DEMO_CONFIG, checkpoint, '--shape', '144', '--backend',
         'onnxruntime', '--warmup', '1', '--iters', '2', '--repeat', '1',
         '--no-flops', '--out', str(out)],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'ort/pytorch' in proc.stdout
    (row, ) = json.loads((out / 'benchmark.json').read_text())['rows']
    assert row['onnxruntime_img_per_s'] > 0
    assert row['onnxruntime_vs_pytorch'] > 0
    assert row['onnxruntime_max_abs_diff'] <= \
        1e-4 * row['onnxruntime_max_abs_logit']
