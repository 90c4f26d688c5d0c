"""Adding a runtime is one class and one registration: a fake runtime that
subclasses ``Runtime`` directly (it runs ONNX files through ONNX Runtime
underneath, under its own name, label, suffix, calibration statistic,
note and a setting of its own) goes through quantize, test and benchmark,
and into the tools' ``--help``, the report and the JSON, with no file of
repseg touched."""
import dataclasses
import json
import os.path as osp
import shutil

import numpy as np
import pytest
import torch

from repseg.deploy import build_segmentor
from repseg.deploy.runtimes import (QuantOptions, RunInfo, Runtime,
                                    RuntimeModel, RuntimeOptions,
                                    get_runtime, option, register_runtime,
                                    runtime_of_file, unregister_runtime)
from repseg.testing import randomize_bn_
from tests.utils import DEMO_CONFIG, ROOT, small_cfg, tool_module

NOTE = 'note: the fake runtime speaks in riddles'


@dataclasses.dataclass(frozen=True)
class FakeOptions(RuntimeOptions):
    riddle: str = option('sphinx', 'Which riddle the fake runtime tells.',
                         choices=('sphinx', 'bilbo'))


class FakeRuntime(Runtime):
    name = 'fakert'
    label = 'Fake RT'
    suffix = '.fake.onnx'
    calibration_methods = dict(
        minmax='the extremes over all calibration images',
        riddle="the fake runtime's own statistic (minmax underneath)")
    own_options = FakeOptions

    def __init__(self):
        self.quantized_with = []

    def quant_label(self, options):
        return f'fake scheme, {options.calib_method}'

    def notes(self, isa, options):
        return [NOTE]

    def from_onnx(self, onnx_path, out):
        if osp.abspath(onnx_path) != osp.abspath(out):
            shutil.copyfile(onnx_path, out)
        return out

    def quantize(self, fp32_path, out, inputs, options=None, control=None):
        o = options or QuantOptions()
        self.check_options(o)
        self.quantized_with.append((o.calib_method,
                                    self.options_of(o).riddle))
        # the real work: ONNX Runtime's QDQ quantization with minmax
        get_runtime('onnxruntime').quantize(fp32_path, out, inputs,
                                            QuantOptions())
        return dict(file=out)

    def load(self, path, precision=None, threads=None, mode='latency',
             cache_dir=None):
        self._check_load(precision, mode)
        inner = get_runtime('onnxruntime').load(path, precision, threads,
                                                mode)
        info = RunInfo(**{**inner.info.to_dict(), 'runtime': self.name,
                          'kernels': 'fake kernels'})
        return RuntimeModel(inner, info)


@pytest.fixture(scope='module')
def fake():
    register_runtime(FakeRuntime)
    try:
        yield get_runtime('fakert')
    finally:
        unregister_runtime('fakert')


@pytest.fixture(scope='module')
def demo(synthetic_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('fake')
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp / 'w')
    ckpt = str(tmp / 'm.pth')
    torch.manual_seed(0)
    torch.save(dict(state_dict=randomize_bn_(build_segmentor(cfg),
                                             seed=4).state_dict()), ckpt)
    return cfg, ckpt


def test_registered_runtime_is_found_by_its_suffix(fake):
    assert runtime_of_file('x.fake.onnx') is fake
    assert runtime_of_file('x.onnx').name == 'onnxruntime'


def test_fake_runtime_through_quantize_and_test(fake, demo, tmp_path):
    from repseg.apis import QuantizeSettings, quantize, test
    from repseg.quant import markdown
    cfg, ckpt = demo
    out = tmp_path / 'q'
    result = quantize(cfg, ckpt, str(out), QuantizeSettings(
        backends=('fakert', ), calib_method='riddle', calib_images=2,
        repeat=1, sensitivity_images=0, runtime_options=dict(riddle='bilbo')))
    assert fake.quantized_with[-1] == ('riddle', 'bilbo')
    # its own setting in the JSON and in the report
    assert json.loads((out / 'quantize.json').read_text())['calibration'][
        'riddle'] == result['calibration']['riddle'] == 'bilbo'
    runs = {r['name']: r for r in result['runs']}
    assert set(runs) == {'pytorch_fp32', 'fakert_fp32', 'fakert_int8'}
    assert runs['fakert_int8']['precision_ran'] == 'int8'
    # fp32: the same function (random weights leave near-ties: 99.8%)
    assert runs['fakert_fp32']['argmax_agreement'] > 0.99
    table = markdown(result)
    assert '| Fake RT INT8 (fake scheme, riddle) | int8 |' in table, table
    assert '| Fake RT fp32 | fp32 |' in table, table
    assert f"Note: {NOTE[len('note: '):]}" in table, table
    assert 'Fake RT settings: riddle bilbo (default sphinx).' in table, table
    assert 'Fake RT settings: riddle bilbo (default sphinx).' in (
        out / 'quantize.md').read_text()
    assert (out / 'model_int8.fake.onnx').is_file()
    assert not (out / 'model_fp32.onnx').exists()   # only the export
    # the test entry point picks the runtime by the file's suffix
    metrics = test(cfg, str(out / 'model_int8.fake.onnx'))
    assert metrics['mIoU'] == pytest.approx(
        runs['fakert_int8']['metrics']['mIoU'], abs=1e-6)


