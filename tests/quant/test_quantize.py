"""Calibration data of tools/quantize.py: train-split images, through the
train pipeline by default, at the model's input size; 7-bit weights
(``reduce_range``) for CPUs without VNNI."""
import numpy as np
import pytest

from repseg.apis import UsageError
from repseg.deploy import build_fused
from repseg.deploy.runtimes import QuantOptions, get_runtime
from repseg.quant import (calibration_inputs, calibration_set, markdown,
                          split_train)
from tests.utils import CAN_MASK_ISA, DEMO_CONFIG, run_as_isa, small_cfg


def test_calibration_inputs(synthetic_root, tmp_path):
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp_path)
    model = build_fused(cfg, None)
    train = calibration_inputs(cfg, model, 3, (64, 128))
    test = calibration_inputs(cfg, model, 3, (64, 128), pipeline='test')
    assert [x.shape for x in train] == [(1, 3, 64, 128)] * 3
    assert [x.shape for x in test] == [(1, 3, 64, 128)] * 3
    # normalized like the model's preprocessor (ImageNet mean/std)
    assert all(abs(float(x.mean())) < 3 and x.dtype == np.float32
               for x in train)
    # the train pipeline's random scale/crop/distortion: other pixels than
    # the deterministic test pipeline on the same images
    assert any(not np.allclose(a, b) for a, b in zip(train, test))
    # the same seed gives the same inputs, random transforms included;
    # another seed other ones
    again = calibration_inputs(cfg, model, 3, (64, 128))
    assert all(np.array_equal(a, b) for a, b in zip(train, again))
    other = calibration_inputs(cfg, model, 3, (64, 128), seed=1)
    assert any(a.shape == b.shape and not np.array_equal(a, b)
               for a, b in zip(train, other))
    with pytest.raises(UsageError, match="'train' or 'test'"):
        calibration_inputs(cfg, model, 1, (64, 128), pipeline='val')
    with pytest.raises(UsageError, match='train split of the config holds 8'):
        calibration_inputs(cfg, model, 9, (64, 128))


def quantize_onnx(fp32, int8, inputs, reduce_range=False):
    return get_runtime('onnxruntime').quantize(
        fp32, int8, inputs,
        QuantOptions(runtime_options=dict(reduce_range=reduce_range)))


def test_calibration_never_uses_control_or_evaluation_images(
        synthetic_root, tmp_path):
    """Calibration draws from the train split minus the control set; the
    control set is train images too; neither holds a test image."""
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp_path)
    model = build_fused(cfg, None)
    pool, control = split_train(cfg, 3)
    assert (pool, control) == ([0, 1, 2, 3, 4], [5, 6, 7])
    _, files = calibration_set(cfg, model, 5, (64, 128), pool=pool)
    from repseg.quant.calibration import build_dataset, control_batches
    train = build_dataset(cfg.train_dataloader, [])
    test = build_dataset(cfg.test_dataloader, [])
    train_files = [train.get_data_info(i)['img_path'] for i in range(8)]
    test_files = {test.get_data_info(i)['img_path']
                  for i in range(len(test))}
    control_files = {b['data_samples'][0].img_path
                     for b in control_batches(cfg, control)}
    assert sorted(files) == sorted(train_files[:5])
    assert control_files == set(train_files[5:])
    assert not (set(files) | control_files) & test_files
    assert all('/train/' in f for f in files)
    with pytest.raises(UsageError, match='holds 5 for it \\(3 more are the '
                       'control set\\)'):
        calibration_set(cfg, model, 6, (64, 128), pool=pool)
    with pytest.raises(UsageError, match='hold out between 0 and 7'):
        split_train(cfg, 8)


