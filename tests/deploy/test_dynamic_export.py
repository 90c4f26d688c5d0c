"""Dynamic-H/W export (tools/export.py --dynamic-shape): PSPNet's adaptive
pooling bins are computed from the input's shape inside the graph, so one
file runs every input size exactly as the config does. Pinned here: the
pooling in ONNX Runtime at sizes it was not traced at; the export of a
random-weight PSPNet on both runtimes (record without an input size,
verified at two sizes); tools/infer.py's label maps (the repseg.infer API)
from the dynamic fp32 files against mmseg's ``inference_model`` on the
fused checkpoint for photos of 333x517, 600x900 and 900x600 (whole-image
and sliding-window configs: 99.99% of the pixels that are no float tie,
99.9% of all); INT8 files of the dynamic export whose agreement with fp32
at other sizes is within a point of theirs at the export size, on the
same images (both configs); the tool
into a folder that does not exist yet."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from repseg.apis import init_model
from repseg.deploy import convert_checkpoint
from repseg.deploy.onnx import ExportSettings, export_model, to_onnx
from repseg.deploy.runtimes import QuantOptions, get_runtime, options_for
from repseg.infer import InferSettings, Segmenter
from repseg.reparam import REL_TOL
from tests.utils import ROOT, label_agreement, random_model

#: a pixel whose reference logits' top two differ by less than this share
#: of the largest logit is a tie float rounding may break either way (as
#: in tests/infer/test_agreement.py)
TIE = 1e-4
#: photos (W, H): under the shrunk demo config's test resize (128, 64)
#: they run at 64x99, 64x96 and 96x64, none of them the export size 64x128
PHOTOS = ((333, 517), (600, 900), (900, 600))
BACKENDS = (('onnxruntime', '.onnx'), ('openvino', '.xml'))


class _Pyramid(torch.nn.Module):
    """PSPNet's pooling pyramid without its convs: every scale pooled and
    resized back to the input's size, concatenated."""

    def __init__(self):
        super().__init__()
        self.pools = torch.nn.ModuleList(
            torch.nn.AdaptiveAvgPool2d(s) for s in (1, 2, 3, 6))

    def forward(self, x):
        outs = [x] + [torch.nn.functional.interpolate(
            pool(x), size=x.shape[-2:], mode='bilinear',
            align_corners=False) for pool in self.pools]
        return torch.cat(outs, 1)


def test_pyramid_pooling_is_exact_at_sizes_it_was_not_traced_at(tmp_path):
    """Traced at 16x32 (bins of 6 unequal), run at sizes whose bins are
    equal, unequal, or larger than the map: ONNX Runtime equals
    nn.AdaptiveAvgPool2d to float rounding; the bins come from the
    input's Shape, not from constants."""
    import onnx
    import onnxruntime as ort
    out = str(tmp_path / 'pyramid.onnx')
    to_onnx(_Pyramid(), torch.randn(1, 4, 16, 32), out, dynamic_shape=True)
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {'Shape', 'Range', 'MatMul'} <= ops, ops
    sess = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    for hw in ((16, 32), (13, 21), (90, 90), (5, 7), (37, 6)):
        x = torch.randn(2, 4, *hw)
        want = _Pyramid()(x).numpy()
        got = sess.run(None, {'image': x.numpy()})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), hw


def _photos(root, tmp):
    val = sorted(osp.join(d, f) for d, _, fs in os.walk(
        osp.join(root, 'leftImg8bit', 'val')) for f in fs)
    paths = []
    for i, (w, h) in enumerate(PHOTOS):
        p = str(tmp / f'photo_{w}x{h}.png')
        cv2.imwrite(p, cv2.resize(cv2.imread(val[i]), (w, h)))
        paths.append(p)
    return val[:2], paths


def _setup(root, tmp, name, options=None, verify=True):
    """Random-weight fused PSPNet-A0 (the shrunk demo config), its dynamic
    files on both runtimes (``verify``: against PyTorch at two sizes),
    mmseg's labels and logits of the photos and (with ``verify``) of two
    val images (which run at the export size)."""
    path, train, cfg = random_model(root, tmp, name, options, seed=5)
    fused = str(tmp / f'{name}_fused.pth')
    convert_checkpoint(cfg, train, fused)
    files, exports = {}, {}
    for backend, suffix in BACKENDS:
        files[backend] = str(tmp / f'{name}_{backend}{suffix}')
        exports[backend] = export_model(cfg, fused, files[backend],
                                        ExportSettings(backend=backend,
                                                       dynamic_shape=True,
                                                       verify=verify))
    val, photos = _photos(root, tmp)
    from mmseg.apis import inference_model
    model = init_model(path, fused)
    refs = {}
    for p in (val if verify else []) + photos:
        r = inference_model(model, p)
        refs[p] = (r.pred_sem_seg.data[0].numpy(), r.seg_logits.data.numpy())
    return dict(cfg=cfg, fused=fused, files=files, exports=exports,
                val=val, photos=photos, refs=refs)


