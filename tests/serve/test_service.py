"""The service on a real model file (a random-weight demo ONNX): every
endpoint, label maps byte-identical to what tools/infer.py writes (the
same ``repseg.apis.infer`` path), each bad input refused with one JSON
line and the service still serving, the API key."""
import os.path as osp

import cv2
import httpx
import numpy as np
import pytest

from repseg.apis import InferSettings, infer
from repseg.serve.server import model_service
from repseg.serve.settings import API_KEY_ENV, ServeSettings
from tests.serve.helpers import one_json_error, running
from tests.utils import random_onnx

MAX_BODY, MAX_PIXELS = 300_000, 500_000


@pytest.fixture(scope='module')
def model(synthetic_root, tmp_path_factory):
    return random_onnx(synthetic_root, tmp_path_factory.mktemp('serve'))[2]


@pytest.fixture(scope='module')
def images(synthetic_root, tmp_path_factory):
    """name -> file: a PNG, a JPEG of another size, a grey PNG, a BGRA
    PNG (as a user's files)."""
    d = tmp_path_factory.mktemp('serve_images')
    src = osp.join(synthetic_root, 'leftImg8bit', 'val', 'frankfurt',
                   'frankfurt_000000_000019_leftImg8bit.png')
    img = cv2.imread(src)
    bgra = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = 90
    files = dict(a='a.png', b='b.jpg', grey='grey.png', alpha='alpha.png')
    cv2.imwrite(str(d / 'a.png'), img)
    cv2.imwrite(str(d / 'b.jpg'), cv2.resize(img, (300, 170)))
    cv2.imwrite(str(d / 'grey.png'), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / 'alpha.png'), bgra)
    return {k: str(d / v) for k, v in files.items()}


@pytest.fixture(scope='module')
def reference(model, images, tmp_path_factory):
    """name -> the label PNG's bytes tools/infer.py writes."""
    out = tmp_path_factory.mktemp('serve_ref')
    seg = infer(sorted(images.values()), model, str(out),
                settings=InferSettings(quiet=True))
    assert seg.summary.done == len(images), seg.summary.lines()
    return {k: (out / 'labels' / (osp.splitext(osp.basename(f))[0]
                                  + '.png')).read_bytes()
            for k, f in images.items()}


@pytest.fixture(scope='module')
def url(model):
    service = model_service(model, settings=ServeSettings(
        max_body=MAX_BODY, max_pixels=MAX_PIXELS, threads=1))
    with running(service) as base:
        yield base


