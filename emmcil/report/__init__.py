"""The paper's tables and figures from many runs: ``python -m emmcil.report RUN_DIRS_OR_GLOBS... --out DIR``.

How runs are grouped (only seeds are averaged: mean ± sample std, ddof = 1), what is written and which metric the
tables show: docs/reproduction.md#3-the-report. The package reads only what runs write (:mod:`.collect`) and imports
neither torch nor the method registry. Its parts: ``collect`` (runs -> groups), ``tables``, ``plots``, ``paper`` (the
published numbers), ``build`` (the report's folder), ``__main__``; beside it ``memory``, the memory browser (not
imported here, so that ``-m`` runs it once).
"""
from .build import build_report
from .collect import (GENERAL_DEFAULTS, METRICS, MISSING_DEFAULTS, ReportError, collect, find_results, load_run,
                      summarize_groups)
from .paper import PAPER_MEMORY, PAPER_NAMES, PAPER_TABLE

__all__ = ["build_report", "collect", "find_results", "load_run", "summarize_groups", "ReportError", "METRICS",
           "GENERAL_DEFAULTS", "MISSING_DEFAULTS", "PAPER_TABLE", "PAPER_MEMORY", "PAPER_NAMES"]
