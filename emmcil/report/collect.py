"""Reading runs: every ``results.json`` (and its ``config.json``'s provenance) into one row per run, grouped by
dataset, protocol (L equal phases, or PyCIL's B{init}-Inc{increment}), method and variant, with mean ± sample std
over seeds.

Everything known of a run comes from the files it wrote (:func:`emmcil.engine.rundir.run_identity`): the
method's own config keys and their defaults, whether it keeps exemplars, the config keys that change results,
its ``exp_tag``, the metrics' definitions, and (``config.json``) the versions it was made with. Nothing here imports
torch or the method registry. A file without a key the report needs is a :class:`ReportError` naming the file and
the key.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from emmcil.provenance import COMPARED, CONFIG_ENTRY
from emmcil.settings.general import MemorySettings, MissingSettings, RunSettings

from .paper import method_rank

# Defaults of the general keys that name a variant when a run's value differs (the settings' fields): the memory
# budget of the methods with memory, the exp_tag of every run.
MEMORY_KEYS = ("memory_per_class", "memory_unit", "memory_budget_mode", "memory_total")
GENERAL_DEFAULTS = {**{k: getattr(MemorySettings(), k) for k in MEMORY_KEYS}, "exp_tag": RunSettings().exp_tag}
# The missing-modality protocol's keys (RebQ's CMML), variant keys of every method in a missing-modality run.
MISSING_DEFAULTS = dataclasses.asdict(MissingSettings())
# How a variant's keys read in a label: ``emm [abl_tau, τ_I=0.3]``.
SHORT = {"memory_per_class": "m", "memory_unit": "unit", "tau_image": "τ_I", "tau_text": "τ_T",
         "aug_text_swap": "p_swap", "aug_patch_merge": "p_merge", "memory_total": "M", "missing_type": "missing",
         "missing_ratio": "ratio"}

# What results.json must hold; the last five say what the run is (run_identity) and what its metrics mean.
REQUIRED = ("dataset", "method", "num_phases", "seed", "completed_phases", "finished", "accuracy_per_phase",
            "last_accuracy", "avg_incremental_accuracy", "memory", "exp_tag", "uses_memory", "method_defaults",
            "results_config", "metric_definitions")
IDENTITY = ("exp_tag", "uses_memory", "method_defaults", "results_config")
METRICS = ("last_accuracy", "avg_incremental_accuracy", "mean_last_row", "old_accuracy", "new_accuracy",
           "forgetting", "forgetting_pycil", "forgetting_first")
SUMMARY_METRICS = ("last_accuracy", "avg_incremental_accuracy", "forgetting", "exemplars_per_class")
GROUP_KEYS = ["dataset", "protocol", "method", "variant"]


class ReportError(ValueError):
    """A results file that cannot be read or lacks a key; the message names the file and the key."""


def find_results(patterns: Iterable[str], log=print) -> list[Path]:
    """results.json files of run directories, results files, log_dirs, or globs of them (sorted, unique). A folder
    that a glob matches and that holds none (a run that has not finished its first phase) is named in a note."""
    found: list[Path] = []
    empty: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        hits = []
        for m in map(Path, matches):
            if m.is_file():
                hits.append(m)
            elif (m / "results.json").is_file():
                hits.append(m / "results.json")
            elif m.is_dir():
                inside = sorted(m.glob("*/results.json"))
                hits.extend(inside)
                if not inside:
                    empty.append(str(m))
        if not hits:
            raise ReportError(f"{pattern}: no results.json there (a run directory, a results.json, a folder of run "
                              f"directories, or a glob of them; a run writes results.json after its first phase)")
        found.extend(hits)
    if empty and found:
        log(f"note: no results.json in {len(empty)} folder(s) matched (a run writes it after its first phase): "
            + ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else ""))
    unique, seen = [], set()
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _require(mapping: Mapping, key: str, path: Path, where: str = "") -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        hint = (" (runs made before results.json carried it lack it: run the run's command again, which finds "
                "every phase done and rewrites results.json)" if key in IDENTITY else "")
        raise ReportError(f"{path}: missing key {key!r}{where}; is it the results.json of a run (python run.py)?"
                          + hint)
    return mapping[key]


def _number(v) -> float:
    return float("nan") if v is None else float(v)


def equal_phases(protocol: str) -> int | None:
    """L of an equal-phase protocol (``L=10`` -> 10), None for PyCIL's ``B50-Inc10``: the paper's numbers exist for
    the former only."""
    return int(protocol[2:]) if protocol.startswith("L=") else None


def protocol_title(protocol: str, num_phases: int) -> str:
    """How a panel or section names a protocol: ``L = 10``, ``B50-Inc10 (6 phases)``."""
    return f"L = {num_phases}" if equal_phases(protocol) is not None else f"{protocol} ({num_phases} phases)"


def format_value(v) -> str:
    """A config value as a label shows it: ``0.3``, ``[-1,-2]``, ``abl_tau``."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
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
    definition = _require(results["metric_definitions"], metric, path, " in 'metric_definitions'")
    config_path = path.parent / "config.json"  # only for its provenance: the versions the run was made with
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except (OSError, ValueError) as e:
        raise ReportError(f"{config_path}: cannot read it as JSON ({e}); move it aside to report the run without "
                          f"its provenance") from e
    done = int(results["completed_phases"])
    curve = [_number(v) for v in results["accuracy_per_phase"]]
    if len(curve) != done:
        raise ReportError(f"{path}: 'accuracy_per_phase' has {len(curve)} values for {done} completed phases")

    memory = results["memory"]
    last_memory = memory[done - 1] if done and isinstance(memory, list) and len(memory) >= done else None
    exemplars_per_class = mean_patches = float("nan")
    if last_memory:
        where = f" in 'memory'[{done - 1}] (the memory report of the last phase)"
        if "exemplars_per_class" in last_memory and last_memory["exemplars_per_class"]:
            exemplars_per_class = float(np.mean(list(last_memory["exemplars_per_class"].values())))
        else:
            phases = _require(results, "phases", path)
            seen = _require(phases[done - 1], "seen_classes", path, f" in 'phases'[{done - 1}]")
            exemplars_per_class = _require(last_memory, "exemplars", path, where) / seen
        mean_patches = _number(last_memory.get("mean_patches"))

    method = str(results["method"])
    uses_memory = bool(results["uses_memory"])
    kept = dict(results["results_config"])  # the keys that change results (what the run name is made of too)
    if results.get("data_fingerprint"):  # and the data: runs on re-written files are never averaged together
        kept["data"] = hashlib.sha1(json.dumps(results["data_fingerprint"], sort_keys=True).encode()).hexdigest()[:8]
    defaults = {**results["method_defaults"], "exp_tag": RunSettings().exp_tag}
    if uses_memory:
        defaults.update({k: GENERAL_DEFAULTS[k] for k in MEMORY_KEYS})
    if kept.get("missing_type", "none") != "none":
        defaults.update({k: v for k, v in MISSING_DEFAULTS.items() if k in kept})
    named = {k: kept[k] for k in defaults if k in kept}
    named["exp_tag"] = results["exp_tag"]
    variant = tuple(sorted((k, _hashable(v)) for k, v in named.items() if _hashable(v) != _hashable(defaults[k])))
    if uses_memory and named.get("memory_budget_mode", "per_class") != "total":
        variant = tuple((k, v) for k, v in variant if k != "memory_total")  # memory_total unused per class
    if not results["finished"]:  # kept by --include-unfinished: its numbers are after phase `done`, not the last
        variant = tuple(sorted(variant + (("phases", f"{done}/{int(results['num_phases'])}"),)))
    record = {
        "path": str(path.parent), "exp_name": results.get("exp_name", path.parent.name),
        "dataset": str(results["dataset"]), "method": method, "num_phases": int(results["num_phases"]),
        # runs made before the key existed had equal phases
        "protocol": str(results.get("protocol") or f"L={int(results['num_phases'])}"),
        "seed": results["seed"], "finished": bool(results["finished"]), "completed_phases": done,
        "variant": variant, "exp_tag": named["exp_tag"],
        "memory_per_class": named.get("memory_per_class", MemorySettings().memory_per_class)
        if uses_memory else None,
        "tau_image": named.get("tau_image"), "tau_text": named.get("tau_text"),
        "exemplars_per_class": exemplars_per_class, "mean_patches": mean_patches, "curve": curve,
        "results_config": kept, "provenance": config.get(CONFIG_ENTRY) or [], "metric_definition": definition,
    }
    for m in METRICS:
        record[m] = _number(results.get(m))
    record["metric"] = _number(results[metric])
    return record


