# Copyright (c) repseg contributors. All rights reserved.
"""The speed benchmark's entry point (tools/benchmark.py): the line-up or
the given configs, timed side by side (:func:`repseg.benchmark.run_benchmark`),
its tables printed and its files written."""
from typing import Callable, List, Optional, Sequence, Union

from ..benchmark import (BenchmarkSettings, lineup, markdown_table,
                         profile_table, run_benchmark, save_outputs)


def benchmark(config: Union[str, Sequence[str], None] = None,
              checkpoint: Optional[str] = None,
              settings: Optional[BenchmarkSettings] = None,
              out_dir: str = 'work_dirs/benchmark',
              cfg_options: Optional[dict] = None,
              logger: Callable[[str], None] = print) -> dict:
    """Time the fused form of ``config`` (with ``checkpoint``'s weights,
    else random ones), of several configs side by side (a list as the tool
    takes them: ``[CONFIG [CHECKPOINT]] ...``), or of the paper's Table 8
    line-up without one,
    as ``settings`` says; write ``benchmark.json`` / ``benchmark.png``
    (and ``profile.png``) into ``out_dir``. Returns the result with
    ``tables`` (the Markdown the tool prints) and ``files``."""
    settings = settings or BenchmarkSettings()
    entries = lineup(settings.fast, config, checkpoint, cfg_options)
    result = run_benchmark(entries, settings, logger=logger)
    tables: List[str] = [markdown_table(result)]
    profiled = profile_table(result)
    if profiled:
        tables.append(profiled)
    result.update(tables=tables, files=save_outputs(result, out_dir))
    return result


__all__ = ['benchmark']
