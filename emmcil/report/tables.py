"""The report's tables, from the groups of :func:`emmcil.report.collect.summarize_groups`: the main table (methods x
protocol: L = 5, 10, 20 and any PyCIL B-Inc protocol; the paper's numbers beside ours), the memory-size table and the
thresholds grid, each as a markdown-ready DataFrame (cells such as ``82.76 ± 0.31``) and a numeric one (for the CSV
files)."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from emmcil.markdown import markdown_table

from .collect import equal_phases, format_value, is_tagged, variant_label
from .paper import PAPER_MEMORY, PAPER_NAMES, PAPER_TABLE, method_rank


def fmt_mean_std(mean: float, std: float, n: int | None = None, usual_n: int | None = None, digits: int = 2) -> str:
    """``82.76 ± 0.31``; one seed: ``82.76``; `` (n=k)`` when k differs from the table's usual number of seeds."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{digits}f}" if std is None or math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    if n is not None and usual_n is not None and n != usual_n:
        text += f" (n={n})"
    return text


def usual_seed_count(groups: pd.DataFrame) -> int:
    """The most common number of seeds of the groups (a cell with another number says so)."""
    return Counter(groups["n"]).most_common(1)[0][0] if len(groups) else 0


def std_note(usual: int) -> str:
    return (f"mean ± sample std (ddof = 1) over {usual} seeds; (n=k) marks a cell with k seeds" if usual > 1
            else "one seed a cell (no std), unless (n=k) says otherwise")


