"""Quantization-aware fine-tuning (issue 38): on a tiny model whose INT8
post-training files lose many pixels of fp32's labels, a short QAT
recovers them on both runtimes; a QAT run killed after its first
checkpoint resumes and ends where an uninterrupted run ends; the QAT
files run without the training stack, say they are QAT files, and
tools/test.py refuses one for another config.

The model: the shrunk demo A0 (random weights, every conv scaled to unit
output variance on random inputs so that activations have a trained
model's scale, logits to a magnitude of 10) with near-dead channels and
their huge identity taps planted (RepVGG's INT8 failure mode,
:func:`repseg.testing.plant_dead_channels_`) and no equalization; its
train labels are its own fp32 label maps, so it fits its data as a trained
model does and fine-tuning aims at fp32's labels."""
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from repseg import reparameterize_model
from repseg.deploy import build_segmentor
from repseg.deploy.build import SegForward
from repseg.deploy.onnx import to_onnx
from repseg.deploy.record import qat_record, record_of
from repseg.deploy.runtimes import get_runtime
from repseg.quant.calibration import _batch, build_dataset, calibration_set
from repseg.testing import plant_dead_channels_
from tests.utils import DEMO_CONFIG, ROOT, load_cfg, one_error_line, small_cfg

pytest.importorskip('nncf')

RUNTIMES = ('onnxruntime', 'openvino')
SIZE = (64, 128)
#: the short QAT of the tests (iterations, learning rate, checkpoints)
ITERS, LR, EVERY = 20, 1e-3, 5
HERE = osp.dirname(osp.abspath(__file__))


def _unit_variance_(model) -> None:
    """Scale each conv of the fused ``model`` (in the order they run) so
    that its output has unit variance on random inputs."""
    fwd = SegForward(model)
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(5))
    for conv in [m for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d)]:
        out = []
        handle = conv.register_forward_hook(lambda m, i, o: out.append(o))
        with torch.no_grad():
            fwd(x)
        handle.remove()
        if out:
            with torch.no_grad():
                std = float(out[0].std()) or 1.0
                conv.weight.div_(std)
                conv.bias.div_(std)


def _planted_model(cfg):
    """The fused planted model (see the module's text)."""
    torch.manual_seed(0)
    model = reparameterize_model(build_segmentor(cfg)).eval()
    _unit_variance_(model)
    assert plant_dead_channels_(model, alive=0.02) == 64
    with torch.no_grad():
        peak = float(SegForward(model)(torch.randn(1, 3, *SIZE)).abs().max())
        model.decode_head.conv_seg.weight.mul_(10 / peak)
        model.decode_head.conv_seg.bias.mul_(10 / peak)
    return model


def _test_inputs(cfg, model, loader):
    """(normalized input, data sample) of every image of ``loader``
    through the test pipeline."""
    ds = build_dataset(loader, cfg.test_dataloader.dataset.pipeline)
    return [(model.data_preprocessor(_batch(s), False)['inputs'].float(),
             s['data_samples']) for s in (ds[i] for i in range(len(ds)))]


def _relabel(cfg, model):
    """Write the model's own fp32 label maps as the train labels."""
    fwd = SegForward(model)
    with torch.no_grad():
        for x, sample in _test_inputs(cfg, model, cfg.train_dataloader):
            labels = fwd(x).argmax(1)[0].numpy().astype(np.uint8)
            h, w = sample.ori_shape
            cv2.imwrite(sample.seg_map_path, cv2.resize(
                labels, (w, h), interpolation=cv2.INTER_NEAREST))


@pytest.fixture(scope='module')
def tiny(synthetic_root, tmp_path_factory):
    """(cfg, config file, planted model, calibration inputs, evaluation
    inputs, folder) on a private copy of the synthetic data."""
    tmp = tmp_path_factory.mktemp('qat')
    root = str(tmp / 'data')
    shutil.copytree(synthetic_root, root)
    cfg = small_cfg(DEMO_CONFIG, root, tmp / 'w')
    cfg.test_pipeline = cfg.test_dataloader.dataset.pipeline
    path = str(tmp / 'tiny.py')
    cfg.dump(path)
    cfg = load_cfg(path)
    model = _planted_model(cfg)
    _relabel(cfg, model)
    calib, _ = calibration_set(cfg, model, 4, SIZE)
    evals = [x for x, _ in _test_inputs(cfg, model, cfg.val_dataloader)]
    return cfg, path, model, calib, evals, tmp


