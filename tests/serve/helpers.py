"""What the service's tests share: a real uvicorn server on a free port
of 127.0.0.1 in a thread (``running``), networks that answer at once,
wait on an Event, sleep or fail (``fake_network``), and the check of a
refusal (``one_json_error``)."""
import contextlib
import json
import socket
import threading
import time

import numpy as np

from repseg.deploy.runtimes import RunInfo, RuntimeModel
from repseg.infer.job import Network
from repseg.infer.recipe import Recipe
from repseg.serve.service import Service
from repseg.serve.settings import ServeSettings

CLASSES = ['ground', 'thing', 'sky']
PALETTE = [[128, 64, 128], [220, 20, 60], [70, 130, 180]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fake_network(requests=1, gate=None, sleep=0.0, fail=False):
    """A 3-class network: class 1 where the red channel is brightest. After
    its first call (the service's warm-up) it waits for ``gate`` (a
    threading.Event, at most 60 s), sleeps ``sleep`` s, or raises
    (``fail``); ``entered`` counts its calls after the first."""
    calls = dict(entered=-1)

    def run(x):
        calls['entered'] += 1
        if not calls['entered']:
            pass
        elif fail:
            raise RuntimeError('planted failure in the network')
        elif gate is not None:
            gate.wait(60)
        elif sleep:
            time.sleep(sleep)
        out = np.zeros((1, 3) + x.shape[2:], np.float32)
        out[0, 1] = x[0, 0] - x[0, 1]
        return out

    net = Network(model=RuntimeModel(run, RunInfo(
                      runtime='fake', file='fake.bin', requests=requests)),
                  recipe=Recipe(classes=CLASSES, palette=PALETTE),
                  identity=dict(file='fake.bin'))
    return net, calls


def fake_service(net, **settings) -> Service:
    return Service(ServeSettings(**settings), lambda: net)


@contextlib.contextmanager
def running(service: Service, wait_ready=True):
    """``service`` served by uvicorn in a thread on a free port; yields
    its base URL; stopped (gracefully) on leaving."""
    import uvicorn

    from repseg.serve.app import create_app
    from repseg.serve.server import uvicorn_config
    service.settings.port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(service),
                                           service.settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, \
            'the server did not start'
        time.sleep(0.02)
    if wait_ready:
        assert service.ready.wait(60), service.error
    try:
        yield f'http://127.0.0.1:{service.settings.port}'
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), 'the server did not stop'


def one_json_error(response, status: int) -> dict:
    """``response`` is a refusal with ``status``: one JSON line naming the
    status and the request id it carries in X-Request-ID, no traceback."""
    assert response.status_code == status, (response.status_code,
                                            response.text[:500])
    assert response.headers['content-type'] == 'application/json'
    text = response.text
    assert text.count('\n') == 1 and text.endswith('\n'), text
    assert 'Traceback' not in text
    body = json.loads(text)
    assert set(body) == {'error', 'status', 'request_id'}, body
    assert body['status'] == status and body['error'], body
    assert body['request_id'] == response.headers['x-request-id']
    return body


def wait_for(condition, seconds=30, what='the condition'):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f'{what} did not happen ' \
            f'within {seconds} s'
        time.sleep(0.01)
