# Copyright (c) repseg contributors. All rights reserved.
"""The speed benchmark: the timing loop (:mod:`.run`), memory / GFLOPs /
environment (:mod:`.measure`), time by layer kind (:mod:`.profile`), the
results as typed records (:mod:`.records`) and the tables and charts
(:mod:`.report`)."""
from .measure import (count_gflops, cpu_vector_isa, environment,
                      peak_forward_memory)
from .profile import FUNCTIONAL, layer_kind, profile_layers
from .records import ModelResult, Run
from .report import markdown_table, profile_table, save_outputs
from .run import (LINEUP, BenchmarkSettings, build_for_benchmark, lineup,
                  run_benchmark)

__all__ = [
    'LINEUP', 'lineup', 'BenchmarkSettings', 'build_for_benchmark',
    'run_benchmark', 'markdown_table', 'profile_table', 'save_outputs',
    'peak_forward_memory', 'count_gflops', 'environment', 'cpu_vector_isa',
    'profile_layers', 'layer_kind', 'FUNCTIONAL', 'ModelResult', 'Run'
]
