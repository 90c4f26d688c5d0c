# Copyright (c) repseg contributors. All rights reserved.
"""Settings objects: one dataclass per entry point (benchmark, quantize,
test, export) holds every option's default and checks it once; tools fill
them from their parsed flags (:meth:`Settings.of`)."""
import dataclasses
from typing import TypeVar

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


__all__ = ['Settings']
