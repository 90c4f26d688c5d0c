"""tools/train.py, tools/test.py (training and fused checkpoints) and
tools/convert.py, run as a user runs them."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from tests.utils import (CAN_MASK_ISA, DEMO_CONFIG, ROOT, run_as_isa,
                         small_cfg)

# tools run as subprocesses, as users run them (CI runs them all)
pytestmark = pytest.mark.slow

TOOLS = osp.join(ROOT, 'tools')


def run_tool(name, *args, check=True):
    proc = subprocess.run([sys.executable, osp.join(TOOLS, name), *args],
                          capture_output=True, text=True, cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def small_config(synthetic_root, tmp_path_factory):
    """The demo config shrunk for a quick run, dumped as a file a user
    would pass to the tools."""
    work = tmp_path_factory.mktemp('tools')
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, work / 'train', crop=64,
                    iters=2, val_interval=2)
    path = str(work / 'small_config.py')
    cfg.dump(path)
    return path, work


@pytest.fixture(scope='module')
def trained(small_config):
    path, work = small_config
    proc = run_tool('train.py', path, '--work-dir', str(work / 'train'))
    ckpt = str(work / 'train' / 'iter_2.pth')
    assert osp.isfile(ckpt), proc.stderr[-2000:]
    # what repseg writes is readable by the safe loader (torch 2.13 default)
    meta = torch.load(ckpt, weights_only=True)
    assert 'message_hub' in meta and 'optimizer' in meta
    return path, work, ckpt


def _miou(output):
    found = re.findall(r'mIoU: ([0-9.]+)', output)
    assert found, output[-2000:]
    return float(found[-1])


def test_train_refuses_to_overwrite_a_run(trained):
    path, work, ckpt = trained
    mtime = os.path.getmtime(ckpt)
    proc = run_tool('train.py', path, '--work-dir', str(work / 'train'),
                    check=False)
    assert proc.returncode != 0
    assert 'already holds' in proc.stderr and '--resume' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert os.path.getmtime(ckpt) == mtime


def test_train_missing_dataset_is_a_clear_error(small_config, tmp_path):
    path, _ = small_config
    proc = run_tool('train.py', path, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options',
                    f'train_dataloader.dataset.data_root={tmp_path}/none',
                    check=False)
    assert proc.returncode != 0
    assert 'does not exist' in proc.stderr and 'data/README.md' in \
        proc.stderr
    assert 'Traceback' not in proc.stderr


def test_train_missing_pretrained_is_a_clear_error(synthetic_root, tmp_path):
    """configs/pspnet_repvgg_b2.py asks for ImageNet weights that are not
    there: a clear message before any work, not a failure deep in init."""
    proc = run_tool(
        'train.py', osp.join(ROOT, 'configs', 'pspnet_repvgg_b2.py'),
        '--work-dir', str(tmp_path / 'w'), '--cfg-options',
        f'train_dataloader.dataset.data_root={synthetic_root}',
        f'val_dataloader.dataset.data_root={synthetic_root}', check=False)
    assert proc.returncode != 0
    assert ("'checkpoints/RepVGG-B2-train.pth', which does not exist"
            in proc.stderr)
    assert 'model.backbone.init_cfg=None' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_test_tool_on_training_and_fused_checkpoints(trained, tmp_path):
    path, work, ckpt = trained
    # 1. a training checkpoint: fused by the hook for evaluation
    proc = run_tool('test.py', path, ckpt, '--work-dir', str(tmp_path / 't'),
                    '--show-dir', str(tmp_path / 'vis'))
    out = proc.stdout + proc.stderr
    assert 'Loaded a TRAINING checkpoint' in out
    assert 'evaluating the FUSED model' in out
    assert 'max |fused - unfused|' in out
    miou_training = _miou(out)
    pngs = [osp.join(d, f) for d, _, fs in os.walk(tmp_path / 'vis')
            for f in fs if f.endswith('.png')]
    assert pngs, 'no overlays written by --show-dir'
    # annotated: every class colour of the legend is in the image
    import cv2
    from mmseg.datasets import CityscapesDataset
    colours = {tuple(c) for c in cv2.imread(pngs[0])[..., ::-1].reshape(
        -1, 3)}
    assert all(tuple(c) in colours
               for c in CityscapesDataset.METAINFO['palette'])

    # 2. convert it to a fused deploy checkpoint (+ deploy config)
    fused = str(tmp_path / 'fused.pth')
    proc = run_tool('convert.py', path, ckpt, fused, '--shape', '65', '71')
    assert 'argmax agreement = 100.0000%' in proc.stdout
    assert osp.getsize(fused) < osp.getsize(ckpt)
    sd = torch.load(fused, weights_only=True)['state_dict']
    assert any('branch_reparam' in k for k in sd)
    assert not any('branch_3x3' in k or '.bn.' in k for k in sd)
    deploy_cfg = str(tmp_path / 'fused.py')
    assert Config.fromfile(deploy_cfg).model.backbone.deploy is True
    # refuses to overwrite
    proc = run_tool('convert.py', path, ckpt, fused, check=False)
    assert proc.returncode != 0 and '--force' in proc.stderr

    # 3. the fused checkpoint with the deploy config: same metrics
    proc = run_tool('test.py', deploy_cfg, fused, '--work-dir',
                    str(tmp_path / 't2'))
    out = proc.stdout + proc.stderr
    assert 'Loaded a FUSED checkpoint' in out
    assert 'already fused' in out
    assert 'run NNPACK Winograd' in out       # --conv-impl auto on the CPU
    # ... and what ran: at 128x64 no conv passes the size policy
    ran = re.search(r'NNPACK ran in (\d+) of (\d+) eligible convs', out)
    assert ran and int(ran.group(2)) > 0 and int(ran.group(1)) == 0, out
    assert 'Training continues' not in out
    assert _miou(out) == pytest.approx(miou_training, abs=0.02)
    # ... and with PyTorch's own convs
    proc = run_tool('test.py', deploy_cfg, fused, '--work-dir',
                    str(tmp_path / 't3'), '--conv-impl', 'native')
    out = proc.stdout + proc.stderr
    assert 'evaluating it as it is' in out
    assert 'NNPACK Winograd' not in out
    assert _miou(out) == pytest.approx(miou_training, abs=0.02)


def test_test_tool_missing_checkpoint(small_config, tmp_path):
    path, _ = small_config
    proc = run_tool('test.py', path, str(tmp_path / 'none.pth'), check=False)
    assert proc.returncode != 0
    assert 'does not exist' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_dist_test_two_processes_equals_one(trained, tmp_path):
    """tools/dist_test.sh with 2 gloo processes, for a training and a fused
    checkpoint: the same mIoU as single-process tools/test.py."""
    path, work, ckpt = trained
    fused = str(tmp_path / 'fused.pth')
    run_tool('convert.py', path, ckpt, fused, '--shape', '64', '64')
    deploy_cfg = str(tmp_path / 'fused.py')
    single = _miou(run_tool('test.py', path, ckpt, '--work-dir',
                            str(tmp_path / 's')).stdout)
    for i, (cfg, weights) in enumerate(((path, ckpt), (deploy_cfg, fused))):
        # no PORT: one node rendezvous on a port the launcher binds itself
        env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable)
        env.pop('PORT', None)
        proc = subprocess.run(
            ['bash', osp.join(TOOLS, 'dist_test.sh'), cfg, weights, '2',
             '--work-dir', str(tmp_path / f'd{i}')], capture_output=True,
            text=True, cwd=ROOT, env=env, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert 'GPU number: 2' in out            # two ranks really ran
        assert _miou(out) == pytest.approx(single, abs=1e-6), out[-3000:]


@pytest.mark.parametrize('options,message', [
    (['model.backbone.arch=B9'], "Unknown RepVGG arch 'B9'"),
    (['model.backbone.dilation_mode=fats'], "Unknown dilation_mode 'fats'"),
    (['model.decode_head.in_channels=2048'], 'expects 2048 channels'),
])
def test_config_typos_are_one_error_line(small_config, tmp_path, options,
                                         message):
    path, _ = small_config
    proc = run_tool('train.py', path, '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', *options, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
    assert 'Traceback' not in proc.stderr
    # no config dump, no log flood before the message
    assert len((proc.stdout + proc.stderr).splitlines()) < 15, proc.stdout


def test_amp_on_cpu_is_refused(small_config, tmp_path):
    path, _ = small_config
    proc = run_tool('train.py', path, '--work-dir', str(tmp_path / 'w'),
                    '--amp', check=False)
    assert proc.returncode != 0
    assert 'error: automatic mixed precision (--amp) needs a CUDA GPU' in \
        proc.stderr
    assert 'Traceback' not in proc.stderr


def test_resume_without_a_run_is_refused(small_config, tmp_path):
    path, _ = small_config
    for work in (tmp_path / 'missing', tmp_path):   # absent, and empty
        proc = run_tool('train.py', path, '--work-dir', str(work),
                        '--resume', check=False)
        assert proc.returncode != 0
        assert 'error: nothing to resume' in proc.stderr
        assert str(work) in proc.stderr
        assert 'Traceback' not in proc.stderr
    assert not list(tmp_path.glob('**/*.pth'))


def test_relative_data_root_names_the_current_folder(small_config, tmp_path):
    path, _ = small_config
    proc = subprocess.run(
        [sys.executable, osp.join(TOOLS, 'train.py'), path, '--work-dir',
         str(tmp_path / 'w'), '--cfg-options',
         'train_dataloader.dataset.data_root=data/synthetic_cityscapes'],
        capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode != 0
    assert f'relative to the current folder {tmp_path}' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_ctrl_c_says_how_to_resume(small_config, tmp_path):
    """SIGINT during training: one line with the resume command.

    Deterministic on a loaded machine: the signal is sent once a state is
    reached (the first checkpoint file exists), not at a moment read from
    a block-buffered pipe, and the run is far too long to end before it.
    """
    import signal
    import time
    path, _ = small_config
    work = tmp_path / 'w'
    out_f, err_f = tmp_path / 'out.txt', tmp_path / 'err.txt'
    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONFAULTHANDLER='1')
    with open(out_f, 'w') as out, open(err_f, 'w') as err:
        proc = subprocess.Popen(
            [sys.executable, osp.join(TOOLS, 'train.py'), path,
             '--work-dir', str(work), '--cfg-options',
             'train_cfg.max_iters=1000000',
             'default_hooks.checkpoint.interval=1'],
            stdout=out, stderr=err, cwd=ROOT, env=env,
            # a terminal's ctrl-c: SIGINT at its default disposition (a
            # background job of a non-interactive shell, as CI may run the
            # suite, inherits SIGINT ignored, and Python then never raises
            # KeyboardInterrupt)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 600
            while not list(work.glob('iter_*.pth')):
                assert proc.poll() is None, err_f.read_text()[-3000:]
                assert time.monotonic() < deadline, 'no checkpoint in 600 s'
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                # where it hangs: faulthandler dumps every thread on SIGABRT
                proc.send_signal(signal.SIGABRT)
                proc.wait(timeout=60)
                pytest.fail('still running 300 s after SIGINT:\n'
                            + err_f.read_text()[-6000:])
        finally:
            proc.kill()
    err = err_f.read_text()
    assert proc.returncode != 0
    assert 'error: training interrupted at iteration' in err, err[-3000:]
    assert f'--work-dir {work} --resume' in err
    assert 'Traceback' not in err
    assert list(work.glob('iter_*.pth'))


def test_demo_offers_the_resume_it_suggests():
    proc = run_tool('demo.py', '--help')
    assert '--resume' in proc.stdout


def test_corrupt_image_outside_the_checked_sample(tmp_path, synthetic_root):
    """A corrupt image that the pre-flight check did not read (it samples
    large datasets; here it is skipped): training stops with the file's
    name and the command that checks every file, not a DataLoader
    traceback."""
    import shutil

    from repseg.apis import train
    from repseg.datasets import DatasetError
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    imgs = sorted(root.glob('leftImg8bit/train/*/*.png'))
    for img in imgs:
        img.write_bytes(b'not a png')
    cfg = small_cfg(DEMO_CONFIG, str(root), tmp_path / 'w', crop=64,
                    iters=2)
    with pytest.raises(DatasetError) as e:
        train(cfg, check=False)
    msg = str(e.value)
    assert re.search(r'cannot decode the image \S+leftImg8bit/train/\S+png',
                     msg), msg
    assert f'tools/check_dataset.py {root} --all' in msg


class _Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint
    does): it creates the file named in ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.fixture
def evil_checkpoint(trained, tmp_path):
    """A real training checkpoint plus an object whose unpickling runs
    code."""
    _, _, ckpt = trained
    marker = tmp_path / 'PAYLOAD_RAN'
    data = torch.load(ckpt, weights_only=True)
    data['meta']['evil'] = _Payload(str(marker))
    path = str(tmp_path / 'evil.pth')
    torch.save(data, path)
    return path, marker


def _refused(proc, marker):
    assert proc.returncode != 0
    assert 'unpickling can run arbitrary code' in proc.stderr, \
        proc.stderr[-3000:]
    assert '--unsafe-load' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not marker.exists(), 'the payload ran'


def test_unsafe_checkpoint_refused_on_every_path(trained, evil_checkpoint,
                                                 tmp_path):
    path, work, ckpt = trained
    evil, marker = evil_checkpoint
    _refused(run_tool('test.py', path, evil, '--work-dir',
                      str(tmp_path / 't'), check=False), marker)
    _refused(run_tool('convert.py', path, evil, str(tmp_path / 'f.pth'),
                      check=False), marker)
    _refused(run_tool('export.py', path, evil,
                      str(tmp_path / 'f.onnx'), check=False), marker)
    _refused(run_tool('quantize.py', path, evil, str(tmp_path / 'q'),
                      check=False), marker)
    _refused(run_tool('train.py', path, '--work-dir', str(tmp_path / 'l'),
                      '--cfg-options', f'load_from={evil}', check=False),
             marker)
    # --resume of a work dir whose newest checkpoint is the evil one
    resume_dir = tmp_path / 'r'
    resume_dir.mkdir()
    import shutil
    shutil.copy(evil, resume_dir / 'iter_2.pth')
    (resume_dir / 'last_checkpoint').write_text(str(resume_dir /
                                                    'iter_2.pth'))
    _refused(run_tool('train.py', path, '--work-dir', str(resume_dir),
                      '--resume', check=False), marker)
    # the pretrained backbone
    _refused(run_tool('train.py', path, '--work-dir', str(tmp_path / 'p'),
                      '--cfg-options', f'model.backbone.pretrained={evil}',
                      check=False), marker)
    # with --unsafe-load the user takes responsibility: it loads
    proc = run_tool('test.py', path, evil, '--work-dir', str(tmp_path / 'u'),
                    '--unsafe-load', check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert marker.exists()


def test_pretrained_download_without_network(small_config, tmp_path,
                                             synthetic_root, monkeypatch):
    """mmseg's ResNet configs download 'open-mmlab://resnet50_v1c'; without
    network: one UsageError that says what to do."""
    from urllib.error import URLError

    import mmengine.runner.checkpoint as ckpt_module

    from repseg.apis import UsageError, train

    def offline(*args, **kwargs):
        raise URLError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(ckpt_module, 'load_url', offline)
    cfg = small_cfg(osp.join(ROOT, 'configs', 'pspnet_r50-d8.py'),
                    synthetic_root, tmp_path / 'w', crop=64, iters=1,
                    cfg_options={'model.backbone.depth': 18,
                                 'model.decode_head.in_channels': 512,
                                 'model.decode_head.channels': 16,
                                 'model.auxiliary_head.in_channels': 256,
                                 'model.auxiliary_head.channels': 16})
    cfg.model.pretrained = 'open-mmlab://resnet18_v1c'
    with pytest.raises(UsageError) as e:
        train(cfg)
    assert 'downloading pretrained weights failed' in str(e.value)
    # the setting in Python, and as tools/train.py spells it
    assert "cfg_options={'model.pretrained': None}" in str(e.value)
    assert '--cfg-options model.pretrained=None' in e.value.render(
        {'cfg_options': '--cfg-options'})


def test_quantize_tool_int8_model_evaluated_and_timed(trained, tmp_path):
    """tools/quantize.py with both runtimes and accuracy control: static
    INT8 QDQ (ONNX Runtime, per-channel weights) and NNCF INT8 (OpenVINO)
    next to PyTorch fp32 and each runtime's fp32, evaluated on the test set
    in one pass (each runtime's fp32 gives the PyTorch fused model's
    mIoU), timed side by side, files written; the control set is held out
    of calibration and the drop on it is within --max-drop; every exported
    file evaluates with tools/test.py like a checkpoint."""
    import json

    import onnx
    path, work, ckpt = trained
    out = tmp_path / 'q'
    proc = run_tool('quantize.py', path, ckpt, str(out),
                    '--backend', 'onnxruntime', 'openvino',
                    '--calib-images', '4', '--control-images', '2',
                    '--max-drop', '0.5', '--repeat', '1')
    assert '| ONNX Runtime INT8 (QDQ, per-channel, minmax) | int8 |' in \
        proc.stdout
    assert '| OpenVINO INT8 (NNCF, performance preset, minmax, accuracy ' \
        'control <= 0.5 mIoU) | int8 |' in proc.stdout
    result = json.loads((out / 'quantize.json').read_text())
    runs = {r['name']: r for r in result['runs']}
    assert {'pytorch_fp32', 'onnxruntime_fp32', 'onnxruntime_int8',
            'openvino_fp32', 'openvino_int8'} <= set(runs)
    for name, r in runs.items():
        assert set(r['metrics']) == {'mIoU', 'mAcc', 'aAcc'}
        assert r['precision_ran'] == r['precision'], name
        assert len(r['per_class_iou']) == 19 and r['seconds'] > 0
    ref = runs['pytorch_fp32']['metrics']['mIoU']
    for name in ('onnxruntime_fp32', 'openvino_fp32'):
        assert runs[name]['metrics']['mIoU'] == pytest.approx(ref, abs=0.02)
        assert runs[name]['argmax_agreement'] > 0.999
    c = result['calibration']
    assert (c['images'], c['split'], c['pipeline']) == (4, 'train', 'train')
    # the INT8 repair ran (default --equalize activation: exact, so the
    # runtimes' fp32 rows above still agree with PyTorch) and the report
    # lists the ten most sensitive layers
    eq = result['equalization']
    assert eq['method'] == 'activation' and eq['pairs'] > 10
    assert 'Equalization (activation): ' in proc.stdout
    assert len(result['sensitivity']) == 10
    assert 'Layers whose INT8 quantization alone costs most' in proc.stdout
    # control set: 2 train images, none calibrated on, none evaluated
    ac = result['accuracy_control']
    assert len(ac['control_files']) == 2
    assert not set(ac['control_files']) & set(c['files'])
    assert all('/train/' in f for f in ac['control_files'] + c['files'])
    assert ac['control_drop'] <= 0.5 + 1e-6
    assert ac['evaluation_drop'] == pytest.approx(
        runs['openvino_fp32']['metrics']['mIoU'] -
        runs['openvino_int8']['metrics']['mIoU'])
    assert 'Accuracy control (OpenVINO, max drop 0.5 mIoU) on the control ' \
        'set, 2 train images held out' in proc.stdout
    assert result['cpu_isa'] in proc.stdout
    ops = {n.op_type for n in onnx.load(str(out / 'model_int8.onnx'))
           .graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    # per-channel: the weight scales are vectors
    inits = {i.name: i for i in onnx.load(str(out / 'model_int8.onnx'))
             .graph.initializer}
    scales = [i for n, i in inits.items() if n.endswith('_scale')
              and len(i.dims) == 1 and i.dims[0] > 1]
    assert scales
    assert (out / 'model_int8.bin').is_file()
    assert (out / 'per_class_iou.png').read_bytes()[:4] == b'\x89PNG'
    # the same mIoU as PyTorch's fused model evaluated by tools/test.py
    miou = _miou(run_tool('test.py', path, ckpt, '--work-dir',
                          str(tmp_path / 't')).stdout)
    assert ref == pytest.approx(miou, abs=0.02)
    # every exported file (fp32 or INT8, ONNX or IR) evaluates with
    # tools/test.py
    for name, f in (('onnxruntime_fp32', 'model_fp32.onnx'),
                    ('onnxruntime_int8', 'model_int8.onnx'),
                    ('openvino_int8', 'model_int8.xml')):
        proc = run_tool('test.py', path, str(out / f), '--work-dir',
                        str(tmp_path / name))
        assert ('OpenVINO' if 'xml' in f else 'ONNX Runtime') in \
            proc.stdout + proc.stderr
        assert _miou(proc.stdout + proc.stderr) == pytest.approx(
            runs[name]['metrics']['mIoU'], abs=0.02)
    # refuses to overwrite; too many calibration images is one error
    proc = run_tool('quantize.py', path, ckpt, str(out), check=False)
    assert proc.returncode != 0 and '--force' in proc.stderr
    proc = run_tool('quantize.py', path, ckpt, str(tmp_path / 'x'),
                    '--calib-images', '500', check=False)
    assert proc.returncode != 0
    assert 'calibration asks for 500 images but the train split' in \
        proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.skipif(not CAN_MASK_ISA,
                    reason='needs AVX-512 VNNI and CPUID faulting')
def test_quantize_with_7_bit_weights_on_an_avx2_cpu(trained, tmp_path):
    """tools/quantize.py --reduce-range, run as on an AVX2 CPU
    (tools/dev/cpu_isa.py --as avx2): 7-bit weights in the INT8 model, the
    run's record says so and names the masked ISA; no saturation note."""
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper
    path, _, ckpt = trained
    out = tmp_path / 'q7'
    proc = run_as_isa('avx2', sys.executable,
                      osp.join(ROOT, 'tools', 'quantize.py'), path, ckpt,
                      str(out), '--calib-images', '4',
                      '--repeat', '1', '--reduce-range')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '| ONNX Runtime INT8 (QDQ, per-channel, 7-bit weights, minmax) ' \
        '| int8 |' in proc.stdout
    assert 'has no VNNI' not in proc.stdout + proc.stderr
    result = json.loads((out / 'quantize.json').read_text())
    assert result['calibration']['reduce_range'] is True
    assert result['cpu_isa'].startswith('AVX2 (masked; hardware: AVX-512')
    weights = [numpy_helper.to_array(i) for i in
               onnx.load(str(out / 'model_int8.onnx')).graph.initializer
               if i.data_type == TensorProto.INT8 and len(i.dims) == 4]
    assert weights and max(int(np.abs(w).max()) for w in weights) == 64


