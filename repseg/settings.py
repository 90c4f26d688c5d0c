# Copyright (c) repseg contributors. All rights reserved.
"""Settings objects: one dataclass per entry point (benchmark, quantize,
test, export) holds every option's default and checks it once; tools fill
them from their parsed flags, Python callers from keywords."""
import dataclasses
import warnings
from typing import Dict, Optional, TypeVar

T = TypeVar('T', bound='Settings')


class Settings:
    """Mixin of the settings dataclasses."""

    @classmethod
    def of(cls, options: dict, **overrides):
        """Settings from a mapping that may hold other keys too (e.g. a
        tool's ``vars(args)``); ``overrides`` win."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in options.items() if k in names},
                      **overrides})

    @classmethod
    def defaults_into(cls, parser) -> None:
        """Give each flag of ``parser`` (an argparse parser) whose help
        shows its default (``%(default)s``) and whose destination is a
        field of this class the field's default: every such default is
        defined once, in the settings class. (A flag whose help does not
        show a default keeps None: "not given", which may mean more than
        the field's default, e.g. the runtime OUT's suffix names.)"""
        fields = {f.name: f.default for f in dataclasses.fields(cls)
                  if f.default is not dataclasses.MISSING}
        shown = {a.dest for a in parser._actions
                 if '%(default)' in (a.help or '')}
        missing = sorted(shown - set(fields))
        if missing:
            raise ValueError(f'{cls.__name__} has no field {missing} whose '
                             'default the help could show')
        parser.set_defaults(**{dest: fields[dest] for dest in shown})

    @classmethod
    def from_keywords(cls, func: str, settings: Optional['Settings'],
                      keywords: dict,
                      renamed: Optional[Dict[str, str]] = None):
        """``settings``, or (the old keyword call of ``func``, kept for one
        release with a DeprecationWarning) settings made of ``keywords``,
        whose old names ``renamed`` maps to the fields'."""
        if not keywords:
            return settings if settings is not None else cls()
        if settings is not None:
            raise TypeError(f'{func}() takes settings or keywords, not both')
        warnings.warn(
            f'{func}() with keyword options is deprecated (removed in the '
            f'next release): pass {cls.__name__}(...) as settings',
            DeprecationWarning, stacklevel=3)
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {}
        for key, value in keywords.items():
            key = (renamed or {}).get(key, key)
            if key not in names:
                raise TypeError(f'{func}() got an unexpected keyword '
                                f'argument {key!r}')
            fields[key] = value
        return cls(**fields)


__all__ = ['Settings']