def _fmt_paper(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def protocol_columns(g: pd.DataFrame, paper_phases=()) -> list[str]:
    """The protocols of ``g`` (and ``L=`` each of ``paper_phases``) in table order: equal phases by L, then PyCIL's
    by phase count and name."""
    found = {(int(L), p) for L, p in zip(g["num_phases"], g["protocol"])} | {(L, f"L={L}") for L in paper_phases}
    return [p for _, p in sorted(found, key=lambda x: (equal_phases(x[1]) is None, x[0], x[1]))]


def main_table(groups: pd.DataFrame, dataset: str, tagged: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(markdown-ready, numeric) table of one dataset: one row per method variant, a column per protocol (``L=5``,
    ``B4-Inc2``; ours, and the paper's where it has numbers; numeric columns ``L5_mean``, ``B4-Inc2_mean``, ...).
    ``tagged=False``: the runs without exp_tag, plus a row for each method the paper reports that has no run of ours
    (the main table); ``tagged=True``: the runs with an exp_tag (ablations)."""
    g = groups[(groups["dataset"] == dataset) & (groups["variant"].map(is_tagged) == tagged)]
    paper = PAPER_TABLE.get(dataset, {}) if not tagged else {}
    protocols = protocol_columns(g, (5, 10, 20) if paper else ())
    usual = usual_seed_count(g)
    rows: list[tuple[str, str, tuple]] = []  # (method, label, variant)
    for _, r in g.iterrows():
        if (r["method"], r["label"], r["variant"]) not in rows:
            rows.append((r["method"], r["label"], r["variant"]))
    for method in paper:
        if not any(m == method and not v for m, _, v in rows):
            rows.append((method, method, ()))
    rows.sort(key=lambda x: (bool(x[2]), method_rank(x[0]), x[1]))
    md, num = [], []
    for method, label, variant in rows:
        paper_row = PAPER_NAMES.get(method, "")
        md_row = {"method": label if ((g["label"] == label).any()) else f"{label} (not run)", "paper row": paper_row}
        num_row = {"method": method, "label": label, "paper_row": paper_row}
        for protocol in protocols:
            hit = g[(g["label"] == label) & (g["protocol"] == protocol)]
            col = protocol.replace("=", "")  # L5, B4-Inc2
            if len(hit):
                h = hit.iloc[0]
                md_row[protocol] = fmt_mean_std(h["metric_mean"], h["metric_std"], h["n"], usual)
                num_row.update({f"{col}_mean": h["metric_mean"], f"{col}_std": h["metric_std"], f"{col}_n": h["n"]})
            else:
                md_row[protocol] = "-"
                num_row.update({f"{col}_mean": float("nan"), f"{col}_std": float("nan"), f"{col}_n": 0})
            L = equal_phases(protocol)
            if paper and L is not None:
                value = paper.get(method, {}).get(L) if not variant else None
                md_row[f"paper {protocol}"] = _fmt_paper(value)
                num_row[f"{col}_paper"] = float("nan") if value is None else value
        md.append(md_row)
        num.append(num_row)
    return pd.DataFrame(md), pd.DataFrame(num)


def memory_series(groups: pd.DataFrame) -> dict[tuple[str, str], dict[tuple, pd.DataFrame]]:
    """(dataset, protocol) -> series (method, variant without memory_per_class) -> its groups, for series with >= 2
    sizes."""
    out: dict[tuple[str, str], dict[tuple, pd.DataFrame]] = {}
    mem = groups[groups["memory_per_class"].notna()]
    for (dataset, protocol), g in mem.groupby(["dataset", "protocol"], sort=False):
        series: dict[tuple, list] = {}
        for i, r in g.iterrows():
            rest = tuple((k, v) for k, v in r["variant"] if k != "memory_per_class")
            series.setdefault((r["method"], rest), []).append(i)
        kept = {k: g.loc[v].sort_values("memory_per_class") for k, v in series.items()
                if g.loc[v, "memory_per_class"].nunique() >= 2}
        if kept:
            out[(dataset, protocol)] = dict(sorted(kept.items(),
                                                   key=lambda kv: (bool(kv[0][1]), method_rank(kv[0][0]))))
    return out


def memory_table(series: Mapping[tuple, pd.DataFrame], dataset: str, protocol: str
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long table: method, memory size, exemplars per class and accuracy, ours and the paper's (for equal phases)."""
    paper = PAPER_MEMORY.get((dataset, equal_phases(protocol)), {})
    usual = usual_seed_count(pd.concat(series.values())) if series else 0
    md, num = [], []
    for (method, rest), g in series.items():
        label = variant_label(method, rest)
        ref = paper.get(method, {}) if not [k for k, _ in rest if k != "exp_tag"] else {}
        sizes = sorted(set(g["memory_per_class"]) | set(ref))
        for m in sizes:
            hit = g[g["memory_per_class"] == m]
            h = hit.iloc[0] if len(hit) else None
            p = ref.get(m)
            row = {"method": label, "paper row": PAPER_NAMES.get(method, ""),
                   "memory (samples/class)": format_value(m),
                   "exemplars/class": "-" if h is None else fmt_mean_std(h["exemplars_per_class_mean"],
                                                                          h["exemplars_per_class_std"], digits=1),
                   "accuracy": "-" if h is None else fmt_mean_std(h["metric_mean"], h["metric_std"], h["n"], usual)}
            if paper:
                row["paper exemplars/class"] = "-" if p is None else f"{p[0]:g}"
                row["paper accuracy (≈)"] = "-" if p is None else f"{p[1]:.1f}"
            md.append(row)
            num.append({"method": method, "label": label, "memory_per_class": m,
                        "exemplars_per_class_mean": np.nan if h is None else h["exemplars_per_class_mean"],
                        "exemplars_per_class_std": np.nan if h is None else h["exemplars_per_class_std"],
                        "accuracy_mean": np.nan if h is None else h["metric_mean"],
                        "accuracy_std": np.nan if h is None else h["metric_std"], "n": 0 if h is None else h["n"],
                        "paper_exemplars_per_class": np.nan if p is None else p[0],
                        "paper_accuracy": np.nan if p is None else p[1]})
    return pd.DataFrame(md), pd.DataFrame(num)


def threshold_tables(groups: pd.DataFrame) -> dict[tuple[str, str, str], tuple[pd.DataFrame, pd.DataFrame]]:
    """(dataset, protocol, series label) -> (markdown, numeric) pivot tau_image x tau_text, for series with >= 2
    pairs."""
    out = {}
    g = groups[groups["tau_image"].notna() & groups["tau_text"].notna()]
    usual = usual_seed_count(g) if len(g) else 0
    for (dataset, protocol), gg in g.groupby(["dataset", "protocol"], sort=False):
        series: dict[tuple, list] = {}
        for i, r in gg.iterrows():
            rest = tuple((k, v) for k, v in r["variant"] if k not in ("tau_image", "tau_text"))
            series.setdefault((r["method"], rest), []).append(i)
        for (method, rest), idx in series.items():
            s = gg.loc[idx]
            if len(s[["tau_image", "tau_text"]].drop_duplicates()) < 2:
                continue
            cells = {(r["tau_image"], r["tau_text"]): r for _, r in s.iterrows()}
            ti, tt = sorted(s["tau_image"].unique()), sorted(s["tau_text"].unique())
            md = pd.DataFrame(
                [[fmt_mean_std(cells[(a, b)]["metric_mean"], cells[(a, b)]["metric_std"], cells[(a, b)]["n"], usual)
                  + f" [{cells[(a, b)]['exemplars_per_class_mean']:.1f}]" if (a, b) in cells else "-" for b in tt]
                 for a in ti], index=pd.Index([f"τ_I={a:g}" for a in ti], name="τ_I \\ τ_T"),
                columns=[f"τ_T={b:g}" for b in tt])
            num = s[["tau_image", "tau_text", "n", "metric_mean", "metric_std", "exemplars_per_class_mean",
                     "mean_patches_mean"]]
            num = num.rename(columns={"metric_mean": "accuracy_mean", "metric_std": "accuracy_std"})
            out[(dataset, protocol, variant_label(method, rest))] = (md, num.reset_index(drop=True))
    return out


def write_table(md: pd.DataFrame, num: pd.DataFrame, out: Path, stem: str, index: bool = False) -> tuple[Path, Path]:
    """``out/stem.md``: ``md`` as a markdown table (its index as the first column when ``index``); ``out/stem.csv``:
    ``num``, the same numbers unformatted. Returns both paths."""
    paths = out / f"{stem}.md", out / f"{stem}.csv"
    paths[0].write_text(markdown_table(md, index=index) + "\n")
    num.to_csv(paths[1], index=False)
    return paths
