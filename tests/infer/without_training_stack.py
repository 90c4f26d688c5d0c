"""Run a tool as on the deployment install (``python
without_training_stack.py TOOL ARGS...``): importing torch, torchvision,
mmcv, mmengine, mmseg or mmpretrain fails, as where they are not
installed."""
import importlib.abc
import os
import runpy
import sys

BLOCKED = ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmseg', 'mmpretrain')


class _Blocker(importlib.abc.MetaPathFinder):

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f'No module named {name!r}',
                                      name=name)
        return None


if __name__ == '__main__':
    sys.meta_path.insert(0, _Blocker())
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name='__main__')
