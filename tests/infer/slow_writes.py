"""Run a tool with every binary file write split in two halves 20 ms
apart (``python slow_writes.py TOOL ARGS...``): a SIGKILL then very likely
lands inside a write, so a test can tell atomic writes (a temporary file,
renamed into place) from writes in place."""
import builtins
import os
import runpy
import sys
import time

_open = builtins.open


class _SlowFile:

    def __init__(self, f):
        self._f = f

    def write(self, data):
        half = len(data) // 2
        n = self._f.write(data[:half])
        self._f.flush()
        time.sleep(0.02)
        return n + self._f.write(data[half:])

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _slow_open(file, mode='r', *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    return _SlowFile(f) if 'b' in mode and 'w' in mode else f


if __name__ == '__main__':
    builtins.open = _slow_open
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name='__main__')
