"""The stall watchdog's test double: a network that never returns for a
white image (and returns at once for any other), importable by a test and
by the Ray actors it starts; and a folder of three small images, the
second white."""
import os
import os.path as osp
import sys
import threading
import time

import cv2
import numpy as np

from repseg.deploy.runtimes import RunInfo, RuntimeModel
from repseg.errors import StalledError
from repseg.infer.job import Network
from repseg.infer.outputs import DONE
from repseg.infer.recipe import Recipe

#: what the watchdog's message must name (runtime, precision, file)
INFO = dict(runtime='onnxruntime', file='m_int8.onnx', precision='int8',
            mode='throughput', requests=2)


def network(settings=None, release: threading.Event = None) -> Network:
    """The network (``settings`` ignored: the shape of ``load(settings)``
    a Ray executor calls in each actor); a white image waits for
    ``release`` (a new event, never set, by default)."""
    release = release or threading.Event()

    def run(x):
        if x[0, 0, 0, 0] > 0:   # the white image (the others are black)
            release.wait()
        return np.zeros((1, 2) + x.shape[-2:], np.float32)

    return Network(model=RuntimeModel(run, RunInfo(**INFO)), identity=dict(
        file='m_int8.onnx'), recipe=Recipe(classes=['x', 'y'], palette=[
            [0, 0, 0], [255, 255, 255]]))


def torch_free_network(settings=None) -> Network:
    """:func:`network`, loaded where neither torch nor mmseg was imported
    (a Ray actor of a deployed file imports repseg without them)."""
    loaded = [m for m in ('torch', 'mmseg') if m in sys.modules]
    assert not loaded, f'the actor imported {loaded}'
    return network(settings)


def folder(path) -> str:
    """A new folder ``path`` of ``a.png`` (black), ``b.png`` (white, never
    finishes) and ``c.png`` (black)."""
    os.makedirs(path)
    for name, value in (('a', 0), ('b', 255), ('c', 0)):
        cv2.imwrite(osp.join(path, f'{name}.png'),
                    np.full((16, 24, 3), value, np.uint8))
    return str(path)


def stall(whole_run, deadline: float) -> tuple:
    """(the StalledError ``whole_run()`` ended with, seconds it took), run
    on a thread: a run still going after ``deadline`` s fails the test (it
    waited for the stuck image)."""
    caught = []

    def target():
        try:
            whole_run()
        except Exception as e:  # noqa: B902
            caught.append(e)

    start = time.perf_counter()
    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    runner.join(deadline)
    assert not runner.is_alive(), 'the run waited for the stuck image'
    assert len(caught) == 1 and isinstance(caught[0], StalledError), caught
    return caught[0], time.perf_counter() - start


def names_the_image(message: str) -> None:
    """The stall's one line names the image, the runtime, its precision
    and file, and the setting to raise."""
    assert 'b.png' in message and 'ONNX Runtime' in message, message
    assert 'int8' in message and 'm_int8.onnx' in message, message
    assert 'stall_timeout=' in message, message


def finished_stays_finished(out: str) -> None:
    """``a`` (before the stuck image) is done and listed, ``b`` not."""
    with open(osp.join(out, DONE)) as f:
        done = f.read().split()
    assert 'a' in done and 'b' not in done, done
    assert osp.isfile(osp.join(out, 'labels', 'a.png'))
