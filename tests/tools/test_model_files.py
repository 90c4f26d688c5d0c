"""Sizes follow the config, and exported files say what they are: export,
convert and benchmark default to the size the config's test loop runs;
tools/test.py refuses a file of another model or size with one line."""
import json
import os.path as osp
import subprocess
import sys

import onnx
import pytest
import torch

from repseg.deploy import (ExportSettings, build_segmentor,
                           config_input_size, export_model)
from repseg.errors import UsageError
from repseg.testing import randomize_bn_
from tests.utils import (CONFIG_DIR, DEMO_CONFIG, ROOT, load_cfg,
                         one_error_line, small_cfg)

pytestmark = pytest.mark.slow

TOOLS = osp.join(ROOT, 'tools')
#: the synthetic test images (256x128) through the test pipeline of the
#: shrunk demo config (small_cfg resizes them to 128x64)
DEMO_SIZE = (64, 128)


def tool(name, *args):
    return subprocess.run([sys.executable, osp.join(TOOLS, name), *args],
                          capture_output=True, text=True, cwd=ROOT)


def _config(root, tmp, name, num_classes=19, options=None):
    cfg = small_cfg(DEMO_CONFIG, root, tmp / 'w', cfg_options={
        'model.decode_head.num_classes': num_classes,
        'model.auxiliary_head.num_classes': num_classes, **(options or {})})
    path = str(tmp / name)
    cfg.dump(path)
    cfg = load_cfg(path)     # as the tools load it (its own file name)
    model = randomize_bn_(build_segmentor(cfg), seed=3)
    ckpt = str(tmp / (name[:-3] + '.pth'))
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    return path, ckpt, cfg


@pytest.fixture(scope='module')
def demo(synthetic_root, tmp_path_factory):
    """(config file, random checkpoint, cfg) of the demo model on the
    synthetic data."""
    return _config(synthetic_root, tmp_path_factory.mktemp('files'),
                   'demo.py')


def test_config_input_size_follows_the_config(demo):
    _, _, cfg = demo
    assert config_input_size(cfg) == DEMO_SIZE        # whole: test images
    slide = load_cfg(osp.join(CONFIG_DIR, 'pspnet_repvgg_b2.py'))
    assert config_input_size(slide) == (713, 713)     # slide: its window


