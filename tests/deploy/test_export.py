"""tools/export.py (fixed-size and dynamic files; dynamic by default for
a whole-image config) and tools/benchmark.py --backend onnxruntime."""
import json
import os.path as osp
import re
import subprocess
import sys

import onnx
import pytest
import torch

from repseg.apis import UsageError, load_cfg
from repseg.deploy import ExportSettings, build_segmentor, export_model
from repseg.testing import randomize_bn_

from tests.utils import DEMO_CONFIG, ROOT


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    cfg = load_cfg(DEMO_CONFIG)
    model = randomize_bn_(build_segmentor(cfg), seed=11)
    path = str(tmp_path_factory.mktemp('export') / 'a0.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def _dims(path):
    return [d.dim_param or d.dim_value for d in
            onnx.load(path).graph.input[0].type.tensor_type.shape.dim]


def test_export_tool_matches_pytorch(checkpoint, tmp_path):
    """The demo config tests whole images: the file takes any size by
    default (traced and verified at --shape and at another size);
    --fixed-shape gives a file of one size."""
    out = str(tmp_path / 'a0.onnx')
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'export.py'),
         DEMO_CONFIG, checkpoint, out, '--shape', '144', '144'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'onnxruntime (fp32, ' in proc.stdout
    assert 'argmax agreement 100.0000%' in proc.stdout
    assert 'dynamic H and W' in proc.stdout and '--fixed-shape' in proc.stdout
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert 'BatchNormalization' not in ops      # fused and folded
    assert _dims(out) == ['batch', 3, 'height', 'width']
    # refuses to overwrite
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'export.py'),
         DEMO_CONFIG, checkpoint, out], capture_output=True, text=True,
        cwd=ROOT)
    assert proc.returncode != 0 and '--force' in proc.stderr
    fixed = str(tmp_path / 'fixed.onnx')
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'export.py'),
         DEMO_CONFIG, checkpoint, fixed, '--shape', '144', '--fixed-shape'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'fixed input size 144x144' in proc.stdout
    assert _dims(fixed) == ['batch', 3, 144, 144]


def test_sliding_window_configs_export_fixed_files(checkpoint, tmp_path):
    """A sliding-window config's windows all have the crop size: its file
    is fixed at that size unless asked otherwise."""
    cfg = load_cfg(DEMO_CONFIG, cfg_options={'model.test_cfg': dict(
        mode='slide', crop_size=(64, 64), stride=(43, 43))})
    r = export_model(cfg, checkpoint, str(tmp_path / 's.onnx'),
                     ExportSettings(verify=False))
    assert (r['dynamic_shape'], r['input_size']) == (False, [64, 64])
    assert _dims(r['out']) == ['batch', 3, 64, 64]


def test_export_difference_is_small(checkpoint, tmp_path):
    cfg = load_cfg(DEMO_CONFIG)
    r = export_model(cfg, checkpoint, str(tmp_path / 'm.onnx'),
                     ExportSettings(input_size=(144, 96)))
    assert r['max_abs_diff'] <= 1e-4 * r['max_abs']
    assert r['argmax_agreement'] == 1.0


def test_export_rejects_unsupported_sizes(checkpoint, tmp_path):
    cfg = load_cfg(DEMO_CONFIG)
    with pytest.raises(UsageError, match='not supported'):
        export_model(cfg, checkpoint, str(tmp_path / 'm.onnx'),
                     ExportSettings(input_size=(16, 16)))
    with pytest.raises(UsageError, match='does not exist'):
        export_model(cfg, str(tmp_path / 'none.pth'),
                     str(tmp_path / 'm.onnx'), ExportSettings())


def test_benchmark_onnxruntime_backend(checkpoint, tmp_path):
    out = tmp_path / 'bench'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'benchmark.py'),
         DEMO_CONFIG, checkpoint, '--shape', '144', '--backend',
         'onnxruntime', '--int8', '--equalize', 'activation', '--warmup',
         '1', '--iters', '2', '--repeat', '1', '--no-flops', '--out',
         str(out)],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row, ) = json.loads((out / 'benchmark.json').read_text())['rows']
    fp32, int8 = row['runs']['onnxruntime'], row['runs']['onnxruntime_int8']
    assert (fp32['runtime'], int8['precision']) == ('onnxruntime', 'int8')
    # --equalize: the INT8 model of the equalized model, timed beside it
    eq = row['runs']['onnxruntime_int8_eq']
    assert (eq['equalize'], eq['precision_ran']) == ('activation', 'int8')
    assert int8['equalize'] is None and eq['img_per_s'] > 0
    assert '| ONNX Runtime | int8 (activation equalized) | int8 |' in \
        proc.stdout
    # and says what the repair changed
    assert row['equalization']['method'] == 'activation'
    assert row['equalization']['pairs'] > 0
    assert re.search(r'Equalization \(activation\): \d+ conv -> ReLU -> '
                     r'conv pairs, \d+ channels rescaled', proc.stdout)
    assert fp32['img_per_s'] > 0 and fp32['precision_ran'] == 'fp32'
    assert fp32['relative_diff'] <= 1e-4
    assert int8['precision_ran'] == 'int8'
    # one line per runtime and precision, ratios of the same run
    assert '| a0 |' not in proc.stdout   # rows are named after the config
    assert re.search(r'\| ONNX Runtime \| int8 \| int8 \|', proc.stdout)
    assert 'CPU vector ISA' in proc.stdout
    assert int8['vs_pytorch'] == pytest.approx(
        row['runs']['fused']['latency_ms'] / int8['latency_ms'], rel=1e-9)
    assert fp32['vs_pytorch'] == pytest.approx(
        row['runs']['fused']['latency_ms'] / fp32['latency_ms'], rel=1e-9)
    # the file runs as written: no kernel routing, no probes at start
    assert 'int8_conv' not in row


