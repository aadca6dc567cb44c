"""The paper's tables and figures from many runs: ``python -m emmcil.report RUN_DIRS_OR_GLOBS... --out DIR``.

Each argument is a run directory (``{log_dir}/{exp_name}``), a ``results.json``, a folder of run directories (a
``log_dir``), or a glob of any of these (quoted, so the shell leaves it alone). The runs are grouped by dataset,
method, number of phases L and their *variant*: the config keys of the method that differ from the defaults
(``memory_per_class``, ``tau_image``, ``tau_text``, ``aug_*``, ``jpeg_quality``, ...), ``exp_tag`` (the
ablation scripts tag their runs, so an ablation's run never joins the main table's group), and any other key that
changes results (all but ``rundir.NON_RESULT_KEYS``, the list the run names use too) whose value differs between
runs of the same dataset, method and L (e.g. ``lr``): runs in different run directories are never averaged
together, only seeds. A group's seeds give mean ± sample std (ddof = 1). The report warns (and says in
``report.md``) when the runs of one table were made with different package versions (``config.json``'s
``provenance``). The per-run report, ``results.md``, is :mod:`emmcil.engine.results`'s.

Written to ``--out``:

- ``report.md``: every table below with its caption, and the figures;
- ``table_<dataset>.md|.csv``: methods x L, ours beside the paper's published numbers where they exist (MM-ImageNet-R,
  the project page's table; ``PAPER_TABLE``);
- ``memory_<dataset>_L<L>.md|.csv`` and ``memory.png``, when runs differ only in ``memory_per_class``: accuracy and
  exemplars stored per class against the memory size, the paper's digitised plot dashed beside ours
  (MM-ImageNet-R, L = 10; ``PAPER_MEMORY``);
- ``thresholds_<dataset>_L<L>.md|.csv``, when ``emm`` runs differ only in ``tau_image`` / ``tau_text``;
- ``accuracy_per_phase.png``: accuracy on the seen classes after each phase, one panel per dataset x L;
- ``groups.csv`` (one row per group: mean, std, n of every metric) and ``runs.csv`` (one row per run).

The paper does not say which accuracy its table shows. The tables show ``--metric`` (default ``last_accuracy``,
the accuracy on all classes after the last phase; ``avg_incremental_accuracy`` is the mean over phases) and say
so in their captions.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import re
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from emmcil.engine.results import METRIC_NOTES, markdown_table
from emmcil.engine.rundir import PROVENANCE, results_config
from emmcil.provenance import COMPARED

# ---------------------------------------------------------------------------------------------- the paper's numbers
# Our method names -> the rows of the paper's table (paper.md §4.1). finetune / joint are our lower / upper bounds.
PAPER_NAMES = {
    "l2p": "L2P", "dualprompt": "DualPrompt", "ease": "EASE", "replay": "SSF", "mrdc": "SSF + MRDC",
    "cim": "SSF + CIM", "emm": "SSF + Ours",
}
METHOD_ORDER = ["finetune", "l2p", "dualprompt", "ease", "replay", "mrdc", "cim", "emm", "joint"]

# "Comparisons with SOTA CIL methods on MM-ImageNet-R", the project page's table (exact numbers, paper.md §4.1).
PAPER_TABLE: dict[str, dict[str, dict[int, float]]] = {
    "mm_imagenet_r": {
        "l2p": {5: 68.17, 10: 69.21, 20: 66.23},
        "dualprompt": {5: 77.66, 10: 75.57, 20: 70.47},
        "ease": {5: 78.06, 10: 76.84, 20: 73.91},
        "replay": {5: 80.58, 10: 77.03, 20: 75.26},
        "mrdc": {5: 80.77, 10: 78.66, 20: 76.13},
        "cim": {5: 80.97, 10: 78.21, 20: 77.23},
        "emm": {5: 82.76, 10: 80.55, 20: 78.64},
    },
}
PAPER_TABLE_SOURCE = ("the paper's project page, \"Comparisons with SOTA CIL methods on MM-ImageNet-R\" "
                      "(static/fig/ex_quantitative.png)")

# "Ablation study on memory buffer size" (MM-ImageNet-R, L = 10), digitised from the plot's pixels (±0.1 pt;
# paper.md §4.2): memory size (samples/class) -> (exemplars per class, accuracy %).
PAPER_MEMORY: dict[tuple[str, int], dict[str, dict[int, tuple[float, float]]]] = {
    ("mm_imagenet_r", 10): {
        "replay": {1: (1, 74.8), 3: (3, 76.2), 5: (5, 77.0), 7: (7, 78.1), 10: (10, 79.1)},
        "cim": {1: (2, 74.5), 3: (6, 77.2), 5: (10, 78.2), 7: (14, 79.2), 10: (19, 80.2)},
        "emm": {1: (3, 76.6), 3: (8, 79.2), 5: (14, 80.6), 7: (19, 81.2), 10: (28, 82.1)},
    },
}
PAPER_MEMORY_SOURCE = "the paper's memory plot (static/fig/compare_mem.png), digitised to about ±0.1 pt"
# The memory plot's colours (gray SSF, blue SSF + CIM, pink SSF + Ours), and one for each other method.
METHOD_COLOURS = {"replay": "#7f7f7f", "cim": "#1f77b4", "emm": "#e377c2", "mrdc": "#2ca02c", "finetune": "#8c564b",
                  "joint": "#bcbd22", "l2p": "#ff7f0e", "dualprompt": "#d62728", "ease": "#9467bd"}

# ---------------------------------------------------------------------------------------------- config knowledge
# Defaults of the general keys that make a variant (config.py's; tests/test_report.py checks they agree).
GENERAL_DEFAULTS = {"memory_per_class": 5, "memory_unit": "exemplar", "memory_budget_mode": "per_class",
                    "memory_total": 0, "exp_tag": ""}
MEMORY_KEYS = ("memory_per_class", "memory_unit", "memory_budget_mode", "memory_total")
# The missing-modality protocol's keys (RebQ's CMML), variant keys of every method when the run's config has them.
MISSING_DEFAULTS = {"missing_type": "none", "missing_ratio": 0.7, "missing_both_ratio": 0.5, "missing_seed": 0}
SHORT = {"memory_per_class": "m", "memory_unit": "unit", "tau_image": "τ_I", "tau_text": "τ_T",
         "aug_text_swap": "p_swap", "aug_patch_merge": "p_merge", "memory_total": "M", "missing_type": "missing",
         "missing_ratio": "ratio"}
# Settings a caption names when they are the same for every run of a table (the demo's short schedule, say).
CAPTION_SETTINGS = ("model_size", "tuning", "max_epoch", "batch_size", "lr", "precision")

REQUIRED = ("dataset", "method", "num_phases", "seed", "completed_phases", "finished", "accuracy_per_phase",
            "last_accuracy", "avg_incremental_accuracy", "memory")
METRICS = ("last_accuracy", "avg_incremental_accuracy", "mean_last_row", "old_accuracy", "new_accuracy",
           "forgetting", "forgetting_pycil", "forgetting_first")
SUMMARY_METRICS = ("last_accuracy", "avg_incremental_accuracy", "forgetting", "exemplars_per_class")


class ReportError(ValueError):
    """A results file that cannot be read or lacks a key; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------- collecting runs
