# Copyright (c) repseg contributors. All rights reserved.
"""The speed benchmark, a room per job: its settings (:mod:`.settings`),
the line-up (:mod:`.configs`), the models and the forms they are timed in
(:mod:`.build`), the interleaved timing (:mod:`.timing`), the figures
(:mod:`.summary`), all put together by :func:`run_benchmark`
(:mod:`.run`); memory / GFLOPs / environment (:mod:`.measure`), time by
layer kind (:mod:`.profile`), the results as typed records
(:mod:`.records`) and the tables and charts (:mod:`.report`)."""
from .build import build_for_benchmark
from .configs import CONFIGS_ENV, LINEUP, find_config, lineup, pair_models
from .measure import (count_gflops, cpu_vector_isa, environment,
                      peak_forward_memory)
from .profile import FUNCTIONAL, layer_kind, profile_layers
from .records import ModelResult, Run
from .report import markdown_table, profile_table, save_outputs
from .run import run_benchmark
from .settings import BenchmarkSettings

__all__ = [
    'LINEUP', 'lineup', 'pair_models', 'find_config', 'CONFIGS_ENV',
    'BenchmarkSettings', 'build_for_benchmark',
    'run_benchmark', 'markdown_table', 'profile_table', 'save_outputs',
    'peak_forward_memory', 'count_gflops', 'environment', 'cpu_vector_isa',
    'profile_layers', 'layer_kind', 'FUNCTIONAL', 'ModelResult', 'Run'
]
