"""The numpy test pipeline of tools/infer.py against mmseg's own
``inference_model`` on the fused checkpoint: the same label maps (99.99% of
the pixels whose top two logits are not a float-rounding tie) at each
image's own size, for a whole-image and a sliding-window config, on the
synthetic images and on a 600x900 photo-sized image; deployed fp32 files
(ONNX Runtime, OpenVINO; the default export, which takes any size under a
whole-image config) and the PyTorch path alike. A fixed-size file
(--fixed-shape) given an image a whole-image config resizes to another
size runs it resized to its size: the result says so and stays close."""
import os.path as osp

import cv2
import numpy as np
import pytest

from repseg.apis import init_model
from repseg.deploy import convert_checkpoint
from repseg.deploy.onnx import ExportSettings, export_model
from repseg.infer import InferSettings, Segmenter
from tests.utils import label_agreement, random_model

#: a pixel whose reference logits' top two differ by less than this share
#: of the largest logit is a tie float rounding may break either way
TIE = 1e-4


def _setup(root, tmp, name, options=None):
    path, train, cfg = random_model(root, tmp, name, options, seed=5)
    fused = str(tmp / f'{name}_fused.pth')
    convert_checkpoint(cfg, train, fused)
    files = {}
    for backend, suffix in (('onnxruntime', '.onnx'), ('openvino', '.xml')):
        files[backend] = str(tmp / f'{name}_{backend}{suffix}')
        export_model(cfg, fused, files[backend],
                     ExportSettings(backend=backend, verify=False))
    if not options:   # whole images: also a file of one size
        files['fixed'] = str(tmp / f'{name}_fixed.onnx')
        export_model(cfg, fused, files['fixed'],
                     ExportSettings(dynamic_shape=False, verify=False))
    return path, train, fused, files


@pytest.fixture(scope='module')
def images(synthetic_root, tmp_path_factory):
    """The synthetic val images and a 600x900 one made of one of them."""
    tmp = tmp_path_factory.mktemp('imgs')
    val = sorted(osp.join(d, f) for d, _, fs in __import__('os').walk(
        osp.join(synthetic_root, 'leftImg8bit', 'val')) for f in fs)
    big = str(tmp / 'photo_600x900.jpg')
    cv2.imwrite(big, cv2.resize(cv2.imread(val[0]), (900, 600)))
    return val[:3], big


@pytest.fixture(scope='module')
def whole(synthetic_root, tmp_path_factory):
    return _setup(synthetic_root, tmp_path_factory.mktemp('whole'), 'whole')


@pytest.fixture(scope='module')
def slide(synthetic_root, tmp_path_factory):
    return _setup(synthetic_root, tmp_path_factory.mktemp('slide'), 'slide',
                  {'model.test_cfg': dict(mode='slide', crop_size=(64, 64),
                                          stride=(43, 43))})


def _mmseg(config, fused, paths):
    """mmseg's inference_model on repseg's strict, fused init_model:
    (labels, logits) per image."""
    from mmseg.apis import inference_model
    model = init_model(config, fused)
    out = []
    for p in paths:
        r = inference_model(model, p)
        out.append((r.pred_sem_seg.data[0].numpy(),
                    r.seg_logits.data.numpy()))
    return out


def _ours(model, paths, tmp, checkpoint=None, config=None):
    seg = Segmenter(model, checkpoint, config,
                    InferSettings(keep_labels=True, quiet=True))
    res = list(seg(paths, str(tmp)))
    assert [r.status for r in res] == ['done'] * len(paths), res
    return res, seg


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_labels_agree_with_mmseg_inference_model(request, images, tmp_path,
                                                 mode):
    config, _, fused, files = request.getfixturevalue(mode)
    val, big = images
    paths = val + [big]
    refs = _mmseg(config, fused, paths)
    runs = {'pytorch': (config, fused, None)}
    runs.update({b: (f, None, None) for b, f in files.items()})
    for name, (model, ckpt, cfg) in runs.items():
        res, seg = _ours(model, paths, tmp_path / name, ckpt, cfg)
        for r, ref, p in zip(res, refs, paths):
            raw, clear = label_agreement(ref, r.labels, TIE)
            if p == big and name == 'fixed':
                # a fixed-size file: the resized photo (64x96) is resized
                # to the file's 64x128 and its logits back (random weights
                # are far more sensitive to it than trained ones)
                assert r.fit == 'resized'
                assert raw > 0.6, (name, raw)
                continue
            assert r.fit == 'exact', (name, p, r.fit)
            assert clear >= 0.9999, (name, p, raw, clear)
            assert raw >= 0.999, (name, p, raw, clear)
        # the label PNG is the label map
        png = cv2.imread(res[0].files['labels'], cv2.IMREAD_UNCHANGED)
        assert np.array_equal(png, res[0].labels)
