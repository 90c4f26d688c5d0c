"""PSPNet-RepVGG-D2se (SE in every block) through every tool, as a user
runs them: train (2 iterations on the synthetic data), test (training and
fused checkpoints), convert, export (ONNX and OpenVINO), quantize (OpenVINO
INT8, its argmax agreement reported) and benchmark."""
import json
import os.path as osp
import re

import pytest
import torch

from tests.tools.test_tools import run_tool
from tests.utils import CONFIG_DIR, small_cfg

pytestmark = pytest.mark.slow

CONFIG = osp.join(CONFIG_DIR, 'pspnet_repvgg_d2se_fast.py')


def _miou(text):
    found = re.findall(r'mIoU: ([0-9.]+)', text)
    assert found, text[-2000:]
    return float(found[-1])


@pytest.fixture(scope='module')
def trained(synthetic_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('d2se')
    cfg = small_cfg(CONFIG, synthetic_root, work / 'train', crop=64,
                    iters=2, val_interval=2)
    cfg.model.decode_head.channels = 32     # the head small, the backbone
    cfg.model.auxiliary_head.channels = 16  # the real D2se
    path = str(work / 'd2se.py')
    cfg.dump(path)
    run_tool('train.py', path, '--work-dir', str(work / 'train'))
    ckpt = str(work / 'train' / 'iter_2.pth')
    assert osp.isfile(ckpt)
    return path, work, ckpt


def test_d2se_through_test_convert_export_quantize_benchmark(trained):
    path, work, ckpt = trained
    sd = torch.load(ckpt, weights_only=True)['state_dict']
    assert any('.se_layer.conv1.conv.weight' in k for k in sd)
    out = run_tool('test.py', path, ckpt, '--work-dir', str(work / 't'))
    text = out.stdout + out.stderr
    assert 'evaluating the FUSED model' in text
    miou = _miou(text)

    fused = str(work / 'fused.pth')
    proc = run_tool('convert.py', path, ckpt, fused)
    assert 'argmax agreement = 100.0000%' in proc.stdout
    fsd = torch.load(fused, weights_only=True)['state_dict']
    assert any('branch_reparam' in k for k in fsd)
    assert any('.se_layer.' in k for k in fsd)   # the SE stays
    proc = run_tool('test.py', str(work / 'fused.py'), fused, '--work-dir',
                    str(work / 't2'))
    assert _miou(proc.stdout + proc.stderr) == pytest.approx(miou, abs=0.02)

    for suffix in ('onnx', 'xml'):
        f = str(work / f'model_{suffix}.{suffix}')
        run_tool('export.py', path, ckpt, f)
        proc = run_tool('test.py', path, f, '--work-dir',
                        str(work / f't_{suffix}'))
        assert _miou(proc.stdout + proc.stderr) == pytest.approx(
            miou, abs=0.05)

    q = work / 'q'
    proc = run_tool('quantize.py', path, ckpt, str(q), '--backend',
                    'openvino', '--calib-images', '2', '--repeat', '1')
    result = json.loads((q / 'quantize.json').read_text())
    runs = {r['name']: r for r in result['runs']}
    assert runs['openvino_int8']['precision_ran'] == 'int8'
    assert 0 < runs['openvino_int8']['argmax_agreement'] <= 1
    # the INT8 repair rescaled its pairs through the SEs, exactly: the
    # fp32 file after it still agrees with PyTorch
    assert result['equalization']['through_se'] > 40
    assert 'with a squeeze-and-excitation between' in proc.stdout
    assert runs['openvino_fp32']['argmax_agreement'] > 0.999

    bench = work / 'bench'
    run_tool('benchmark.py', path, ckpt, '--shape', '64', '128',
             '--repeat', '1', '--warmup', '0', '--iters', '1',
             '--out', str(bench))
    rows = json.loads((bench / 'benchmark.json').read_text())['rows']
    assert [r['name'] for r in rows] == ['d2se']
    assert rows[0]['runs']['fused']['img_per_s'] > 0
    assert rows[0]['params_m'] > 117.8   # the fused D2se backbone alone
