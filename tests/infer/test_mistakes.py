"""The mistakes a new user made on the way from a deployed file to labels,
each one ``error:`` line (or the right record) that says what to do."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from repseg.apis import QuantizeSettings, init_model, load_cfg, quantize
from repseg.deploy import convert_checkpoint
from repseg.deploy.onnx import ExportSettings, export_model
from repseg.errors import UsageError
from tests.utils import (CONFIG_DIR, DEMO_CONFIG, ROOT, one_error_line,
                         random_model, small_cfg)

pytestmark = pytest.mark.slow


def tool(name, *args):
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', name),
                           *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.fixture(scope='module')
def int8(synthetic_root, tmp_path_factory):
    """(config, checkpoint, INT8 .xml, INT8 .onnx) of the demo model,
    quantized as files of one size, 64x64 (the test loop runs 64x128)."""
    tmp = tmp_path_factory.mktemp('mistakes')
    path, ckpt, cfg = random_model(synthetic_root, tmp, 'demo')
    out = tmp / 'q'
    quantize(cfg, ckpt, str(out), QuantizeSettings(
        backends=('onnxruntime', 'openvino'), input_size=(64, 64),
        dynamic_shape=False, calib_images=2, repeat=1,
        sensitivity_images=0))
    return path, ckpt, str(out / 'model_int8.xml'), \
        str(out / 'model_int8.onnx'), out


def test_quantize_takes_a_size_and_describes_its_int8_files(int8):
    _, _, xml, onnx, out = int8
    spec = json.loads((out / 'model_int8.json').read_text())
    assert spec['precision'] == 'int8'
    assert spec['model']['input_size'] == [64, 64]
    assert len(spec['model']['recipe']['palette']) == 19
    assert spec['input']['height_width'] == [64, 64]


def test_a_deployed_file_given_to_init_model(int8):
    path, _, xml, _, _ = int8
    with pytest.raises(UsageError, match=r'is a deployed OpenVINO file, not '
                       'a PyTorch checkpoint: segment images with it '
                       r'through repseg.infer.Segmenter \(tools/infer.py'):
        init_model(path, xml)


def test_another_model_is_named_before_missing_data(int8, tmp_path):
    """An INT8 file of the demo model given with another model's config
    whose data root does not exist: the model mismatch is the line."""
    _, _, xml, _, _ = int8
    other = load_cfg(DEMO_CONFIG, cfg_options={
        'model.decode_head.num_classes': 5,
        'model.auxiliary_head.num_classes': 5,
        'test_dataloader.dataset.data_root': str(tmp_path / 'nowhere')})
    other_path = str(tmp_path / 'other.py')
    other.dump(other_path)
    line = one_error_line(tool('test.py', other_path, xml))
    assert 'RepVGG-A0 + PSPHead, 19 classes' in line, line
    assert 'builds RepVGG-A0 + PSPHead, 5 classes' in line, line


def test_an_int8_file_of_another_size_says_quantize_again(int8):
    path, _, _, onnx, _ = int8
    line = one_error_line(tool('test.py', path, onnx))
    assert 'takes 64x64 inputs, but the test loop of demo.py runs 64x128 ' \
        'ones: quantize it again at 64x128 (tools/quantize.py' in line, line
    assert '--shape 64 128' in line, line


def test_a_list_in_cfg_options_is_explained(int8):
    path, _, _, onnx, _ = int8
    line = one_error_line(tool(
        'test.py', path, onnx, '--cfg-options',
        'test_dataloader.dataset.pipeline.1.scale=[512,256]'))
    assert 'A list where mmseg wants a tuple' in line, line
    assert "scale='(512,256)'" in line, line
    assert '--shape' not in line and 'input_size' not in line, line


def test_a_repvgg_checkpoint_exported_with_the_qarepvgg_config(
        synthetic_root, tmp_path):
    """The fused forms of the two blocks are the same network: the export
    works and records what the checkpoint is (RepVGG), not the config's
    block; a RepVGG TRAINING checkpoint does not fit the QARepVGG config
    and is refused."""
    path, ckpt, cfg = random_model(synthetic_root, tmp_path, 'rep')
    fused = str(tmp_path / 'rep_fused.pth')
    convert_checkpoint(cfg, ckpt, fused)
    qa = small_cfg(osp.join(CONFIG_DIR, 'pspnet_qarepvgg_a0_synthetic.py'),
                   synthetic_root, tmp_path / 'wq')
    out = str(tmp_path / 'm.onnx')
    export_model(qa, fused, out, ExportSettings(verify=False))
    with open(out[:-5] + '.json') as f:
        record = json.load(f)['model']
    import onnx
    in_file = json.loads({p.key: p.value for p in onnx.load(
        out).metadata_props}['repseg'])
    assert in_file['block_type'] == 'repvgg'
    assert in_file['config_block_type'] == 'qarepvgg'
    assert record['block_type'] == 'qarepvgg'   # the config's description
    from repseg.errors import CheckpointError
    with pytest.raises(CheckpointError):
        export_model(qa, ckpt, str(tmp_path / 't.onnx'),
                     ExportSettings(verify=False))


def test_describing_a_model_reads_what_loading_it_reads(int8):
    """describe_network (the Ray driver's view: no compile, no build) gives
    the identity, recipe, record, input size and precision that
    load_network gives, for INT8 and fp32 files of both runtimes and for a
    config with its checkpoint; its network does not run."""
    from repseg.infer.network import describe_network, load_network
    path, ckpt, xml, onnx, out = int8
    cases = [(xml, None), (onnx, None), (str(out / 'model_fp32.xml'), None),
             (str(out / 'model_fp32.onnx'), None), (path, ckpt)]
    for model, checkpoint in cases:
        loaded = load_network(model, checkpoint)
        try:
            seen = describe_network(model, checkpoint)
            assert seen.identity == loaded.identity, model
            assert seen.recipe == loaded.recipe, model
            if checkpoint is None:
                a, b = seen.info, loaded.info
                assert (a.runtime, a.file, a.precision, a.record,
                        a.input_size) == (b.runtime, b.file, b.precision,
                                          b.record, b.input_size), model
                assert a.record and a.input_size == [64, 64]
        finally:
            loaded.close()
        with pytest.raises(RuntimeError, match='only described'):
            seen.run(None)
    assert {describe_network(m).info.precision for m in (xml, onnx)} == {
        'int8'}
    with pytest.raises(UsageError, match='does not exist'):
        describe_network(path, str(out / 'none.pth'))
