# Copyright (c) repseg contributors. All rights reserved.
"""Package faces that import their modules when a name is first used
(PEP 562), so that importing a package costs nothing it does not need:
the deployment install (numpy, OpenCV and a runtime; no torch, no
OpenMMLab package) imports ``repseg.deploy.runtimes`` and ``repseg.infer``
through them."""
import importlib
import types
from typing import Dict


class _Face(types.ModuleType):
    """A package whose public name equals one of its submodules' (the
    function ``repseg.apis.test`` in the module ``repseg.apis.test``): the
    import system binds the submodule to the package's attribute when the
    submodule is first imported (by any import of it, anywhere), which would
    hide the function; such a binding is ignored (the module stays in
    ``sys.modules``, where ``from repseg.apis.test import X`` finds it)."""

    def __setattr__(self, name, value):
        own = vars(self).get('_lazy_names', {})
        if isinstance(value, types.ModuleType) and \
                own.get(name) == '.' + name and \
                value.__name__ == f'{self.__name__}.{name}':
            return
        super().__setattr__(name, value)


def lazy_names(package: str, names: Dict[str, str]):
    """``(__getattr__, __dir__)`` for a package whose public ``names`` map
    to the submodule (relative, e.g. ``'.build'``) that defines each."""
    face = globals_of(package)
    face['_lazy_names'] = dict(names)
    import sys
    sys.modules[package].__class__ = _Face

    def __getattr__(name):
        if name not in names:
            raise AttributeError(f'module {package!r} has no attribute '
                                 f'{name!r}')
        module = importlib.import_module(names[name], package)
        # every name of that module at once: importing a submodule sets the
        # package's attribute of the same name (apis.test) to the module
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