def _agreement(model, evals, run) -> float:
    """Argmax agreement (%) of ``run`` (numpy in, logits out) with the
    model's fp32 labels on the evaluation inputs."""
    same = []
    with torch.no_grad():
        for x in evals:
            ref = SegForward(model)(x).argmax(1).numpy()
            same.append((run(x.numpy()).argmax(1) == ref).mean())
    return 100 * float(np.mean(same))


def _job(work_dir, **kw):
    from repseg.quant.qat import QatJob
    return QatJob(iters=ITERS, work_dir=str(work_dir), lr=LR, seed=0,
                  checkpoint_interval=EVERY, **kw)


@pytest.fixture(scope='module')
def made(tiny):
    """Both runtimes' post-training and QAT files of the tiny model, the
    QAT result and its record."""
    from repseg.quant.qat import export_qat, fine_tune
    cfg, path, model, calib, evals, tmp = tiny
    onnx = to_onnx(SegForward(model), torch.from_numpy(calib[0]),
                   str(tmp / 'fp32.onnx'), dynamic_shape=True)
    files = {}
    for name in RUNTIMES:
        rt = get_runtime(name)
        fp32 = rt.from_onnx(onnx, str(tmp / f'fp32{rt.suffix}'))
        files[name, 'ptq'] = rt.quantize(fp32, str(tmp / f'ptq{rt.suffix}'),
                                         calib)['file']
    result = fine_tune(cfg, model, calib, _job(tmp / 'qat'))
    record = qat_record(record_of(cfg, None), str(tmp / 'tiny.pth'),
                        result.iters, result.lr, result.seed)
    qdq = export_qat(result.net, str(tmp / 'qat.qdq.onnx'),
                     torch.from_numpy(calib[0]), True, record.to_dict())
    for name in RUNTIMES:
        rt = get_runtime(name)
        files[name, 'qat'] = rt.from_onnx(qdq, str(tmp / f'qat{rt.suffix}'))
    return files, result, record


def test_qat_recovers_what_post_training_int8_loses(tiny, made):
    """Post-training INT8 of the planted model loses >= 3 points of
    argmax agreement with fp32 on both runtimes; the short QAT gets back
    >= 2 of them against the post-training file of the same quantizer
    placement (OpenVINO's: NNCF's; ONNX Runtime's ``quantize_static``
    places fewer quantizers, and its file is compared in quantize's
    control-set check instead), and both runtimes' QAT files run the
    fine-tuned network (they agree with it, and beat the network before
    fine-tuning by >= 2 points)."""
    cfg, path, model, calib, evals, tmp = tiny
    files, result, _ = made
    assert result.iters == ITERS and result.ran == ITERS
    from repseg.quant.qat import QatJob, qat_model
    start = qat_model(model, calib, QatJob(iters=1, work_dir=''))
    with torch.no_grad():
        net = _agreement(model, evals,
                         lambda x: result.net(torch.from_numpy(x)).numpy())
        before = _agreement(model, evals,
                            lambda x: start(torch.from_numpy(x)).numpy())
    for name in RUNTIMES:
        rt = get_runtime(name)
        ptq = _agreement(model, evals, rt.load(files[name, 'ptq'], 'int8'))
        loaded = rt.load(files[name, 'qat'], 'int8')
        assert loaded.info.precision == 'int8'
        assert loaded.info.record.qat['iterations'] == ITERS
        qat = _agreement(model, evals, loaded)
        seen = (name, dict(ptq=ptq, qat=qat, net=net, before=before))
        assert ptq <= 97.0, seen
        # the runtimes' integer arithmetic rounds a little otherwise than
        # the simulation (this random model has small margins)
        assert abs(qat - net) <= 2.0, seen
        assert qat >= before + 2.0, seen
        if name == 'openvino':    # the same placement
            assert qat >= ptq + 2.0, seen


KILLED = r'''
import sys, json, torch
torch.set_num_threads(int(sys.argv[3]))
from tests.quant.test_qat import _resume_run
_resume_run(sys.argv[1], sys.argv[2])
'''


def _resume_run(folder: str, work_dir: str) -> None:
    """(In a subprocess) the module's QAT job on the tiny model of
    ``folder`` (its config and inputs saved by the test) in
    ``work_dir``; writes the final state to ``work_dir/final.pt``."""
    from mmseg.utils import register_all_modules

    import repseg  # noqa: F401
    from repseg.quant.qat import fine_tune
    register_all_modules(init_default_scope=True)
    cfg = load_cfg(osp.join(folder, 'tiny.py'))
    model = _planted_model(cfg)
    calib = list(np.load(osp.join(folder, 'calib.npy')))
    result = fine_tune(cfg, model, calib, _job(work_dir))
    torch.save(dict(state=result.net.state_dict(),
                    resumed_at=result.resumed_at),
               osp.join(work_dir, 'final.pt'))