@pytest.fixture(scope='module')
def whole(synthetic_root, tmp_path_factory):
    return _setup(synthetic_root, tmp_path_factory.mktemp('dyn_whole'),
                  'whole')


@pytest.fixture(scope='module')
def slide(synthetic_root, tmp_path_factory):
    return _setup(synthetic_root, tmp_path_factory.mktemp('dyn_slide'),
                  'slide', {'model.test_cfg': dict(
                      mode='slide', crop_size=(64, 64), stride=(43, 43))},
                  verify=False)


def _labels(model, paths, out):
    seg = Segmenter(model, settings=InferSettings(keep_labels=True,
                                                  quiet=True))
    res = list(seg(paths, str(out)))
    assert [r.status for r in res] == ['done'] * len(paths), res
    return res


def test_dynamic_export_on_both_runtimes(whole):
    """The files take any size: no input size in their record or their
    input, verified against PyTorch at the export size and another."""
    for backend, _ in BACKENDS:
        r = whole['exports'][backend]
        assert r['dynamic_shape'] and r['input_size'] == [64, 128]
        assert len(r['verify_sizes']) == 2
        assert r['verify_sizes'][1] != r['verify_sizes'][0]
        assert r['relative'] <= REL_TOL, (backend, r)
        assert r['argmax_agreement'] >= 0.9999, (backend, r)
        info = get_runtime(backend).read_info(whole['files'][backend])
        assert info.input_size is None
        assert info.record.input_size is None
        assert info.record.recipe.input_size is None
        spec = json.loads(open(r['spec']).read())
        assert spec['input']['height_width'] == 'any'


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_photos_of_any_size_agree_with_mmseg(request, tmp_path, mode):
    """Every photo runs at its own test-resized size ('exact'), with the
    labels of mmseg's inference_model."""
    s = request.getfixturevalue(mode)
    for backend, model in s['files'].items():
        res = _labels(model, s['photos'], tmp_path / backend)
        for r, p in zip(res, s['photos']):
            assert r.fit == 'exact', (backend, p)
            raw, clear = label_agreement(s['refs'][p], r.labels, TIE)
            assert clear >= 0.9999, (mode, backend, p, raw, clear)
            assert raw >= 0.999, (mode, backend, p, raw, clear)


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_int8_of_the_dynamic_file_at_other_sizes(request, tmp_path, mode):
    """INT8 of the dynamic files, calibrated at the export size: they take
    every size, and their labels' agreement with their fp32 file's at each
    photo size is within a point of theirs at the export size, on the same
    images (the val images, and each resized to the photo's size: content
    alone moves a random-weight model's agreement by 2 points). OpenVINO
    and ONNX Runtime keep the pooling products in float."""
    from repseg.deploy import build_fused
    from repseg.quant.calibration import calibration_set
    s = request.getfixturevalue(mode)
    cfg = s['cfg']
    size = (64, 128) if mode == 'whole' else (64, 64)
    inputs, _ = calibration_set(cfg, build_fused(cfg, s['fused']), 4, size)
    val = s['val']
    sets = {'export': val}
    for w, h in PHOTOS:
        sets[f'{w}x{h}'] = []
        for p in val:
            q = str(tmp_path / f'{w}x{h}_{osp.basename(p)}')
            cv2.imwrite(q, cv2.resize(cv2.imread(p), (w, h)))
            sets[f'{w}x{h}'].append(q)
    paths = [p for ps in sets.values() for p in ps]
    for backend, suffix in BACKENDS:
        rt = get_runtime(backend)
        out = str(tmp_path / f'int8_{backend}{suffix}')
        rt.quantize(s['files'][backend], out, inputs,
                    options_for(rt, QuantOptions()))
        info = rt.read_info(out)
        assert (info.precision, info.input_size) == ('int8', None)
        res = _labels(out, paths, tmp_path / backend)
        fp32 = _labels(s['files'][backend], paths, tmp_path / f'{backend}_fp')
        assert {r.fit for r in res} == {'exact'}
        same = iter([q.labels == f.labels for q, f in zip(res, fp32)])
        agree = {k: np.concatenate([next(same).ravel() for _ in ps]).mean()
                 for k, ps in sets.items()}
        for k, a in agree.items():
            assert a >= agree['export'] - 0.01, (mode, backend, agree)


