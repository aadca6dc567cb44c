"""GitHub markdown tables of pandas DataFrames, for every table the project prints or writes (a run's ``results.md``,
the multi-run report, ``evaluate``, the benchmarks). pandas' own ``DataFrame.to_markdown`` needs the optional
``tabulate``, which the project does not install."""
from __future__ import annotations

import pandas as pd


def format_cell(value, digits: int = 2) -> str:
    """A float with ``digits`` decimals, None / NaN as ``-``, anything else as ``str``."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(df: pd.DataFrame, digits: int = 2, index: bool = False) -> str:
    """``df`` as a GitHub markdown table, columns right-aligned and padded; ``index=True`` adds the index as the
    first column (headed by its name)."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    rows = [([str(i)] if index else []) + [format_cell(v, digits) for v in row]
            for i, row in zip(df.index, df.itertuples(index=False))]
    widths = [max(len(c), *(len(r[k]) for r in rows)) if rows else len(c) for k, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"] + [line(r) for r in rows])