@pytest.mark.parametrize('shape', [(129, 129), (128, 256)])
def test_export_at_sizes_adaptive_pooling_does_not_divide(checkpoint,
                                                          tmp_path, shape):
    """PSP's adaptive pooling over a feature map that is not a multiple of
    every pool scale: exported exactly, equal to onnxruntime."""
    cfg = load_cfg(DEMO_CONFIG)
    out = str(tmp_path / 'm.onnx')
    r = export_model(cfg, checkpoint, out, ExportSettings(
        input_size=shape, dynamic_shape=False))
    assert r['max_abs_diff'] <= 1e-4 * r['max_abs']
    # random weights give near-ties: a flipped pixel needs a logit gap
    # below float rounding, so allow 1 in 10^4
    assert r['argmax_agreement'] >= 0.9999
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert 'MatMul' in ops     # the pyramid's bins as matrix products
    spec = json.loads(open(r['spec']).read())
    assert spec['input']['height_width'] == list(shape)
    assert spec['input']['channel_order'] == 'RGB'
    assert spec['input']['mean'] == [123.675, 116.28, 103.53]
    assert spec['input']['std'] == [58.395, 57.12, 57.375]
    assert spec['output']['classes'][0] == 'road'


@pytest.mark.parametrize('hw', [(17, 23), (90, 90), (18, 23)])
def test_fixed_adaptive_pool_equals_adaptive_pool(hw):
    """Unequal bins (matrix products), equal bins (one average pooling,
    e.g. PSPNet's bins of a 90x90 map) and a mix of both."""
    from repseg.deploy.onnx import FixedAdaptiveAvgPool2d
    x = torch.randn(2, 3, *hw)
    for size in (1, 2, 3, 6, (4, 5), (None, 3)):
        ref = torch.nn.AdaptiveAvgPool2d(size)(x)
        got = FixedAdaptiveAvgPool2d(size)(x)
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-6)
    # what the exporter sees: equal bins give AveragePool, no MatMul
    graph = str(torch.jit.trace(FixedAdaptiveAvgPool2d(6), x).graph)
    equal = hw[0] % 6 == 0 and hw[1] % 6 == 0
    assert ('avg_pool2d' in graph) == equal
    assert ('matmul' in graph) != equal


def test_dynamic_shape_without_pyramid_works(tmp_path):
    """FCN (no adaptive pooling): dynamic H/W exports and runs at another
    size in onnxruntime."""
    import onnxruntime as ort
    cfg = load_cfg(osp.join(ROOT, 'configs', 'fcn_repvgg_b2.py'),
                   cfg_options={'model.backbone.arch': 'A0',
                                'model.backbone.init_cfg': None,
                                'model.decode_head.in_channels': 1280,
                                'model.decode_head.channels': 16,
                                'model.auxiliary_head.in_channels': 192,
                                'model.auxiliary_head.channels': 16})
    out = str(tmp_path / 'fcn.onnx')
    r = export_model(cfg, None, out, ExportSettings(
        input_size=(64, 64), dynamic_shape=True))
    assert r['max_abs_diff'] <= 1e-4 * r['max_abs']
    sess = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    got = sess.run(None, {'image': torch.randn(1, 3, 72, 104).numpy()})[0]
    assert got.shape == (1, 19, 72, 104)
    assert json.loads(open(r['spec']).read())['input'][
        'height_width'] == 'any'


def test_export_failure_is_one_line_with_a_log(tmp_path):
    """An exporter failure: a short message, the details in OUT.log."""
    from repseg.deploy.onnx import to_onnx

    class Bad(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x[0, 0])[0].real   # not exportable

    out = str(tmp_path / 'bad.onnx')
    with pytest.raises(UsageError) as e:
        to_onnx(Bad(), torch.randn(1, 3, 8, 8), out)
    assert len(str(e.value).splitlines()) == 1
    assert len(str(e.value)) < 700
    assert osp.isfile(out + '.log')
    assert not osp.exists(out)