@pytest.mark.slow
def test_export_tool_dynamic_openvino_into_a_new_folder(whole, tmp_path):
    """tools/export.py --dynamic-shape --backend openvino into a folder that
    does not exist: made, the IR takes any size, verified at two sizes."""
    out = tmp_path / 'new' / 'deeper' / 'model.xml'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'export.py'),
         whole['cfg'].filename, whole['fused'], str(out), '--backend',
         'openvino', '--dynamic-shape'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'dynamic H and W' in proc.stdout
    assert 'on 64x128 and 49x161 inputs' in proc.stdout, proc.stdout
    assert 'argmax agreement 100.0000%' in proc.stdout, proc.stdout
    assert out.is_file() and out.with_suffix('.bin').is_file()
    assert get_runtime('openvino').read_info(str(out)).input_size is None
    # no temporary folder left behind
    assert sorted(os.listdir(out.parent)) == ['model.bin', 'model.json',
                                              'model.xml']


def test_quantize_dynamic_shape_makes_files_of_any_size(whole, tmp_path):
    """repseg.apis.quantize (tools/quantize.py --dynamic-shape): calibrated
    at the export size, its files take any size and every row runs each
    test input at its own size (no resize to the files' size)."""
    from repseg.apis import QuantizeSettings, quantize
    from tests.utils import tool_module
    args = tool_module(osp.join(ROOT, 'tools', 'quantize.py')).build_parser(
    ).parse_args(['C', 'K', 'OUT', '--dynamic-shape'])
    assert QuantizeSettings.of(vars(args)).dynamic_shape
    result = quantize(whole['cfg'], whole['fused'], str(tmp_path / 'q'),
                      QuantizeSettings(dynamic_shape=True, calib_images=2,
                                       repeat=1, sensitivity_images=0,
                                       equalize='off'))
    assert result['dynamic_shape'] and result['input_size'] == [64, 128]
    assert any('take inputs of any size' in n for n in result['notes'])
    rt = get_runtime('onnxruntime')
    for key, precision in (('onnxruntime_fp32', 'fp32'),
                           ('onnxruntime_int8', 'int8')):
        info = rt.read_info(result['files'][key])
        assert (info.precision, info.input_size) == (precision, None)
    runs = {r['name']: r for r in result['runs']}
    # the pooling products stay in float (their bins depend on the size)
    assert any('MatMul' in n for n in runs['onnxruntime_int8'][
        'float_layers'])


@pytest.mark.parametrize('name', ['upernet_repvgg_b2',
                                  'deeplabv3plus_repvgg_b2'])
def test_other_decoders_export_with_a_dynamic_shape(name, tmp_path):
    """UPerNet (its PPM and its FPN's resizes to the next level's shape)
    and DeepLabV3+ (ASPP's image pool, the resize to the low-level
    features): exact at the export size and at another, in A0 form."""
    from repseg.apis import load_cfg
    from tests.deploy.test_decoders import _to_a0
    cfg = _to_a0(load_cfg(osp.join(ROOT, 'configs', f'{name}.py'),
                          cfg_options={'model.backbone.init_cfg': None}))
    r = export_model(cfg, None, str(tmp_path / 'm.onnx'), ExportSettings(
        input_size=(64, 96), dynamic_shape=True))
    assert r['verify_sizes'] == [[64, 96], [49, 121]]
    assert r['relative'] <= REL_TOL and r['argmax_agreement'] >= 0.9999, r


def test_exact_size_is_the_size_the_test_resize_gives():
    """repseg.infer.recipe.exact_size: (H, W) of the network input of a
    W x H photo (mmcv's rescale, then the padding to size_divisor), the
    size a fixed file must have to run it exactly."""
    from repseg.infer.predict import prepare
    from repseg.infer.recipe import Recipe, exact_size
    recipe = Recipe(scale=(2048, 1024))
    for w, h in ((333, 517), (600, 900), (900, 600), (2048, 1024)):
        x = prepare(np.zeros((h, w, 3), np.uint8), recipe)
        assert exact_size(recipe, w, h) == x.shape[-2:], (w, h)
    assert exact_size(Recipe(scale=(2048, 1024)), 600, 900) == (1536, 1024)
    assert exact_size(Recipe(size_divisor=32), 600, 900) == (928, 608)
