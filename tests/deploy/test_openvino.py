"""The OpenVINO runtime (repseg.deploy.runtimes.openvino): IR export
verified against PyTorch, what ran read from the compiled model, INT8 with
NNCF at every export size (the pyramid's pooling products), accuracy
control on a control set, and its errors."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from repseg.apis import load_cfg
from repseg.deploy import (ExportSettings, build_fused, build_segmentor,
                           export_model)
from repseg.deploy.onnx import to_onnx
from repseg.deploy.runtimes import (ControlSet, QuantOptions, get_runtime,
                                    runtime_of_file)
from repseg.deploy.runtimes.openvino import ran_precision
from repseg.errors import BackendError, UsageError
from repseg.testing import randomize_bn_

from tests.utils import CONFIG_DIR, DEMO_CONFIG, ROOT

OV = get_runtime('openvino')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    cfg = load_cfg(DEMO_CONFIG)
    torch.manual_seed(12)    # module fixtures run before the per-test seed
    model = randomize_bn_(build_segmentor(cfg), seed=12)
    path = str(tmp_path_factory.mktemp('ov') / 'a0.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def _upernet_cfg():
    """UPerNet (a pooling pyramid in its head too) on a small A0."""
    return load_cfg(osp.join(CONFIG_DIR, 'upernet_repvgg_b1g2.py'),
                    cfg_options={'model.backbone.arch': 'A0',
                                 'model.backbone.init_cfg': None,
                                 'model.decode_head.in_channels':
                                 [48, 96, 192, 1280],
                                 'model.decode_head.channels': 16,
                                 'model.auxiliary_head.in_channels': 192,
                                 'model.auxiliary_head.channels': 16})


def _pytorch_logits(cfg, checkpoint, x):
    from repseg.deploy import SegForward
    with torch.no_grad():
        return SegForward(build_fused(cfg, checkpoint))(x)


@pytest.mark.parametrize('decoder', ['pspnet', 'upernet'])
def test_ir_export_equals_pytorch(checkpoint, tmp_path, decoder):
    """fp32 IR (.xml + .bin) from the fused model: the export's own check
    and an independent run of the files with openvino agree with PyTorch
    to float rounding (relative 1e-4), on PSPNet and UPerNet at a size
    whose pyramid bins are unequal."""
    import openvino as ov
    cfg = load_cfg(DEMO_CONFIG) if decoder == 'pspnet' else _upernet_cfg()
    ckpt = checkpoint
    if decoder != 'pspnet':
        ckpt = str(tmp_path / 'upernet.pth')
        torch.save(dict(state_dict=randomize_bn_(
            build_segmentor(cfg), seed=13).state_dict()), ckpt)
    out = str(tmp_path / 'm.xml')
    r = export_model(cfg, ckpt, out, ExportSettings(
        input_size=(128, 256), dynamic_shape=False, backend='openvino'))
    assert r['files'] == [out, str(tmp_path / 'm.bin')]
    assert all(osp.isfile(f) for f in r['files'])
    assert r['relative'] <= 1e-4 and r['argmax_agreement'] >= 0.9999
    assert r['runtime'].precision == 'fp32'
    assert r['runtime'].threads == torch.get_num_threads()
    # independently of repseg's runtime module: the IR on disk holds fp32
    # weights (no fp16 compression) and computes what PyTorch computes
    x = torch.randn(1, 3, 128, 256, generator=torch.Generator().manual_seed(3))
    compiled = ov.Core().compile_model(
        out, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    got = compiled(x.numpy())[0]
    ref = _pytorch_logits(cfg, ckpt, x).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    consts = [op for op in ov.Core().read_model(out).get_ordered_ops()
              if op.get_type_name() == 'Constant'
              and op.get_output_element_type(0).is_real()]
    assert consts and all(str(c.get_output_element_type(0)) == '<Type: '
                          "'float32'>" for c in consts)


def test_export_tool_writes_ir_and_reports(checkpoint, tmp_path):
    out = str(tmp_path / 'a0.xml')
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'export.py'), DEMO_CONFIG,
         checkpoint, out, '--shape', '128', '256'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'openvino (fp32, ' in proc.stdout     # backend from the suffix
    assert 'argmax agreement' in proc.stdout
    assert osp.isfile(out[:-4] + '.bin') and osp.isfile(out[:-4] + '.json')
    # an .onnx name with --backend openvino: one line saying what to do
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'export.py'), DEMO_CONFIG,
         checkpoint, str(tmp_path / 'x.onnx'), '--backend', 'openvino'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: OpenVINO models are .xml files: name the output NAME.xml "
        f"(got '{tmp_path / 'x.onnx'}') or choose another --backend")


def test_ir_without_its_weights_is_one_clear_error(checkpoint, tmp_path):
    out = str(tmp_path / 'm.xml')
    export_model(load_cfg(DEMO_CONFIG), checkpoint, out, ExportSettings(
        input_size=(64, 64), dynamic_shape=False, backend='openvino',
        verify=False))
    os.remove(out[:-4] + '.bin')
    with pytest.raises(BackendError, match=r"m\.bin' must lie next to it"):
        OV.load(out)
    assert runtime_of_file(out) is OV


def test_bf16_on_a_cpu_without_it_is_refused_not_run_as_fp32(checkpoint,
                                                             tmp_path):
    out = str(tmp_path / 'm.xml')
    export_model(load_cfg(DEMO_CONFIG), checkpoint, out, ExportSettings(
        input_size=(64, 64), dynamic_shape=False, backend='openvino',
        verify=False))
    if 'bf16' in OV.precisions():
        model = OV.load(out, 'bf16')
        assert model.info.precision == 'bf16'
    else:
        with pytest.raises(BackendError, match='no AVX512_BF16 or AMX'):
            OV.load(out, 'bf16')


class _FakeOp:
    def __init__(self, name, kind, prec, kernel):
        self.name = name
        self.info = dict(layerType=kind, runtimePrecision=prec,
                         primitiveType=kernel)

    def get_friendly_name(self):
        return self.name

    def get_rt_info(self):
        return self.info


class _FakeCompiled:
    """What an AMX CPU's OpenVINO returns for an fp32 IR compiled with its
    default (bf16) inference precision."""

    def __init__(self, ops):
        self.ops = ops

    def get_runtime_model(self):
        ops = self.ops

        class Runtime:
            def get_ordered_ops(self):
                return ops
        return Runtime()

    def get_property(self, key):
        return dict(INFERENCE_PRECISION_HINT='bf16',
                    INFERENCE_NUM_THREADS=1)[key]

    def create_infer_request(self):
        return None


def test_precision_is_read_from_the_runtime_graph_not_the_request():
    """bf16 must never be reported as fp32: what ran comes from the
    compiled model's per-node runtime precision."""
    bf16 = _FakeCompiled([
        _FakeOp('conv1', 'Convolution', 'bf16', 'brgconv_avx512_amx_bf16'),
        _FakeOp('conv2', 'Convolution', 'bf16', 'brgconv_avx512_amx_bf16'),
        _FakeOp('pool', 'MatMul', 'f32', 'jit_f32')])
    info = OV.wrap(bf16, 'm.xml').info
    assert info.precision == 'bf16'
    assert info.kernels == 'brgconv_avx512_amx_bf16 x2'
    int8 = _FakeCompiled([
        _FakeOp('conv1', 'Convolution', 'u8', 'brgconv_avx512_amx_I8'),
        _FakeOp('conv2', 'Convolution', 'f32', 'brgconv_avx512_f32'),
        _FakeOp('pool', 'MatMul', 'f32', 'jit_f32')])
    info = OV.wrap(int8, 'm.xml').info
    assert info.precision == 'int8'
    assert info.float_layers == ['conv2', 'pool']
    assert ran_precision([dict(type='Convolution', precision='fp32')]) == \
        'fp32'


