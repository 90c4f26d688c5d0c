"""Photos that do not fit a fixed-size file: the run's note names the
exact way (a file that takes any size) and the size the config's test
resize gives them, counted per size."""
import cv2
import numpy as np

from repseg.deploy.runtimes import RunInfo, RuntimeModel
from repseg.infer.engine import InferSettings, Network, Summary, plan, run
from repseg.infer.recipe import Recipe


def test_the_note_names_the_dynamic_export_and_the_exact_sizes(tmp_path):
    d = tmp_path / 'photos'
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in dict(a=(16, 24), b=(16, 24), c=(20, 20),
                             d=(32, 64)).items():
        cv2.imwrite(str(d / f'{name}.png'),
                    rng.integers(0, 255, (h, w, 3), np.uint8))
    recipe = Recipe(scale=(64, 32), keep_ratio=True, classes=['x', 'y'],
                    palette=[[0, 0, 0], [9, 9, 9]], input_size=(32, 64))
    net = Network(model=RuntimeModel(
        lambda x: np.zeros((1, 2) + x.shape[-2:], np.float32),
        RunInfo(runtime='onnxruntime')), recipe=recipe,
                  identity=dict(file='m.onnx'))
    settings = InferSettings(quiet=True)
    sources, total = plan([str(d)], settings)
    summary = Summary()
    results = list(run(net, sources, total, str(tmp_path / 'out'), settings,
                       summary))
    # mmcv's rescale to fit (64, 32): 24x16 -> 48x32, 20x20 -> 32x32;
    # 64x32 is the file's size (exact)
    assert [r.fit for r in results] == ['resized', 'resized', 'resized',
                                        'exact']
    assert summary.exact_sizes == {'32x48': 2, '32x32': 1}
    note = summary.lines()[1]
    assert note.startswith('3 image(s) did not fit'), note
    assert '--dynamic-shape' in note and '32x48 (2), 32x32 (1)' in note