def test_export_default_size_records_the_model_and_tests(demo, tmp_path):
    """No --shape, a whole-image config: the file is traced and verified at
    the size the test loop runs and at another, takes any size (its
    record has no input size), records what it is (in the file and its
    .json), and tools/test.py evaluates it with its config."""
    path, ckpt, _ = demo
    out = str(tmp_path / 'm.onnx')
    proc = tool('export.py', path, ckpt, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'on {DEMO_SIZE[0]}x{DEMO_SIZE[1]} and ' in proc.stdout
    proto = onnx.load(out)
    dims = [d.dim_param for d in
            proto.graph.input[0].type.tensor_type.shape.dim[2:]]
    assert dims == ['height', 'width']
    record = json.loads({p.key: p.value
                         for p in proto.metadata_props}['repseg'])
    assert record['backbone'] == 'RepVGG-A0'
    assert record['decode_head'] == 'PSPHead'
    assert record['num_classes'] == 19 and len(record['classes']) == 19
    assert record['input_size'] is None
    assert record['config'] == 'demo.py'
    with open(str(tmp_path / 'm.json')) as f:
        assert json.load(f)['model'] == record
    proc = tool('test.py', path, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'mIoU' in proc.stdout + proc.stderr


def test_test_refuses_a_file_of_another_size(demo, tmp_path):
    path, ckpt, cfg = demo
    out = str(tmp_path / 'small.onnx')
    export_model(cfg, ckpt, out, ExportSettings(
        input_size=(64, 64), dynamic_shape=False, verify=False))
    line = one_error_line(tool('test.py', path, out))
    assert 'takes 64x64 inputs' in line, line
    assert 'runs 64x128 ones' in line, line
    assert 'export it again at 64x128' in line, line


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_test_refuses_a_file_of_another_model(demo, synthetic_root, tmp_path,
                                              backend):
    """A file exported from another model (here: 5 classes) is refused for
    this config with one line naming both, on either runtime."""
    path, _, _ = demo
    _, other_ckpt, other_cfg = _config(synthetic_root, tmp_path, 'other.py',
                                       5)
    out = str(tmp_path / ('o.onnx' if backend == 'onnxruntime' else 'o.xml'))
    export_model(other_cfg, other_ckpt, out, ExportSettings(
        input_size=DEMO_SIZE, dynamic_shape=False, verify=False,
        backend=backend))
    line = one_error_line(tool('test.py', path, out))
    assert 'is RepVGG-A0 + PSPHead, 5 classes (exported from other.py)' \
        in line, line
    assert 'demo.py builds RepVGG-A0 + PSPHead, 19 classes' in line, line


def test_test_refuses_a_file_of_another_backbone(demo, synthetic_root,
                                                 tmp_path):
    """The same classes, decoder and input size, but another backbone
    (RepVGG-A1, whose file runs on this config's inputs without an error):
    refused with one line naming both backbones."""
    path, _, _ = demo
    _, ckpt, cfg = _config(synthetic_root, tmp_path, 'a1.py', options={
        'model.backbone.arch': 'A1', 'model.auxiliary_head.in_channels': 256})
    out = str(tmp_path / 'a1.onnx')
    export_model(cfg, ckpt, out, ExportSettings(
        input_size=DEMO_SIZE, dynamic_shape=False, verify=False))
    line = one_error_line(tool('test.py', path, out))
    assert 'is RepVGG-A1 + PSPHead, 19 classes (exported from a1.py)' \
        in line, line
    assert 'demo.py builds RepVGG-A0 + PSPHead, 19 classes' in line, line


def test_record_survives_quantization(demo, tmp_path):
    """Both runtimes carry the record into their INT8 files."""
    from repseg.deploy.runtimes import get_runtime
    _, ckpt, cfg = demo
    x = [torch.randn(1, 3, *DEMO_SIZE).numpy()]
    for name, suffix in (('onnxruntime', '.onnx'), ('openvino', '.xml')):
        fp32 = str(tmp_path / (name + suffix))
        export_model(cfg, ckpt, fp32, ExportSettings(
            input_size=DEMO_SIZE, dynamic_shape=False, verify=False,
            backend=name))
        rt = get_runtime(name)
        int8 = str(tmp_path / (name + '_int8' + suffix))
        rt.quantize(fp32, int8, x)
        info = rt.load(int8).info
        assert info.precision == 'int8'
        assert info.record.backbone == 'RepVGG-A0', name
        assert info.input_size == list(DEMO_SIZE), name


def test_convert_verifies_at_the_config_size(demo, tmp_path):
    path, ckpt, _ = demo
    proc = tool('convert.py', path, ckpt, str(tmp_path / 'f.pth'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'on a {DEMO_SIZE[0]}x{DEMO_SIZE[1]} input' in proc.stdout


def test_benchmark_default_size_is_the_configs(demo):
    from repseg.benchmark.run import default_input_size
    path, _, _ = demo
    assert default_input_size([dict(name='demo', config=path)]) == DEMO_SIZE
    with pytest.raises(UsageError) as e:
        default_input_size([dict(name='demo', config=path),
                            dict(name='b2', config=osp.join(
                                CONFIG_DIR, 'pspnet_repvgg_b2.py'))])
    assert 'demo 64x128, b2 713x713' in str(e.value)
    # the setting's Python name (tools/benchmark.py spells it --shape)
    assert 'input_size H W' in str(e.value)


@pytest.mark.parametrize('tool_name', ['test.py', 'train.py'])
def test_checkpoint_problems_come_before_the_runner(demo, tmp_path,
                                                   tool_name):
    """A checkpoint that does not fit (test.py's CHECKPOINT, train.py's
    load_from) is one error line before mmengine's Runner prints its
    environment and config (hundreds of lines)."""
    path, _, _ = demo
    bad = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict={'backbone.stem.weight': torch.zeros(1)}),
               bad)
    if tool_name == 'test.py':
        proc = tool('test.py', path, bad)
    else:
        proc = tool('train.py', path, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', f'load_from={bad}')
    line = one_error_line(proc)
    assert 'does not fit the model of this config' in line, line
    out = proc.stdout + proc.stderr
    assert 'System environment' not in out and 'Config:' not in out, \
        out[:3000]
    assert len(out.splitlines()) < 15, out[:3000]