def find_results(patterns: Iterable[str]) -> list[Path]:
    """results.json files of run directories, results files, log_dirs, or globs of them (sorted, unique)."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        hits = []
        for m in map(Path, matches):
            if m.is_file():
                hits.append(m)
            elif (m / "results.json").is_file():
                hits.append(m / "results.json")
            elif m.is_dir():
                hits.extend(sorted(m.glob("*/results.json")))
        if not hits:
            raise ReportError(f"{pattern}: no results.json there (a run directory, a results.json, a folder of run "
                              f"directories, or a glob of them; a run writes results.json after its first phase)")
        found.extend(hits)
    unique, seen = [], set()
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _require(mapping: Mapping, key: str, path: Path, where: str = "") -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise ReportError(f"{path}: missing key {key!r}{where}; is it a results.json of emmcil's driver "
                          f"(emmcil/engine/results.py)?")
    return mapping[key]


def _number(v) -> float:
    return float("nan") if v is None else float(v)


def method_keys(method: str, uses_memory: bool) -> tuple[dict[str, Any], bool]:
    """(the method's own config keys -> defaults, uses_memory) from the registry; unknown methods have none."""
    from emmcil.methods import METHODS

    if method in METHODS:
        cls = METHODS[method]
        return dict(cls.config), bool(cls.uses_memory)
    return {}, uses_memory


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def _hashable(v):
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def load_run(path: Path, metric: str = "last_accuracy") -> dict:
    """One run's record: identity, variant, the metrics, the accuracy curve and the memory at the last phase."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, or bytes that are not UTF-8
        raise ReportError(f"{path}: cannot read it as JSON ({e})") from e
    for key in REQUIRED:
        _require(results, key, path)
    if metric not in REQUIRED:
        _require(results, metric, path, f" (the --metric {metric})")
    config_path = path.parent / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    done = int(results["completed_phases"])
    curve = [_number(v) for v in results["accuracy_per_phase"]]
    if len(curve) != done:
        raise ReportError(f"{path}: 'accuracy_per_phase' has {len(curve)} values for {done} completed phases")

    memory = results["memory"]
    last_memory = memory[done - 1] if done and isinstance(memory, list) and len(memory) >= done else None
    exemplars_per_class = mean_patches = equivalents = float("nan")
    budget_m = None
    if last_memory:
        where = f" in 'memory'[{done - 1}] (the memory report of the last phase)"
        if "exemplars_per_class" in last_memory and last_memory["exemplars_per_class"]:
            exemplars_per_class = float(np.mean(list(last_memory["exemplars_per_class"].values())))
        else:
            phases = _require(results, "phases", path)
            seen = _require(phases[done - 1], "seen_classes", path, f" in 'phases'[{done - 1}]")
            exemplars_per_class = _require(last_memory, "exemplars", path, where) / seen
        mean_patches = _number(last_memory.get("mean_patches"))
        if last_memory.get("cost") is not None and results.get("phases"):
            equivalents = last_memory["cost"] / results["phases"][done - 1]["seen_classes"]
        if last_memory.get("class_budget"):  # in full exemplars, or in bytes of m x the mean full exemplar
            budget = last_memory["class_budget"]
            full = last_memory.get("full_exemplar_bytes") if last_memory.get("unit") == "bytes" else 1.0
            budget_m = round(budget / full, 2) if full else None

    method = str(results["method"])
    own, uses_memory = method_keys(method, bool(last_memory))
    defaults = {**own, "exp_tag": GENERAL_DEFAULTS["exp_tag"]}
    if uses_memory:
        defaults.update({k: GENERAL_DEFAULTS[k] for k in MEMORY_KEYS})
    if config.get("missing_type", "none") != "none":
        defaults.update({k: v for k, v in MISSING_DEFAULTS.items() if k in config})
    kept = results_config(config)  # the keys that change results (what the run name is made of too)
    settings = {k: config[k] for k in defaults if k in config and (k in kept or k == "exp_tag")}
    if uses_memory and "memory_per_class" not in settings and budget_m is not None:
        settings["memory_per_class"] = budget_m  # no config.json: the budget the memory report shows
    variant = tuple(sorted((k, _hashable(v)) for k, v in settings.items() if _hashable(v) != _hashable(defaults[k])))
    if uses_memory and settings.get("memory_budget_mode", "per_class") != "total":
        variant = tuple((k, v) for k, v in variant if k != "memory_total")  # memory_total unused per class
    record = {
        "path": str(path.parent), "exp_name": results.get("exp_name", path.parent.name),
        "dataset": str(results["dataset"]), "method": method, "num_phases": int(results["num_phases"]),
        "seed": results["seed"], "finished": bool(results["finished"]), "completed_phases": done,
        "variant": variant, "exp_tag": settings.get("exp_tag", ""),
        "memory_per_class": settings.get("memory_per_class", GENERAL_DEFAULTS["memory_per_class"])
        if uses_memory else None,
        "tau_image": settings.get("tau_image"), "tau_text": settings.get("tau_text"),
        "exemplars_per_class": exemplars_per_class, "full_exemplar_equivalents_per_class": equivalents,
        "mean_patches": mean_patches, "curve": curve, "config": config,
    }
    for m in METRICS:
        record[m] = _number(results.get(m))
    record["metric"] = _number(results[metric])
    return record


def variant_label(method: str, variant: Sequence[tuple[str, Any]], drop: Sequence[str] = ()) -> str:
    """``emm`` or ``emm [abl_tau, τ_I=0.3]``: the method and its non-default keys (exp_tag first, by value)."""
    items = [(k, v) for k, v in variant if k not in drop]
    parts = [str(v) for k, v in items if k == "exp_tag"]
    parts += [f"{SHORT.get(k, k)}={_fmt_value(v)}" for k, v in items if k != "exp_tag"]
    return method + (f" [{', '.join(parts)}]" if parts else "")


def method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


# ---------------------------------------------------------------------------------------------- grouping
GROUP_KEYS = ["dataset", "num_phases", "method", "variant"]


def collect(patterns: Iterable[str], metric: str = "last_accuracy", include_unfinished: bool = False,
            log=print) -> pd.DataFrame:
    """One row per run (unfinished runs are left out unless asked for; a repeated seed of a group is dropped)."""
    records = [load_run(p, metric) for p in find_results(patterns)]
    unfinished = [r for r in records if not r["finished"]]
    if unfinished and not include_unfinished:
        log(f"note: left out {len(unfinished)} unfinished run(s) (--include-unfinished keeps them): "
            + ", ".join(f"{r['path']} ({r['completed_phases']}/{r['num_phases']} phases)" for r in unfinished))
        records = [r for r in records if r["finished"]]
    if not records:
        raise ReportError("no finished run among the results given")
    kept: dict[tuple, dict] = {}
    for r in split_by_differing_keys(records):
        key = tuple(r[k] for k in GROUP_KEYS) + (r["seed"],)
        if key in kept:
            log(f"warning: {r['path']} repeats seed {r['seed']} of {kept[key]['path']} (same dataset, method, L "
                f"and variant); left out")
            continue
        kept[key] = r
    runs = pd.DataFrame(list(kept.values()))
    runs["label"] = [variant_label(m, v) for m, v in zip(runs["method"], runs["variant"])]
    return runs


def split_by_differing_keys(records: list[dict]) -> list[dict]:
    """Add to each run's variant the keys that change results (:func:`~emmcil.engine.rundir.results_config`)
    and differ between the runs of its dataset, method and L, beyond those the variant already compares with their
    defaults: e.g. two runs with different ``lr`` become ``replay [lr=0.01]`` and ``replay [lr=0.001]``, so runs
    that sit in different run directories (their names differ in those keys) are not averaged together."""
    buckets: dict[tuple, list[dict]] = {}
    for r in records:
        buckets.setdefault((r["dataset"], r["num_phases"], r["method"]), []).append(r)
    for group in buckets.values():
        configs = [results_config(r["config"]) for r in group if r["config"]]
        if len(configs) < 2:
            continue
        shown = {k for r in group for k, _ in r["variant"]}
        keys = sorted({k for c in configs for k in c} - shown - {"seed"})
        # a key some configs lack (older code, or one the method does not read there) is compared where it exists
        differ = [k for k in keys if len({json.dumps(c[k], sort_keys=True) for c in configs if k in c}) > 1]
        for r in group:
            mine = results_config(r["config"])
            extra = tuple((k, _hashable(mine[k])) for k in differ if k in mine)
            r["variant"] = tuple(sorted(r["variant"] + extra))
    return records


def version_notes(runs: pd.DataFrame) -> list[str]:
    """A sentence per dataset (one table) whose runs were made with different versions of a package that can
    change results (``provenance.COMPARED``: Python, torch, CUDA, Lightning, transformers, timm, emmcil), or of the
    code (git commit, or a tree with changes): which versions, and how many runs had each. Runs without a recorded
    provenance are counted as "unknown"."""
    notes = []
    for dataset, g in runs.groupby("dataset", sort=True):
        parts = []
        for key in COMPARED + ("git_commit", "git_dirty"):
            seen: dict[str, int] = {}
            for config in g["config"]:
                sessions = (config or {}).get(PROVENANCE) or []
                values = {str(s.get("versions", {}).get(key) if key in COMPARED else s.get(key)) for s in sessions}
                for v in values or {"unknown"}:
                    seen[v] = seen.get(v, 0) + 1
            if len(seen) > 1:
                parts.append(f"{key} " + ", ".join(f"{v} ({n} run{'s' * (n > 1)})" for v, n in sorted(seen.items())))
        if parts:
            notes.append(f"the runs of table {dataset} were made with different versions: " + "; ".join(parts))
    return notes


def _std(x: pd.Series) -> float:
    x = x.dropna()
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def summarize_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group: n, seeds, and mean / std of the main metric and of every summary metric."""
    rows = []
    for key, g in runs.groupby(GROUP_KEYS, sort=False):
        first = g.iloc[0]
        row = dict(zip(GROUP_KEYS, key))
        row.update(label=first["label"], exp_tag=first["exp_tag"], memory_per_class=first["memory_per_class"],
                   tau_image=first["tau_image"], tau_text=first["tau_text"], n=len(g),
                   seeds=" ".join(str(s) for s in sorted(g["seed"])))
        for m in ("metric",) + tuple(dict.fromkeys(METRICS + SUMMARY_METRICS)) + ("mean_patches",):
            row[f"{m}_mean"] = float(g[m].mean()) if g[m].notna().any() else float("nan")
            row[f"{m}_std"] = _std(g[m])
        curves = [c for c in g["curve"]]
        length = min(len(c) for c in curves)
        arr = np.array([c[:length] for c in curves], dtype=float)
        row["curve_mean"] = arr.mean(0).tolist()
        row["curve_std"] = (arr.std(0, ddof=1) if len(arr) > 1 else np.full(length, np.nan)).tolist()
        rows.append(row)
    groups = pd.DataFrame(rows)
    groups["_rank"] = groups["method"].map(method_rank)
    groups["_tagged"] = groups["variant"].map(bool)
    groups = groups.sort_values(["dataset", "num_phases", "_tagged", "_rank", "label"], kind="stable")
    return groups.drop(columns=["_rank", "_tagged"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- tables
def fmt_mean_std(mean: float, std: float, n: int | None = None, usual_n: int | None = None, digits: int = 2) -> str:
    """``82.76 ± 0.31``; one seed: ``82.76``; `` (n=k)`` when k differs from the table's usual number of seeds."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{digits}f}" if std is None or math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    if n is not None and usual_n is not None and n != usual_n:
        text += f" (n={n})"
    return text


def _usual_n(groups: pd.DataFrame) -> int:
    return Counter(groups["n"]).most_common(1)[0][0] if len(groups) else 0


def _std_note(usual: int) -> str:
    return (f"mean ± sample std (ddof = 1) over {usual} seeds; (n=k) marks a cell with k seeds" if usual > 1
            else "one seed a cell (no std), unless (n=k) says otherwise")


def _fmt_paper(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def is_tagged(variant) -> bool:
    return any(k == "exp_tag" for k, _ in variant)


def main_table(groups: pd.DataFrame, dataset: str, tagged: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(markdown-ready, numeric) table of one dataset: one row per method variant, a column per L (ours, and the
    paper's where it has numbers). ``tagged=False``: the runs without exp_tag, plus a row for each method the paper
    reports that has no run of ours (the main table); ``tagged=True``: the runs with an exp_tag (ablations)."""
    g = groups[(groups["dataset"] == dataset) & (groups["variant"].map(is_tagged) == tagged)]
    paper = PAPER_TABLE.get(dataset, {}) if not tagged else {}
    phases = sorted(set(g["num_phases"]) | ({5, 10, 20} if paper else set()))
    usual = _usual_n(g)
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
        for L in phases:
            hit = g[(g["label"] == label) & (g["num_phases"] == L)]
            if len(hit):
                h = hit.iloc[0]
                md_row[f"L={L}"] = fmt_mean_std(h["metric_mean"], h["metric_std"], h["n"], usual)
                num_row.update({f"L{L}_mean": h["metric_mean"], f"L{L}_std": h["metric_std"], f"L{L}_n": h["n"]})
            else:
                md_row[f"L={L}"] = "-"
                num_row.update({f"L{L}_mean": float("nan"), f"L{L}_std": float("nan"), f"L{L}_n": 0})
            if paper:
                value = paper.get(method, {}).get(L) if not variant else None
                md_row[f"paper L={L}"] = _fmt_paper(value)
                num_row[f"L{L}_paper"] = float("nan") if value is None else value
        md.append(md_row)
        num.append(num_row)
    return pd.DataFrame(md), pd.DataFrame(num)


def _memory_series(groups: pd.DataFrame) -> dict[tuple[str, int], dict[tuple, pd.DataFrame]]:
    """(dataset, L) -> series (method, variant without memory_per_class) -> its groups, for series with >= 2 sizes."""
    out: dict[tuple[str, int], dict[tuple, pd.DataFrame]] = {}
    mem = groups[groups["memory_per_class"].notna()]
    for (dataset, L), g in mem.groupby(["dataset", "num_phases"], sort=False):
        series: dict[tuple, list] = {}
        for i, r in g.iterrows():
            rest = tuple((k, v) for k, v in r["variant"] if k != "memory_per_class")
            series.setdefault((r["method"], rest), []).append(i)
        kept = {k: g.loc[v].sort_values("memory_per_class") for k, v in series.items()
                if g.loc[v, "memory_per_class"].nunique() >= 2}
        if kept:
            out[(dataset, int(L))] = dict(sorted(kept.items(), key=lambda kv: (bool(kv[0][1]), method_rank(kv[0][0]))))
    return out


def memory_table(series: Mapping[tuple, pd.DataFrame], dataset: str, L: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long table: method, memory size, exemplars per class and accuracy, ours and the paper's."""
    paper = PAPER_MEMORY.get((dataset, L), {})
    usual = _usual_n(pd.concat(series.values())) if series else 0
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
                   "memory (samples/class)": _fmt_value(m),
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


def threshold_tables(groups: pd.DataFrame) -> dict[tuple[str, int, str], tuple[pd.DataFrame, pd.DataFrame]]:
    """(dataset, L, series label) -> (markdown, numeric) pivot tau_image x tau_text, for series with >= 2 pairs."""
    out = {}
    g = groups[groups["tau_image"].notna() & groups["tau_text"].notna()]
    usual = _usual_n(g) if len(g) else 0
    for (dataset, L), gg in g.groupby(["dataset", "num_phases"], sort=False):
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
            out[(dataset, int(L), variant_label(method, rest))] = (md, num.reset_index(drop=True))
    return out


# ---------------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panel_colours(methods: Sequence[str]) -> list[str]:
    """A colour per series of a panel: the method's own when each method has one series there, else tab10's."""
    if len(set(methods)) == len(methods):
        return [METHOD_COLOURS.get(m, f"C{i % 10}") for i, m in enumerate(methods)]
    return [f"C{i % 10}" for i in range(len(methods))]


def plot_accuracy_per_phase(groups: pd.DataFrame, path: Path, metric_note: str = "") -> Path:
    """Accuracy on all seen classes after each phase, mean ± std band over seeds; a panel per dataset x L."""
    plt = _plt()
    panels = list(groups.groupby(["dataset", "num_phases"], sort=False))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    most = max(min(len(g[~g["variant"].map(is_tagged)]) or len(g), 99) for _, g in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, (3.2 + 0.16 * math.ceil(most / 2)) * rows),
                             squeeze=False)
    for ax, ((dataset, L), g) in zip(axes.flat, panels):
        untagged = g[~g["variant"].map(is_tagged)]
        g = untagged if len(untagged) else g  # ablation runs have their own tables; shown only if alone
        for c, (_, r) in zip(panel_colours(list(g["method"])), g.iterrows()):
            mean, std = np.array(r["curve_mean"]), np.array(r["curve_std"], dtype=float)
            x = np.arange(1, len(mean) + 1)
            name = r["label"] + (f" ({PAPER_NAMES[r['method']]})" if r["method"] in PAPER_NAMES and not r["variant"]
                                 else "")
            ax.plot(x, mean, marker="o", ms=3, lw=1.4, color=c, label=f"{name}, n={r['n']}")
            if np.isfinite(std).any():
                ax.fill_between(x, mean - std, mean + std, color=c, alpha=0.15, lw=0)
        ax.set_title(f"{dataset}, L = {L}", fontsize=10)
        ax.set_xlabel("phase")
        ax.set_ylabel("accuracy on seen classes (%)")
        ax.set_xticks(np.arange(1, int(L) + 1, max(1, int(L) // 10)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if metric_note:
        fig.suptitle(metric_note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_memory(memory: Mapping[tuple[str, int], Mapping[tuple, pd.DataFrame]], path: Path, metric: str) -> Path:
    """The memory plot: exemplars per class (bars, left axis) and accuracy (lines, right axis) against the memory
    size, per method; the paper's digitised values dashed (MM-ImageNet-R, L = 10): accuracy lines, and exemplar counts
    as outlined bars beside ours."""
    plt = _plt()
    panels = list(memory.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 5.0), squeeze=False)
    for ax, ((dataset, L), series) in zip(axes.flat, panels):
        paper = PAPER_MEMORY.get((dataset, L), {})
        sizes = sorted({m for g in series.values() for m in g["memory_per_class"]}
                       | {m for ref in paper.values() for m in ref})
        pos = {m: k for k, m in enumerate(sizes)}
        acc_ax = ax.twinx()
        width = 0.8 / max(1, len(series))
        tops = [1.0]
        colours = panel_colours([method for method, _ in series])
        for i, ((method, rest), g) in enumerate(series.items()):
            c = colours[i]
            label = variant_label(method, rest)
            x = np.array([pos[m] for m in g["memory_per_class"]], dtype=float)
            ax.bar(x - 0.4 + width * (i + 0.5), g["exemplars_per_class_mean"], width, color=c, alpha=0.35,
                   yerr=g["exemplars_per_class_std"].fillna(0), error_kw={"lw": 0.8}, label=f"{label}: exemplars")
            acc_ax.errorbar(x, g["metric_mean"], yerr=g["metric_std"].fillna(0), color=c, marker="o", ms=4, lw=1.6,
                            capsize=2, label=f"{label}: accuracy (n={int(g['n'].max())})")
            ref = paper.get(method, {}) if not [k for k, _ in rest if k != "exp_tag"] else {}
            if ref:  # the paper's exemplar counts: dashed outlines on our bars' places
                ms = sorted(ref)
                ax.bar(np.array([pos[m] for m in ms]) - 0.4 + width * (i + 0.5), [ref[m][0] for m in ms], width,
                       fill=False, edgecolor=c, ls="--", lw=1.0, label=f"paper: {PAPER_NAMES[method]} exemplars")
                tops.append(max(ref[m][0] for m in ms))
        for method, ref in paper.items():
            ms = sorted(ref)
            acc_ax.plot([pos[m] for m in ms], [ref[m][1] for m in ms], ls="--", lw=1.2, marker="x", ms=4,
                        color=METHOD_COLOURS.get(method, "black"), alpha=0.8,
                        label=f"paper: {PAPER_NAMES.get(method, method)} accuracy")
        ax.set_xticks(range(len(sizes)), [_fmt_value(m) for m in sizes])
        ax.set_xlabel("memory size (samples/class)")
        ax.set_ylabel("# of exemplars per class (bars)")
        acc_ax.set_ylabel(f"{metric} (%) (lines)")
        ax.set_title(f"{dataset}, L = {L}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = acc_ax.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
                  frameon=False)
        top = max([float(np.nanmax(g["exemplars_per_class_mean"])) for g in series.values()] + tops)
        ax.set_ylim(0, top * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- the report
def _settings_note(runs: pd.DataFrame) -> str:
    """The CAPTION_SETTINGS every run shares, e.g. ``model_size=tiny, max_epoch=5``; keys that vary are skipped."""
    parts = []
    for k in CAPTION_SETTINGS:
        values = {json.dumps(c.get(k)) for c in runs["config"] if c}
        if len(values) == 1 and (v := json.loads(values.pop())) is not None:
            parts.append(f"{k}={_fmt_value(v)}")
    return ", ".join(parts)


def _write(df: pd.DataFrame, out: Path, stem: str, index: bool = False) -> tuple[Path, Path]:
    md, csv = out / f"{stem}.md", out / f"{stem}.csv"
    csv_df = df.reset_index() if index else df
    csv_df.to_csv(csv, index=False)
    md.write_text(markdown_table(df, index=index) + "\n")
    return md, csv


def metric_caption(metric: str) -> str:
    note = METRIC_NOTES.get(metric, metric)
    return (f"Accuracy (%) shown: `{metric}` ({note}). The paper does not state which accuracy its table reports; "
            f"`--metric avg_incremental_accuracy` gives the mean over phases instead.")


def build_report(patterns: Sequence[str], out: Path, metric: str = "last_accuracy", include_unfinished: bool = False,
                 note: str = "", log=print) -> dict[str, list[Path]]:
    """Collect the runs, write every table and figure to ``out``; returns the written files by kind."""
    if metric not in METRICS:
        raise ReportError(f"--metric {metric!r}: choose one of {list(METRICS)}")
    runs = collect(patterns, metric, include_unfinished, log)
    groups = summarize_groups(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {"tables": [], "figures": [], "csv": []}
    settings = _settings_note(runs)
    common = " ".join(s for s in [metric_caption(metric), "Mean ± sample std (ddof = 1) over seeds.",
                                  f"Every run: {settings}." if settings else "", note] if s)
    sections = [f"# Results of {len(runs)} runs\n", common + "\n"]
    for note_ in version_notes(runs):
        log(f"warning: {note_}")
        sections.append(f"**Warning**: {note_} (each run's config.json lists its versions under `provenance`).\n")

    variants = ("[tag, keys] name a variant: its exp_tag and its non-default keys (m = memory_per_class, "
                "τ_I = tau_image, τ_T = tau_text, p_swap / p_merge = the augmentation's probabilities).")
    for dataset in sorted(groups["dataset"].unique(), key=lambda d: (d not in PAPER_TABLE, d)):
        in_dataset = groups[groups["dataset"] == dataset]
        for tagged in (False, True):
            if not (in_dataset["variant"].map(is_tagged) == tagged).any() and (tagged or dataset not in PAPER_TABLE):
                continue
            md_df, num_df = main_table(groups, dataset, tagged)
            stem = f"{'variants' if tagged else 'table'}_{dataset}"
            paths = _write(md_df, out, stem)
            num_df.to_csv(paths[1], index=False)
            written["tables"].append(paths[0])
            written["csv"].append(paths[1])
            n_note = _std_note(_usual_n(in_dataset[in_dataset["variant"].map(is_tagged) == tagged]))
            if tagged:
                title = f"## {dataset}: ablation runs (with an exp_tag) x phases L\n"
                text = f"{metric} (%) after L phases; {n_note}. {variants}\n"
            else:
                paper = (f" `paper L=…`: the published numbers, from {PAPER_TABLE_SOURCE} (its metric is not "
                         "stated)." if dataset in PAPER_TABLE else " The paper's numbers for this dataset are not "
                         "known.")
                title = f"## {dataset}: methods x phases L\n"
                text = (f"{metric} (%) after L phases; {n_note}.{paper} Paper row: our method as the paper names it "
                        f"(replay = SSF with conventional replay, mrdc = SSF + MRDC, emm = SSF + Ours). "
                        f"{variants}\n")
            sections += [title, text, markdown_table(md_df), ""]

    memory = _memory_series(groups)
    for (dataset, L), series in memory.items():
        md_df, num_df = memory_table(series, dataset, L)
        stem = f"memory_{dataset}_L{L}"
        paths = _write(md_df, out, stem)
        num_df.to_csv(paths[1], index=False)
        written["tables"].append(paths[0])
        written["csv"].append(paths[1])
        ref = (f" Paper: {PAPER_MEMORY_SOURCE}." if (dataset, L) in PAPER_MEMORY else "")
        sections += [f"## {dataset}, L = {L}: memory size\n",
                     f"Memory budget per class in full exemplars (`memory_per_class`, in the run's `memory_unit`: "
                     f"by default each exemplar costs its size relative to the same sample stored in full, so "
                     f"`replay` holds exactly m a class, as the paper's x-axis counts samples/class); exemplars/class: "
                     f"exemplars stored per seen class after the last phase (masked ones cost less, so more fit); "
                     f"accuracy: {metric} (%).{ref}\n", markdown_table(md_df), ""]
    if memory:
        fig = plot_memory(memory, out / "memory.png", metric)
        written["figures"].append(fig)
        sections += ["![memory size](memory.png)\n",
                     "Bars: exemplars per class (left axis); lines: accuracy (right axis), mean ± std over seeds; "
                     "dashed: the paper's digitised values where they exist (MM-ImageNet-R, L = 10), accuracy as "
                     "lines, exemplar counts as outlined bars.\n"]

    for (dataset, L, label), (md_df, num_df) in threshold_tables(groups).items():
        stem = f"thresholds_{dataset}_L{L}_" + re.sub(r"[^A-Za-z0-9.=]+", "_", label).strip("_")
        paths = _write(md_df, out, stem, index=True)
        num_df.to_csv(paths[1], index=False)
        written["tables"].append(paths[0])
        written["csv"].append(paths[1])
        sections += [f"## {dataset}, L = {L}: thresholds of {label}\n",
                     f"{metric} (%) for each (τ_I, τ_T); in brackets, exemplars stored per class. The paper's "
                     f"thresholds and their ablation are not known.\n", markdown_table(md_df, index=True), ""]

    fig = plot_accuracy_per_phase(groups, out / "accuracy_per_phase.png")
    written["figures"].append(fig)
    sections += ["## Accuracy after each phase\n", "![accuracy per phase](accuracy_per_phase.png)\n",
                 "Accuracy (%) on all classes seen so far after each phase, mean ± std band over seeds.\n"]

    summary_cols = (GROUP_KEYS[:3] + ["label", "exp_tag", "memory_per_class", "tau_image", "tau_text", "n", "seeds"]
                    + [f"{m}_{s}" for m in ("metric",) + SUMMARY_METRICS for s in ("mean", "std")])
    groups.assign(variant=groups["variant"].map(lambda v: json.dumps(dict(v))), metric_name=metric)[
        ["metric_name"] + summary_cols].to_csv(
        out / "groups.csv", index=False)
    run_cols = ["path", "exp_name", "dataset", "method", "num_phases", "seed", "label", "exp_tag", "memory_per_class",
                "tau_image", "tau_text", "exemplars_per_class", *METRICS]
    runs[run_cols].to_csv(out / "runs.csv", index=False)
    written["csv"] += [out / "groups.csv", out / "runs.csv"]
    report = out / "report.md"
    report.write_text("\n".join(sections) + "\n")
    written["tables"].insert(0, report)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emmcil.report",
                                     description="Tables and figures of the paper from many runs' results.json.")
    parser.add_argument("runs", nargs="+", help="run directories, results.json files, log_dirs, or globs of them")
    parser.add_argument("--out", required=True, type=Path, help="folder for the tables (md, csv) and figures (png)")
    parser.add_argument("--metric", default="last_accuracy", choices=METRICS,
                        help="the accuracy the tables show (default: last_accuracy)")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="keep runs that have not finished every phase (their last phase counts as the end)")
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
