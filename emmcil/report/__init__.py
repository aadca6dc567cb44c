"""The paper's tables and figures from many runs: ``python -m emmcil.report RUN_DIRS_OR_GLOBS... --out DIR``.

Each argument is a run directory (``{log_dir}/{exp_name}``), a ``results.json``, a folder of run directories (a
``log_dir``), or a glob of any of these (quoted, so the shell leaves it alone). The runs are grouped by dataset,
protocol (L equal phases, or PyCIL's ``B<init>-Inc<increment>``), method and their *variant*: the config keys of the
method that differ from the defaults (``memory_per_class``, ``tau_image``, ``tau_text``, ``aug_*``, ``jpeg_quality``,
...), ``exp_tag`` (the ablation scripts tag their runs, so an ablation's run never joins the main table's group), and
any other key that changes results (the run's ``results_config``, the keys its run name is made of too) whose value
differs between runs of the same dataset, protocol and method (e.g. ``lr``): runs in different run directories are
never averaged together, only seeds. A group's seeds give mean ± sample std (ddof = 1). The report warns (and says in
``report.md``) when the runs of one table were made with different package versions (``config.json``'s
``provenance``). The per-run report, ``results.md``, is the engine's (the run writes it).

Written to ``--out``:

- ``report.md``: every table below with its caption, and the figures;
- ``table_<dataset>.md|.csv``: methods x protocol (L = 5, 10, 20, B50-Inc10, ...), ours beside the paper's published
  numbers where they exist (MM-ImageNet-R, the project page's table; ``PAPER_TABLE``);
- ``memory_<dataset>_L<L>.md|.csv`` and ``memory.png``, when runs differ only in ``memory_per_class``: accuracy and
  exemplars stored per class against the memory size, the paper's digitised plot dashed beside ours
  (MM-ImageNet-R, L = 10; ``PAPER_MEMORY``);
- ``thresholds_<dataset>_L<L>.md|.csv``, when ``emm`` runs differ only in ``tau_image`` / ``tau_text``;
- ``accuracy_per_phase.png``: accuracy on the seen classes after each phase, one panel per dataset x protocol;
- every figure as a PNG at 300 dpi and a vector PDF beside it (``emmcil.figures.save_figure``);
- ``groups.csv`` (one row per group: mean, std, n of every metric) and ``runs.csv`` (one row per run).

The paper does not say which accuracy its table shows. The tables show ``--metric`` (default ``last_accuracy``,
the accuracy on all classes after the last phase; ``avg_incremental_accuracy`` is the mean over phases) and say
so in their captions.

The package reads only what runs write (``results.json``, ``config.json``; see :mod:`emmcil.report.collect`) and
imports neither torch nor the method registry, so a report starts in about a second. Its parts: ``collect``
(runs -> groups), ``tables``, ``plots``, ``paper`` (the published numbers), ``build`` (the report's folder) and
``__main__`` (the command line). Beside it, ``memory``: the memory browser, ``python -m emmcil.report.memory RUN_DIR
... --out DIR`` (static pages of every stored exemplar; not imported here, so that ``-m`` runs it once).
"""
from .build import build_report
from .collect import (GENERAL_DEFAULTS, METRICS, MISSING_DEFAULTS, ReportError, collect, find_results, load_run,
                      summarize_groups)
from .paper import PAPER_MEMORY, PAPER_NAMES, PAPER_TABLE

__all__ = ["build_report", "collect", "find_results", "load_run", "summarize_groups", "ReportError", "METRICS",
           "GENERAL_DEFAULTS", "MISSING_DEFAULTS", "PAPER_TABLE", "PAPER_MEMORY", "PAPER_NAMES"]
