# Copyright (c) repseg contributors. All rights reserved.
"""Package faces that import their modules when a name is first used
(PEP 562), so that importing a package costs nothing it does not need:
the deployment install (numpy, OpenCV and a runtime; no torch, no
OpenMMLab package) imports ``repseg.deploy.runtimes`` and ``repseg.infer``
through them."""
import importlib
from typing import Dict


def lazy_names(package: str, names: Dict[str, str]):
    """``(__getattr__, __dir__)`` for a package whose public ``names`` map
    to the submodule (relative, e.g. ``'.build'``) that defines each."""
    def __getattr__(name):
        if name not in names:
            raise AttributeError(f'module {package!r} has no attribute '
                                 f'{name!r}')
        module = importlib.import_module(names[name], package)
        # every name of that module at once
        space = globals_of(package)
        for other, where in names.items():
            if where == names[name]:
                space[other] = getattr(module, other)
        return space[name]

    def __dir__():
        return sorted(set(globals_of(package)) | set(names))

    return __getattr__, __dir__


def globals_of(package: str) -> dict:
    import sys
    return vars(sys.modules[package])


__all__ = ['lazy_names']