class _FakeCore:
    """A bf16-capable CPU's OpenVINO core that records what it is asked to
    compile with."""

    def __init__(self):
        self.configs = []

    def get_property(self, device, key):
        assert key == 'OPTIMIZATION_CAPABILITIES'
        return ['FP32', 'BF16', 'INT8']

    def compile_model(self, model, device, config):
        self.configs.append(dict(config))
        return model


def test_int8_float_parts_compile_in_f32_on_a_bf16_cpu(tmp_path):
    """OpenVINO's CPU default on bf16-capable CPUs is bf16: an INT8 model's
    float parts (the pyramid's pooling products, layers accuracy control
    kept in float) must be compiled in f32, and so must an fp32 request;
    only a bf16 request gets bf16. On a faked bf16 CPU everywhere; on the
    real one where the CPU has bf16."""
    from repseg.deploy.runtimes.openvino import OpenVINO
    ov = OpenVINO()
    ov._core = _FakeCore()
    assert 'bf16' in ov.precisions()
    for asked, hint in (('int8', 'f32'), ('fp32', 'f32'), ('bf16', 'bf16')):
        ov.compile(object(), asked)
        assert ov._core.configs[-1]['INFERENCE_PRECISION_HINT'] == hint, \
            asked
    if 'bf16' not in OV.precisions():
        return
    onnx_path = _small_onnx(tmp_path)
    fp32 = OV.from_onnx(onnx_path, str(tmp_path / 'net.xml'))
    q = OV.quantize(fp32, str(tmp_path / 'q.xml'), _calib((16, 16), 2))
    model = OV.load(q['file'], 'int8')
    assert model.info.precision == 'int8'
    assert model.info.precision_hint == 'f32'
    plain = OV.load(fp32)
    assert (plain.info.precision, plain.info.precision_hint) == ('fp32',
                                                                 'f32')