@pytest.fixture(scope='module')
def client(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


def post(client, data, kind='image/png', **params):
    return client.post('/segment', content=data, params=params,
                       headers={'Content-Type': kind})


def read(path):
    with open(path, 'rb') as f:
        return f.read()


@pytest.mark.parametrize('name', ['a', 'b', 'grey', 'alpha'])
def test_labels_are_the_bytes_infer_writes(client, images, reference, name):
    kind = 'image/jpeg' if images[name].endswith('.jpg') else 'image/png'
    r = post(client, read(images[name]), kind)
    assert r.status_code == 200, r.text
    assert r.headers['content-type'] == 'image/png'
    assert r.content == reference[name]
    # the same through a multipart form
    r = client.post('/segment', files=dict(
        image=('x.png', read(images[name]), kind)))
    assert r.status_code == 200 and r.content == reference[name]


def test_overlay_and_json(client, images, reference):
    data = read(images['b'])
    r = post(client, data, 'image/jpeg', output='overlay')
    assert r.status_code == 200 and r.headers['content-type'] == 'image/png'
    over = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert over.shape == (170, 300, 3)
    r = post(client, data, 'image/jpeg', output='json')
    assert r.status_code == 200, r.text
    body = r.json()
    labels = cv2.imdecode(np.frombuffer(reference['b'], np.uint8),
                          cv2.IMREAD_UNCHANGED)
    assert (body['height'], body['width']) == labels.shape == (170, 300)
    assert len(body['classes']) == 19 and body['classes'][0] == 'road'
    want = np.bincount(labels.ravel(), minlength=19) / labels.size
    assert np.allclose([body['shares'][c] for c in body['classes']], want)
    assert body['model']['file'] == 'm.onnx'
    assert body['model']['backbone'].startswith('RepVGG')
    assert 0 < body['seconds'] < 60


def test_probes_model_metrics_and_openapi(client):
    assert client.get('/health').json() == {'status': 'ok'}
    assert client.get('/ready').json() == {'status': 'ready'}
    m = client.get('/model').json()
    assert m['classes'][:2] == ['road', 'sidewalk'] and len(m['palette']) == 19
    assert m['precision'] == 'fp32' and m['file'] == 'm.onnx'
    assert m['decoder'] and m['record']['backbone'] == m['backbone']
    assert m['queue'] == 2 * m['requests']
    api = client.get('/openapi.json').json()
    assert {'/segment', '/health', '/ready', '/metrics', '/model'} <= \
        set(api['paths'])
    assert client.get('/docs').status_code == 200
    before = client.get('/metrics').text
    post(client, b'', 'image/png')
    text = client.get('/metrics').text
    assert client.get('/metrics').headers['content-type'].startswith(
        'text/plain; version=0.0.4')

    def value(text, line):
        hit = [ln for ln in text.splitlines() if ln.startswith(line + ' ')]
        return float(hit[0].split()[-1]) if hit else 0.0
    failed = 'repseg_serve_images_failed_total{status="400"}'
    assert value(text, failed) == value(before, failed) + 1
    bad = 'repseg_serve_requests_total{path="/segment",status="400"}'
    assert value(text, bad) == value(before, bad) + 1
    count = 'repseg_serve_segment_seconds_count'
    assert value(text, count) == value(before, count) + 1
    assert value(text, 'repseg_serve_segment_seconds_bucket{le="+Inf"}') \
        == value(text, count)
    for gauge in ('repseg_serve_in_flight', 'repseg_serve_queue_depth'):
        assert f'# TYPE {gauge} gauge' in text and value(text, gauge) == 0


def _png(img):
    return cv2.imencode('.png', img)[1].tobytes()


def _video(tmp_path):
    path = str(tmp_path / 'v.mp4')
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 5, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    return read(path)


def _bad_inputs(tmp_path):
    """(what, body, content type, status, words of the message)."""
    big = _png(np.random.default_rng(0).integers(0, 255, (600, 600, 3),
                                                 dtype=np.uint8))
    assert len(big) > MAX_BODY
    bomb = _png(np.zeros((1000, 1000, 3), np.uint8))   # 1 M pixels, ~4 KB
    assert len(bomb) < MAX_BODY
    noise = np.random.default_rng(2).integers(0, 255, (120, 160, 3),
                                              dtype=np.uint8)
    good, jpg = _png(noise), cv2.imencode('.jpg', noise)[1]
    return [
        ('empty', b'', 'image/png', 400, 'empty'),
        ('not an image', b'hello, world' * 10, 'image/png', 415,
         'not an image'),
        ('wrong type', good, 'text/plain', 415, 'Content-Type'),
        ('form-encoded', good, 'application/x-www-form-urlencoded', 415,
         'image/png'),
        ('too large', big, 'image/png', 413, 'bytes'),
        ('too many pixels', bomb, 'image/png', 413, '1000x1000'),
        ('truncated png', good[:len(good) // 2], 'image/png', 400,
         'truncated'),
        ('truncated jpeg', jpg.tobytes()[:len(jpg) // 2], 'image/jpeg', 400,
         'truncated'),
        ('video', _video(tmp_path), 'video/mp4', 415, 'video'),
        ('video as bytes', _video(tmp_path), 'application/octet-stream', 415,
         'not an image'),
    ]


def test_each_bad_input_is_one_json_line_and_the_next_is_served(
        client, images, tmp_path, monkeypatch):
    decoded = []
    imdecode = cv2.imdecode

    def counting(buf, flags):   # the server runs in this process
        decoded.append(len(buf))
        return imdecode(buf, flags)
    monkeypatch.setattr(cv2, 'imdecode', counting)
    good = read(images['a'])
    for what, data, kind, status, words in _bad_inputs(tmp_path):
        decoded.clear()
        r = post(client, data, kind)
        body = one_json_error(r, status)
        assert words in body['error'], (what, body)
        if what == 'too many pixels':   # refused before decoding
            assert decoded == [], what
        assert post(client, good).status_code == 200, what


def test_a_body_over_the_limit_is_refused_while_streaming(client):
    """No Content-Length (chunked): counted as it comes, refused past the
    limit (a valid image, so only the count refuses it)."""
    big = _png(np.random.default_rng(1).integers(0, 255, (600, 600, 3),
                                                 dtype=np.uint8))

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    r = client.post('/segment', content=chunks(),
                    headers={'Content-Type': 'image/png'})
    assert 'content-length' not in r.request.headers
    one_json_error(r, 413)


def test_a_content_length_over_the_limit_is_refused_before_the_body(url):
    """The 413 comes while the body is still unsent (a server reading it
    first would wait for it: the socket's time limit fails the test)."""
    import socket
    host, port = url.rsplit('/', 1)[-1].split(':')
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b'POST /segment HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Type: image/png\r\nContent-Length: '
                     + str(10**9).encode() + b'\r\n\r\n\x89PNG')
        head = b''
        while b'}\n' not in head:
            more = sock.recv(65536)
            if not more:
                break
            head += more
        head = head.decode('latin-1')
    assert head.startswith('HTTP/1.1 413 '), head
    assert '"status": 413' in head


def test_forms_and_parameters_refused(client, images):
    form = {'Content-Type': 'multipart/form-data; boundary=x'}
    r = client.post('/segment', headers=form, content=(
        b'--x\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
        b'hello\r\n--x--\r\n'))
    assert 'no file' in one_json_error(r, 400)['error']
    r = client.post('/segment', content=b'--x\r\n\r\n--x--\r\n',
                    headers=form)
    assert 'multipart' in one_json_error(r, 400)['error']
    r = post(client, read(images['a']), output='labelz')
    assert 'output' in one_json_error(r, 422)['error']
    one_json_error(client.get('/nowhere'), 404)
    one_json_error(client.get('/segment'), 405)
    r = client.get('/health', headers={'X-Request-ID': 'my-id.1'})
    assert r.headers['x-request-id'] == 'my-id.1'


def test_the_api_key(model, images, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, 'from-env')
    assert ServeSettings().key() == 'from-env'
    assert ServeSettings(api_key='given').key() == 'given'
    monkeypatch.delenv(API_KEY_ENV)
    assert ServeSettings().key() is None
    service = model_service(model, settings=ServeSettings(api_key='s3cret',
                                                          threads=1))
    good = read(images['a'])
    with running(service) as base, httpx.Client(base_url=base,
                                                timeout=60) as c:
        for headers in ({}, {'Authorization': 'Bearer wrong'},
                        {'X-API-Key': 's3cre'}, {'Authorization': 's3cret'}):
            r = c.post('/segment', content=good, headers={
                'Content-Type': 'image/png', **headers})
            assert r.headers['www-authenticate'] == 'Bearer'
            one_json_error(r, 401)
            one_json_error(c.get('/model', headers=headers), 401)
        assert c.get('/health').status_code == 200
        assert c.get('/ready').status_code == 200
        for headers in ({'Authorization': 'Bearer s3cret'},
                        {'X-API-Key': 's3cret'}):
            r = c.post('/segment', content=good, headers={
                'Content-Type': 'image/png', **headers})
            assert r.status_code == 200, r.text
            assert c.get('/model', headers=headers).status_code == 200