def _labels(net, evals):
    with torch.no_grad():
        return [net(x).argmax(1) for x in evals]


def test_qat_resumes_after_a_kill(tiny, made):
    """A QAT run SIGKILLed after its first checkpoint, started again,
    resumes there (mmengine's resume) and ends with the weights,
    quantizer parameters and label maps of the uninterrupted run of the
    same job and seed (the module's)."""
    cfg, path, model, calib, evals, tmp = tiny
    _, result, _ = made
    np.save(tmp / 'calib.npy', np.stack(calib))
    work = tmp / 'killed'
    work.mkdir()
    cmd = [sys.executable, '-c', KILLED, str(tmp), str(work),
           str(torch.get_num_threads())]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (work / f'iter_{EVERY}.pth').exists() or \
            not (work / 'last_checkpoint').exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, 'no checkpoint in 300 s'
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (work / 'final.pt').exists()      # it died mid-run
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    final = torch.load(work / 'final.pt')
    assert EVERY <= final['resumed_at'] < ITERS, final['resumed_at']
    want = result.net.state_dict()
    assert set(final['state']) == set(want)
    quantizer_keys = [k for k in want if 'nncf_hooks' in k]
    assert quantizer_keys and any(k.endswith('scale') for k in
                                  quantizer_keys)
    for key, value in want.items():
        torch.testing.assert_close(final['state'][key], value, rtol=0,
                                   atol=1e-6, msg=key)
    from repseg.quant.qat import QatJob, qat_model
    resumed = qat_model(model, calib, QatJob(iters=1, work_dir=''))
    resumed.load_state_dict(final['state'])
    for a, b in zip(_labels(resumed.eval(), evals),
                    _labels(result.net, evals)):
        assert torch.equal(a, b)


BARE = osp.join(ROOT, 'tests', 'infer', 'without_training_stack.py')


def _tool(name, *args, bare=False):
    tool = osp.join(ROOT, 'tools', name)
    cmd = [sys.executable] + ([BARE] if bare else []) + [tool, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.mark.slow
def test_qat_files_run_torch_free_and_belong_to_their_config(
        tiny, made, tmp_path):
    """Both QAT files say they are QAT files (the record: checkpoint,
    iterations, lr, seed) where torch and the OpenMMLab stack cannot be
    imported, tools/infer.py runs them there, and tools/test.py refuses a
    QAT file for another config with one line."""
    cfg, path, model, calib, evals, tmp = tiny
    files, result, record = made
    probe = tmp_path / 'probe.py'
    probe.write_text(
        'import json, sys\n'
        'from repseg.deploy.runtimes import get_runtime\n'
        'out = {}\n'
        'for name, f in zip(sys.argv[1::2], sys.argv[2::2]):\n'
        '    m = get_runtime(name).load(f)\n'
        '    out[name] = [m.info.precision, m.info.record.qat]\n'
        'print(json.dumps(out))\n')
    args = [a for name in RUNTIMES for a in (name, files[name, 'qat'])]
    proc = subprocess.run([sys.executable, BARE, str(probe), *args],
                          capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in RUNTIMES:
        precision, qat = seen[name]
        assert precision == 'int8'
        assert qat == record.qat
        assert (qat['checkpoint'], qat['iterations'], qat['lr'],
                qat['seed']) == ('tiny.pth', ITERS, LR, 0)
    images = tmp_path / 'images'
    images.mkdir()
    src = osp.join(cfg.val_dataloader.dataset.data_root,
                   cfg.val_dataloader.dataset.data_prefix.img_path)
    first = sorted(os.listdir(osp.join(src, os.listdir(src)[0])))[0]
    shutil.copy(osp.join(src, os.listdir(src)[0], first), images / 'a.png')
    for name in RUNTIMES:
        out = tmp_path / f'out_{name}'
        proc = _tool('infer.py', str(images), '--model', files[name, 'qat'],
                     '--out', str(out), '--quiet', bare=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / 'labels' / 'a.png').exists()
    other = small_cfg(DEMO_CONFIG, cfg.val_dataloader.dataset.data_root,
                      tmp_path / 'w', cfg_options={
                          'model.decode_head.num_classes': 5,
                          'model.auxiliary_head.num_classes': 5})
    other_path = str(tmp_path / 'other.py')
    other.dump(other_path)
    line = one_error_line(_tool('test.py', other_path, files['openvino',
                                                             'qat']))
    assert 'is RepVGG-A0 + PSPHead, 19 classes (exported from tiny.py)' \
        in line, line
    assert 'other.py builds RepVGG-A0 + PSPHead, 5 classes' in line, line