def variant_label(method: str, variant: Sequence[tuple[str, Any]], drop: Sequence[str] = ()) -> str:
    """``emm`` or ``emm [abl_tau, τ_I=0.3]``: the method and its non-default keys (exp_tag first, by value)."""
    items = [(k, v) for k, v in variant if k not in drop]
    parts = [str(v) for k, v in items if k == "exp_tag"]
    parts += [f"{SHORT.get(k, k)}={format_value(v)}" for k, v in items if k != "exp_tag"]
    return method + (f" [{', '.join(parts)}]" if parts else "")


def is_tagged(variant) -> bool:
    """Whether a variant has an exp_tag (an ablation's run: its own table, apart from the main one)."""
    return any(k == "exp_tag" for k, _ in variant)


def collect(patterns: Iterable[str], metric: str = "last_accuracy", include_unfinished: bool = False,
            log=print) -> pd.DataFrame:
    """One row per run (unfinished runs are left out unless asked for, and then labelled with the phases they
    finished, e.g. ``mrdc [phases=3/5]``, never averaged with finished runs; a repeated seed of a group is dropped)."""
    records = [load_run(p, metric) for p in find_results(patterns, log)]
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
            log(f"warning: {r['path']} repeats seed {r['seed']} of {kept[key]['path']} (same dataset, method, "
                f"protocol and variant); left out")
            continue
        kept[key] = r
    runs = pd.DataFrame(list(kept.values()))
    runs["label"] = [variant_label(m, v) for m, v in zip(runs["method"], runs["variant"])]
    return runs


