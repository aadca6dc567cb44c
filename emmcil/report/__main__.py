"""``emmcil report [RUN_DIRS_OR_GLOBS...] [--out DIR]`` (or ``python -m emmcil.report``): the command line of
:func:`emmcil.report.build_report` (``--help`` lists its options)."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from emmcil.report.build import build_report
from emmcil.report.collect import METRICS, ReportError


def main(argv: Sequence[str] | None = None, prog: str = "python -m emmcil.report") -> int:
    """``python -m emmcil.report [RUNS...] [--out DIR] [--metric M] [--include-unfinished] [--note TEXT]``; returns
    the exit status (1 on a :class:`~emmcil.report.collect.ReportError`, printed as ``error: ...``)."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Tables and figures of the paper from many runs' results.json.")
    parser.add_argument("runs", nargs="*", default=["runs"],
                        help="run directories, results.json files, log_dirs, or globs of them (default: runs, the "
                             "default log_dir)")
    parser.add_argument("--out", default=Path("reports"), type=Path,
                        help="folder for the tables (md, csv) and figures (png, pdf) (default: reports)")
    parser.add_argument("--metric", default="last_accuracy", choices=METRICS,
                        help="the accuracy the tables show (default: last_accuracy)")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="keep runs that have not finished every phase (their last phase counts as the end; "
                             "labelled with it, e.g. 'mrdc [phases=3/5]')")
    parser.add_argument("--note", default="", help="a sentence added to the report's caption (e.g. the settings)")
    opts = parser.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            written = build_report(opts.runs, opts.out, opts.metric, opts.include_unfinished, opts.note, log)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for kind, paths in written.items():
        for p in paths:
            print(f"{kind[:-1] if kind != 'csv' else 'csv'}: {p}")
    print((opts.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