def test_quantize_without_onnxruntime_is_one_error(trained, tmp_path,
                                                   monkeypatch):
    from repseg.apis import load_cfg, quantize
    from repseg.errors import BackendError
    path, _, ckpt = trained
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(BackendError, match='pip install'):
        quantize(load_cfg(path), ckpt, str(tmp_path / 'q'))


def test_quantize_refuses_a_model_that_did_not_fuse(trained, tmp_path,
                                                    monkeypatch):
    """INT8 of a model whose blocks stay multi-branch (here: a block whose
    switch_to_deploy does nothing) is one NotFusedError, before anything is
    exported or written."""
    from repseg.apis import load_cfg, quantize
    from repseg.errors import NotFusedError
    from repseg.models.repvgg import RepVGGBlock
    path, _, ckpt = trained
    monkeypatch.setattr(RepVGGBlock, 'switch_to_deploy', lambda self: None)
    out = tmp_path / 'q'
    with pytest.raises(NotFusedError, match=r"not fully fused: 22 "
                       r"multi-branch .*'backbone.stem'"):
        quantize(load_cfg(path), ckpt, str(out))
    assert not out.exists() or not any(out.iterdir())


def test_test_tta_on_the_fused_model(trained, tmp_path):
    """--tta as in mmseg (the config's tta_pipeline and SegTTAModel) on the
    fused model; its mIoU is its own, not the plain test's."""
    path, work, ckpt = trained
    plain = _miou(run_tool('test.py', path, ckpt, '--work-dir',
                           str(tmp_path / 'p')).stdout)
    proc = run_tool('test.py', path, ckpt, '--tta', '--work-dir',
                    str(tmp_path / 't'))
    out = proc.stdout + proc.stderr
    assert 'evaluating the FUSED model' in out
    assert 'max |fused - unfused|' in out
    assert _miou(out) != plain


def test_test_show_and_tta_say_what_they_need(trained, tmp_path):
    path, work, ckpt = trained
    env_cmd = [sys.executable, osp.join(TOOLS, 'test.py'), path, ckpt,
               '--show']
    env = {k: v for k, v in os.environ.items()
           if k not in ('DISPLAY', 'WAYLAND_DISPLAY')}
    proc = subprocess.run(env_cmd, capture_output=True, text=True, cwd=ROOT,
                          env=env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: --show opens a window') and \
        '--show-dir DIR' in last, proc.stderr[-2000:]
    proc = run_tool('test.py', path, ckpt, '--tta', '--cfg-options',
                    'tta_pipeline=None', check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --tta needs the config's tta_pipeline"), \
        proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