def _calib(shape, n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, *shape, generator=gen).numpy()
            for _ in range(n)]


@pytest.mark.parametrize('decoder, shape', [
    ('pspnet', (128, 256)), ('pspnet', (96, 96)), ('pspnet', (713, 713)),
    ('upernet', (128, 256))])
def test_int8_compiles_and_runs_at_every_export_size(checkpoint, tmp_path,
                                                     decoder, shape):
    """PSPNet's pyramid: matrix products at 128x256 (unequal bins), average
    pooling at 96x96 and 713x713 (equal bins); UPerNet's pooling pyramid at
    128x256: the NNCF INT8 IR compiles, runs its convolutions in INT8 with
    only the pooling products in float, and stays close to fp32."""
    fp32 = str(tmp_path / 'm.xml')
    if decoder == 'pspnet':
        cfg = load_cfg(DEMO_CONFIG)
    else:
        cfg = _upernet_cfg()
        checkpoint = str(tmp_path / 'upernet.pth')
        torch.save(dict(state_dict=randomize_bn_(
            build_segmentor(cfg), seed=14).state_dict()), checkpoint)
    export_model(cfg, checkpoint, fp32, ExportSettings(
        input_size=shape, dynamic_shape=False, backend='openvino',
        verify=False))
    int8 = str(tmp_path / 'm_int8.xml')
    OV.quantize(fp32, int8, _calib(shape, 2))
    q = OV.load(int8, 'int8')
    assert q.info.precision == 'int8'
    assert all('MatMul' in n or 'Pool' in n or 'pool' in n
               for n in q.info.float_layers), q.info.float_layers
    x = _calib(shape, 1, seed=5)[0]
    ref = torch.from_numpy(OV.load(fp32)(x))
    got = torch.from_numpy(q(x))
    assert got.shape == ref.shape
    err = ((got - ref).abs().mean() / ref.abs().mean()).item()
    agree = (got.argmax(1) == ref.argmax(1)).float().mean().item()
    # seeded: relative error 0.06-0.10; agreement 99.5-99.9% (PSPNet),
    # 93.3% (UPerNet: random weights leave near-ties everywhere)
    assert err < 0.2, err
    assert agree > (0.95 if decoder == 'pspnet' else 0.9), agree