def test_fake_runtime_through_the_benchmark(fake, demo):
    from repseg.benchmark import (BenchmarkSettings, markdown_table,
                                  run_benchmark)
    _, ckpt = demo
    result = run_benchmark(
        [dict(name='demo', config=DEMO_CONFIG, checkpoint=ckpt)],
        BenchmarkSettings(backend=('fakert', ), int8=True,
                          input_size=(64, 64), warmup=0, iters=1, repeat=1,
                          flops=False, throughput=3), logger=lambda m: None)
    (row, ) = result['rows']
    assert row.runs['fakert'].precision_ran == 'fp32'
    assert row.runs['fakert'].relative_diff <= 1e-4
    assert row.runs['fakert_int8'].precision_ran == 'int8'
    assert row.runs['fakert_int8'].kernels == 'fake kernels'
    # throughput mode: several requests in flight through submit()
    tp = row.runs['fakert_int8']
    assert tp.throughput_img_per_s > 0 and tp.throughput_requests >= 1
    assert tp.throughput_vs_latency == pytest.approx(
        tp.throughput_img_per_s / tp.img_per_s)
    table = markdown_table(result)
    assert '| demo | Fake RT | int8 | int8 |' in table, table
    assert 'throughput img/s (streams x requests)' in table, table
    assert 'Fake RT: fake scheme, minmax' in table, table
    assert f"Note: {NOTE[len('note: '):]}" in table, table


@pytest.mark.parametrize('name', ['quantize.py', 'benchmark.py',
                                  'export.py'])
def test_fake_runtime_in_the_tools_help(fake, name):
    parser = tool_module(osp.join(ROOT, 'tools', name)).build_parser()
    text = parser.format_help()
    assert 'fakert (Fake RT)' in ' '.join(text.split()), text
    if name == 'quantize.py':
        words = ' '.join(text.split())
        assert "riddle: the fake runtime's own statistic" in words, text
        # its own setting: a flag with its choices, help and default
        assert '--riddle {sphinx,bilbo} Fake RT: which riddle the fake ' \
            'runtime tells (default sphinx).' in words, text
        args = parser.parse_args(['c.py', 'k.pth', 'out', '--backend',
                                  'fakert', '--calib-method', 'riddle',
                                  '--riddle', 'bilbo'])
        from repseg.apis import QuantizeSettings
        s = QuantizeSettings.of(vars(args), backends=args.backend)
        assert s.runtime_options['riddle'] == 'bilbo'
        assert fake.options_of(s.quant_options) == FakeOptions('bilbo')


def test_fake_runtime_setting_is_checked(fake):
    """Its setting's values are checked, and a non-default one without the
    runtime is refused (one line each, before any data is read)."""
    from repseg.apis import QuantizeSettings, UsageError
    with pytest.raises(UsageError, match="Fake RT: riddle='gollum' is not "
                       "a value of this setting: give 'sphinx' or 'bilbo'"):
        QuantizeSettings(backends=('fakert', ), runtime_options=dict(
            riddle='gollum')).check()
    with pytest.raises(UsageError, match="riddle='bilbo' is a setting of "
                       "Fake RT: add backend='fakert' or leave it out"):
        QuantizeSettings(runtime_options=dict(riddle='bilbo')).check()
    QuantizeSettings(runtime_options=dict(riddle='sphinx')).check()


def test_a_runtime_that_is_no_runtime_is_refused():
    with pytest.raises(TypeError, match='subclass'):
        register_runtime(object, 'nothing')
    with pytest.raises(KeyError, match='registered already'):
        register_runtime(FakeRuntime, 'onnxruntime')
    assert np  # numpy is all a runtime needs