def split_by_differing_keys(records: list[dict]) -> list[dict]:
    """Add to each run's variant the keys that change results (its ``results_config``) and differ between the runs of
    its dataset, protocol and method, beyond those the variant already compares with their defaults: e.g. two runs
    with different ``lr`` become ``replay [lr=0.01]`` and ``replay [lr=0.001]``, so runs that sit in different run
    directories (their names differ in those keys) are not averaged together."""
    buckets: dict[tuple, list[dict]] = {}
    for r in records:
        buckets.setdefault((r["dataset"], r["protocol"], r["method"]), []).append(r)
    for group in buckets.values():
        if len(group) < 2:
            continue
        configs = [r["results_config"] for r in group]
        shown = {k for r in group for k, _ in r["variant"]}
        keys = sorted({k for c in configs for k in c} - shown - {"seed"})
        # a key some configs lack (older code, or one the method does not read there) is compared where it exists
        differ = [k for k in keys if len({json.dumps(c[k], sort_keys=True) for c in configs if k in c}) > 1]
        for r in group:
            mine = r["results_config"]
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
            for sessions in g["provenance"]:
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
        row.update(num_phases=int(first["num_phases"]), label=first["label"], exp_tag=first["exp_tag"],
                   memory_per_class=first["memory_per_class"],
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
    groups = groups.sort_values(["dataset", "num_phases", "protocol", "_tagged", "_rank", "label"], kind="stable")
    return groups.drop(columns=["_rank", "_tagged"]).reset_index(drop=True)