def _small_onnx(tmp_path):
    """A 4-conv network that per-channel INT8 hurts: RepVGG's failure mode
    planted in its second conv (input channel 0 never fires after the
    ReLU, and every output channel has a huge tap on it, so that its other
    weights round to zero)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 5, 1)).eval()
    with torch.no_grad():
        net[0].bias[0] = -1e3             # dead after the ReLU
        net[2].weight[:, 0, 1, 1] = 300.0  # huge taps on the dead channel
    path = str(tmp_path / 'net.onnx')
    to_onnx(net, torch.randn(1, 3, 16, 16), path)
    return path


def test_accuracy_control_keeps_layers_in_float_until_the_drop_fits(
        tmp_path):
    """The control metric is how close the logits stay to the fp32 model's
    on control inputs (100 - relative L1 error in percent): plain INT8
    loses a lot on this net, so max_drop=1 must leave layers in float and
    meet it; ignoring the control would not."""
    onnx_path = _small_onnx(tmp_path)
    fp32 = OV.from_onnx(onnx_path, str(tmp_path / 'net.xml'))
    ref_model = OV.load(fp32)
    items = _calib((16, 16), 8, seed=7)

    def agreement(fwd, batch):
        errs = []
        for x in batch:
            ref, out = ref_model(x), fwd(x)
            errs.append(float(np.abs(out - ref).mean() / np.abs(ref).mean()))
        return 100 - 100 * float(np.mean(errs))

    control = ControlSet(items=items, metric=agreement, name='8 inputs')
    calib = _calib((16, 16), 4)
    plain = OV.quantize(fp32, str(tmp_path / 'plain.xml'), calib)
    plain_model = OV.load(plain['file'], 'int8')
    plain_drop = 100 - agreement(plain_model, items)
    assert plain_drop > 5      # else the test could not tell
    assert plain_model.info.float_layers == []
    ctrl = OV.quantize(fp32, str(tmp_path / 'ctrl.xml'), calib,
                       QuantOptions(max_drop=1.0), control)
    ctrl_model = OV.load(ctrl['file'])
    assert ctrl['control'] == '8 inputs'
    assert 100 - agreement(ctrl_model, items) <= 1.0
    assert ctrl_model.info.float_layers
    with pytest.raises(UsageError, match='needs a control set'):
        OV.quantize(fp32, str(tmp_path / 'x.xml'), calib,
                    QuantOptions(max_drop=0.2))


def test_calibration_method_sets_the_activation_ranges(tmp_path):
    """--calib-method reaches NNCF: 'minmax' (the default) quantizes an
    activation over the extremes of ALL calibration inputs, as ONNX
    Runtime's minmax does with the same inputs; 'mean_minmax' (NNCF's own
    default) over the mean of each input's extremes, which clips the one
    input whose activations are 10x larger."""
    import onnx
    from onnx import numpy_helper
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                              torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    onnx_path = str(tmp_path / 'net.onnx')
    to_onnx(net, torch.randn(1, 3, 16, 16), onnx_path)
    calib = [x * (10 if i == 0 else 1)
             for i, x in enumerate(_calib((16, 16)))]
    with torch.no_grad():
        highs = [net[:2](torch.from_numpy(x)).max().item() for x in calib]
    fp32 = OV.from_onnx(onnx_path, str(tmp_path / 'net.xml'))

    def relu_range(method):
        q = OV.quantize(fp32, str(tmp_path / f'{method}.xml'), calib,
                        QuantOptions(calib_method=method))
        fqs = [op for op in OV.read(q['file']).get_ordered_ops()
               if op.get_type_name() == 'FakeQuantize' and op.input_value(
                   0).get_node().get_type_name() == 'Relu']
        assert len(fqs) == 1
        return [float(fqs[0].input_value(i).get_node().get_data().max())
                for i in (1, 2)]

    assert relu_range('minmax') == pytest.approx([0, max(highs)], rel=1e-5)
    assert relu_range('mean_minmax') == pytest.approx([0, np.mean(highs)],
                                                      rel=1e-5)
    ort = get_runtime('onnxruntime')
    ort.quantize(onnx_path, str(tmp_path / 'q.onnx'), calib, QuantOptions())
    graph = onnx.load(str(tmp_path / 'q.onnx')).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    scale = [inits[n.input[1]] for n in graph.node
             if n.op_type == 'QuantizeLinear' and 'Relu' in n.input[0]]
    assert len(scale) == 1
    assert float(scale[0]) * 255 == pytest.approx(max(highs), rel=1e-5)
    with pytest.raises(UsageError, match='OpenVINO calibrates with minmax '
                       'or mean_minmax'):
        OV.quantize(fp32, str(tmp_path / 'x.xml'), calib,
                    QuantOptions(calib_method='entropy'))
    with pytest.raises(UsageError, match='ONNX Runtime calibrates with '
                       'minmax or entropy or percentile'):
        ort.quantize(onnx_path, str(tmp_path / 'x.onnx'), calib,
                     QuantOptions(calib_method='mean_minmax'))


def test_onnxruntime_has_no_accuracy_control(tmp_path):
    with pytest.raises(UsageError, match='has no accuracy control'):
        get_runtime('onnxruntime').quantize(
            _small_onnx(tmp_path), str(tmp_path / 'q.onnx'),
            _calib((16, 16), 1), QuantOptions(max_drop=0.2))


@pytest.mark.slow
def test_benchmark_openvino_rows_side_by_side(checkpoint, tmp_path):
    """tools/benchmark.py --backend openvino onnxruntime --int8 --dtype fp32
    bf16: one
    line per runtime and precision with what really ran; OpenVINO bf16
    only where the CPU has it (else a note, never an fp32 run called
    bf16)."""
    import json
    out = tmp_path / 'bench'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'benchmark.py'),
         DEMO_CONFIG, checkpoint, '--shape', '128', '256', '--backend',
         'openvino', 'onnxruntime', '--int8', '--dtype', 'fp32', 'bf16',
         '--warmup', '1',
         '--iters', '1', '--repeat', '1', '--no-flops', '--out', str(out)],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row, ) = json.loads((out / 'benchmark.json').read_text())['rows']
    runs = row['runs']
    assert runs['openvino']['precision_ran'] == 'fp32'
    assert runs['openvino']['relative_diff'] <= 1e-4
    assert runs['openvino_int8']['precision_ran'] == 'int8'
    assert runs['openvino_int8']['threads'] == torch.get_num_threads()
    assert runs['onnxruntime_int8']['precision_ran'] == 'int8'
    assert '| OpenVINO | int8 | int8 |' in proc.stdout
    if 'bf16' in OV.precisions():
        assert runs['openvino_bf16']['precision_ran'] == 'bf16'
    else:
        assert 'openvino_bf16' not in runs
        assert 'note: no OpenVINO bf16 row: this CPU (' in proc.stdout
        assert 'has no AVX512_BF16 or AMX: OpenVINO would silently run ' \
            'fp32' in proc.stdout
    assert "note: no ONNX Runtime bf16 row: ONNX Runtime's CPU execution " \
        'provider has no bf16' in proc.stdout
    assert (out / 'benchmark.png').read_bytes()[:4] == b'\x89PNG'


@pytest.mark.slow
def test_benchmark_openvino_on_another_decoder(tmp_path):
    """tools/benchmark.py --backend openvino --int8 on UPerNet (A0)."""
    import json
    out = tmp_path / 'bench'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'benchmark.py'),
         osp.join(CONFIG_DIR, 'upernet_repvgg_b1g2.py'), '--shape', '128',
         '256', '--backend', 'openvino', '--int8', '--warmup', '1',
         '--iters', '1', '--repeat', '1', '--no-flops', '--out', str(out),
         '--cfg-options', 'model.backbone.arch=A0',
         'model.backbone.init_cfg=None',
         'model.decode_head.in_channels=[48,96,192,1280]',
         'model.decode_head.channels=16',
         'model.auxiliary_head.in_channels=192',
         'model.auxiliary_head.channels=16'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row, ) = json.loads((out / 'benchmark.json').read_text())['rows']
    assert row['decoder'] == 'UPerHead'
    assert row['runs']['openvino']['relative_diff'] <= 1e-4
    assert row['runs']['openvino_int8']['precision_ran'] == 'int8'


@pytest.mark.slow
def test_quantize_and_test_openvino_on_another_decoder(synthetic_root,
                                                       tmp_path):
    """repseg.apis.quantize / test with OpenVINO on UPerNet (A0, the
    synthetic data): INT8 evaluated next to fp32, and the INT8 IR evaluated
    by the test entry point gives the same mIoU."""
    from repseg.apis import QuantizeSettings, quantize, test
    from tests.utils import small_cfg
    cfg = small_cfg(osp.join(CONFIG_DIR, 'upernet_repvgg_b1g2.py'),
                    synthetic_root, tmp_path / 'w', cfg_options={
                        'model.backbone.arch': 'A0',
                        'model.decode_head.in_channels': [48, 96, 192, 1280],
                        'model.decode_head.channels': 16,
                        'model.auxiliary_head.in_channels': 192,
                        'model.auxiliary_head.channels': 16})
    ckpt = str(tmp_path / 'u.pth')
    torch.save(dict(state_dict=randomize_bn_(build_segmentor(cfg),
                                             seed=15).state_dict()), ckpt)
    out = tmp_path / 'q'
    result = quantize(cfg, ckpt, str(out), QuantizeSettings(
        calib_images=4, repeat=1, backends=['openvino']))
    runs = {r['name']: r for r in result['runs']}
    assert runs['openvino_int8']['precision_ran'] == 'int8'
    assert runs['openvino_fp32']['metrics']['mIoU'] == pytest.approx(
        runs['pytorch_fp32']['metrics']['mIoU'], abs=0.02)
    metrics = test(cfg, str(out / 'model_int8.xml'))
    assert metrics['mIoU'] == pytest.approx(
        runs['openvino_int8']['metrics']['mIoU'], abs=0.02)