def _conv_onnx(path):
    """Conv (16 -> 4 channels, 3x3, all weights equal and positive) + Relu:
    with a constant input every INT8 product is 255 * qmax, the case that
    saturates U8S8 kernels without VNNI."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = np.full((4, 16, 3, 3), 0.05, np.float32)
    w[1] *= -1
    graph = helper.make_graph(
        [helper.make_node('Conv', ['image', 'w'], ['c'], pads=[1] * 4),
         helper.make_node('Relu', ['c'], ['out'])], 'g',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT,
                                       [1, 16, 8, 8])],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, 'w')])
    onnx.save(helper.make_model(
        graph, opset_imports=[helper.make_opsetid('', 17)]), path)


def _int8_weights(path):
    import onnx
    from onnx import TensorProto, numpy_helper
    return [numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer
            if i.data_type == TensorProto.INT8 and len(i.dims) == 4]


@pytest.mark.parametrize('reduce_range, qmax', [(False, 127), (True, 64)])
def test_reduce_range_quantizes_weights_to_7_bits(tmp_path, reduce_range,
                                                  qmax):
    pytest.importorskip('onnxruntime')
    fp32, int8 = str(tmp_path / 'c.onnx'), str(tmp_path / 'q.onnx')
    _conv_onnx(fp32)
    inputs = [np.random.default_rng(i).random((1, 16, 8, 8), np.float32)
              for i in range(3)]
    quantize_onnx(fp32, int8, inputs, reduce_range=reduce_range)
    (w, ) = _int8_weights(int8)
    assert w.shape == (4, 16, 3, 3)
    assert np.abs(w).max() == qmax


CONV_RUN = r'''
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
np.save(sys.argv[2], s.run(None, {'image': np.ones((1, 16, 8, 8),
                                                    np.float32)})[0])
'''


@pytest.mark.slow
@pytest.mark.skipif(not CAN_MASK_ISA,
                    reason='needs AVX-512 VNNI and CPUID faulting')
def test_without_vnni_only_7_bit_weights_give_the_vnni_result(tmp_path):
    """The same INT8 model run with AVX2 kernels (tools/dev/cpu_isa.py
    --as avx2) and with VNNI: 8-bit weights saturate int16 pair sums on
    AVX2 and give another output; 7-bit weights give the VNNI output
    exactly."""
    import onnxruntime as ort
    fp32 = str(tmp_path / 'c.onnx')
    _conv_onnx(fp32)
    ones = [np.ones((1, 16, 8, 8), np.float32)]
    for reduce_range in (False, True):
        int8 = str(tmp_path / f'q{int(reduce_range)}.onnx')
        quantize_onnx(fp32, int8, ones, reduce_range=reduce_range)
        vnni = ort.InferenceSession(int8, providers=[
            'CPUExecutionProvider']).run(None, {'image': ones[0]})[0]
        out = str(tmp_path / f'avx2_{int(reduce_range)}.npy')
        proc = run_as_isa('avx2', 'python', '-c', CONV_RUN, int8, out)
        assert proc.returncode == 0, proc.stderr
        avx2 = np.load(out)
        if reduce_range:
            np.testing.assert_array_equal(avx2, vnni)
        else:
            # channel 0's sums saturate: far less than the exact value
            assert avx2[0, 0].max() < 0.75 * vnni[0, 0].max()


def saturation_note(isa, reduce_range):
    """ONNX Runtime's note for INT8 figures on a CPU of ``isa``."""
    notes = get_runtime('onnxruntime').notes(
        isa, QuantOptions(runtime_options=dict(reduce_range=reduce_range)))
    return notes[0] if notes else ''


def test_saturation_note_and_the_7_bit_row():
    masked = 'AVX2 (masked; hardware: AVX-512 VNNI BF16 AMX)'
    for isa in ('AVX2', 'AVX-512', masked):
        note = saturation_note(isa, reduce_range=False)
        assert f'this CPU ({isa}) has no VNNI' in note
        assert '--reduce-range' in note
        assert saturation_note(isa, reduce_range=True) == ''
    for isa in ('AVX-512 VNNI BF16 AMX', 'AVX2 VNNI'):
        assert saturation_note(isa, reduce_range=False) == ''
    metrics = dict(mIoU=30.0, mAcc=40.0, aAcc=80.0)

    def run(runtime, precision, seconds):
        return dict(name=f'{runtime}_{precision}', runtime=runtime,
                    precision=precision, precision_ran=precision,
                    metrics=metrics, per_class_iou=[], argmax_agreement=0.97,
                    seconds=seconds, float_layers=[])

    result = dict(runs=[run('pytorch', 'fp32', 0.2),
                        run('onnxruntime', 'fp32', 0.2),
                        run('onnxruntime', 'int8', 0.1)],
                  calibration=dict(images=4, method='minmax',
                                   pipeline='train', reduce_range=True),
                  evaluation=dict(images=8), input_size=[64, 64], threads=1,
                  cpu_isa='AVX2')
    table = markdown(result)
    assert '| ONNX Runtime INT8 (QDQ, per-channel, 7-bit weights, minmax) ' \
        '| int8 | 30.00 |' in table
    assert '| PyTorch fp32 (fused) | fp32 |' in table
    assert '| 2.00x |' in table     # 0.2 s / 0.1 s
    del result['calibration']['reduce_range']    # a json of an older run
    assert '| ONNX Runtime INT8 (QDQ, per-channel, minmax) |' in \
        markdown(result)


def test_a_tools_list_of_defaults_is_no_setting_of_another_runtime():
    """tools/quantize.py hands nargs options over as lists: the default
    ``--ignored-types MatMul`` with ONNX Runtime alone is not OpenVINO's
    setting given by hand; a non-default one is refused before any data."""
    from repseg.apis import QuantizeSettings
    ok = QuantizeSettings.of(dict(backends=['onnxruntime'],
                                  ignored_types=['MatMul']))
    assert [r.name for r in ok.check()] == ['onnxruntime']
    assert get_runtime('openvino').options_of(
        ok.quant_options).ignored_types == ('MatMul', )
    with pytest.raises(UsageError, match='ignored_types.*is a setting of '
                       'OpenVINO: add backend=.openvino.'):
        QuantizeSettings.of(dict(backends=['onnxruntime'],
                                 ignored_types=['Conv'])).check()
