"""Run a model file from many threads at once, as the inference pipeline
and a service do (``python concurrent_calls.py MODEL RUNTIME``): the first
calls start together (``model(x)``, ``argmax`` and ``submit`` mixed), then
every thread makes many more; each result must equal the same input's
result computed alone afterwards. Prints 'ok'; a hang ends the process
through faulthandler (every thread's stack on standard error, exit 1)."""
import faulthandler
import sys
import threading

import numpy as np

THREADS, CALLS, LOADS = 8, 12, 4


def main(path: str, runtime_name: str, limit: float = 20.0) -> None:
    # the watchdog covers loading and the calls, not the imports (slow on
    # a loaded machine: they once took 10 s in a busy suite run)
    import importlib
    from repseg.deploy.runtimes import get_runtime
    for name in ('onnx', 'onnxruntime', 'openvino'):   # imported, not used
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    faulthandler.dump_traceback_later(limit, exit=True)
    # frequent GIL switches: a thread that first uses the bindings is
    # interrupted where a race can bite (the threads' real work does this
    # less often, only under load)
    sys.setswitchinterval(1e-6)
    runtime = get_runtime(runtime_name)
    extra = dict(labels=True) if runtime.argmax_in_graph else {}
    # several loads of the file (as several models in one service): more
    # threads make their first call at the same moment
    models = [runtime.load(path, None, 2, 'throughput', **extra)
              for _ in range(LOADS)]
    model = models[0]
    h, w = model.info.input_size
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((THREADS, CALLS, 1, 3, h, w)).astype(
        np.float32)
    results = {}
    start = threading.Barrier(THREADS)

    def calls(k):
        start.wait()
        model = models[k % LOADS]
        for i in range(CALLS):
            x = inputs[k, i]
            how = (k + i) % 3
            if how == 0:
                out = model(x).argmax(1)
            elif how == 1:
                out = model.argmax(x)
            else:
                out = model.submit(x).result().argmax(1)
            results[k, i] = out

    threads = [threading.Thread(target=calls, args=(k, ))
               for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.setswitchinterval(0.005)
    for (k, i), out in results.items():
        alone = model(inputs[k, i]).argmax(1)
        assert np.array_equal(out, alone), (k, i)
    assert len(results) == THREADS * CALLS
    for m in models:
        m.close()
    faulthandler.cancel_dump_traceback_later()
    print('ok')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
