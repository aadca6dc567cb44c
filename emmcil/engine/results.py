"""``results.json`` and ``results.md`` of a run, and the tables printed at the end (pandas)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

from emmcil.settings.protocol import protocol_label
from emmcil.markdown import markdown_table
from emmcil.settings import Settings

from .metrics import summarize
from .rundir import run_identity

# results.json holds no wall-clock times, so a resumed run writes the same file as an uninterrupted one.
METRIC_NOTES = {
    "accuracy_matrix": "R[t][j]: % accuracy after phase t on the test samples of phase j's classes (null: j > t)",
    "accuracy_per_phase": "% accuracy on all seen classes after each phase (sample-weighted)",
    "avg_incremental_accuracy": "mean of accuracy_per_phase",
    "last_accuracy": "accuracy_per_phase after the last phase",
    "forgetting": "FACIL / Chaudhry et al.: mean over old phases j of max_{j<=t<L-1} R[t][j] - R[L-1][j] (the best "
                  "accuracy before the last phase; negative under backward transfer)",
    "forgetting_pycil": "PyCIL / PILOT trainer.py: mean over old phases j of max_{j<=t<=L-1} R[t][j] - R[L-1][j] "
                        "(the last phase included, so never negative)",
    "forgetting_first": "first-based: mean over old phases j of R[j][j] - R[L-1][j] (RebQ, Avalanche)",
    "old_accuracy": "after the last phase, % accuracy on the classes of earlier phases",
    "new_accuracy": "after the last phase, % accuracy on its own classes (= R[L-1][L-1])",
    "mean_last_row": "mean over phases of R[L-1][j] (RebQ's 'AP')",
    "memory": "per phase, the method's memory after it: unit (the budget's: 'tokens', each exemplar costs its stored "
              "tokens over the same sample's, a compressed image its reference's rate, so a full one costs 1.0; "
              "'byte_share', its share of the sample's bytes; 'bytes'), class_budget in that unit, exemplars, cost "
              "in that unit and costs in every unit ({unit: total}; tokens and byte_share in full exemplars, bytes "
              "in bytes), in all and per class, kept_patch_share / kept_word_share (mean share of the patches at "
              "full resolution / of the words other than [CLS], [SEP] that the stored exemplars keep)",
    "rebq_metrics": "RebQ's compute_cl_metric on R: AP = mean_last_row, forgetting = forgetting_first, "
                    "last = R[L-1][L-1] (its 'Last'); accuracies in %, class-incremental as ours",
}


def build_results(settings: Settings, order: Sequence[int], phases: Sequence[Sequence[int]],
                  counts: Sequence[tuple[list[int], list[int]]], memory: Sequence[dict | None],
                  data_fingerprint: Mapping[str, str] | None = None) -> dict:
    """Everything ``results.json`` holds; ``counts[t]`` = per seen class (correct, total) after phase t,
    ``memory[t]`` = the method's memory report after phase t (None without memory), ``data_fingerprint`` = the
    training and test files' fingerprints (``RunData.fingerprint``). Besides the metrics it holds what the
    multi-run report needs to know of the run (:func:`~emmcil.engine.rundir.run_identity`, and the data's
    fingerprint: runs on different data are never averaged together)."""
    e = settings.experiment
    L = e.num_phases
    boundaries = [0] + [p[-1] + 1 for p in phases]
    done = len(counts)
    results = {
        "exp_name": settings.run.exp_name, "dataset": e.dataset, "method": e.method, "num_phases": L,
        "init_classes": e.init_classes, "increment": e.increment,
        "protocol": protocol_label(L, e.init_classes, e.increment), "seed": e.seed, "completed_phases": done,
        "finished": done == L,
        "class_order": list(order), "phase_classes": [[order[c] for c in p] for p in phases],
    }
    results.update(summarize(counts, boundaries, L) if done else {})
    if done:
        results["rebq_metrics"] = rebq_metrics(results["accuracy_matrix"][:done])
    per_phase = []
    for t in range(done):
        s = summarize(counts[: t + 1], boundaries, L)
        mem = memory[t] or {}
        per_phase.append({"phase": t, "new_classes": len(phases[t]), "seen_classes": boundaries[t + 1],
                          "accuracy": s["last_accuracy"], "new_accuracy": s["new_accuracy"],
                          "old_accuracy": s["old_accuracy"], "forgetting": s["forgetting"],
                          "memory_exemplars": mem.get("exemplars"),
                          "memory_exemplars_per_class": mem.get("mean_exemplars_per_class"),
                          "memory_unit": mem.get("unit"), "memory_cost": mem.get("cost"),
                          **{f"memory_cost_{u}": (mem.get("costs") or {}).get(u) for u in ("tokens", "byte_share")},
                          "memory_bytes": mem.get("bytes"),
                          "kept_patch_share": mem.get("kept_patch_share"),
                          "kept_word_share": mem.get("kept_word_share")})
    results["phases"] = per_phase
    results["memory"] = list(memory)
    results["metric_definitions"] = METRIC_NOTES
    results.update(run_identity(settings))  # what the multi-run report groups and names runs by
    results["data_fingerprint"] = dict(data_fingerprint) if data_fingerprint else None
    return results


def rebq_metrics(R: Sequence[Sequence[float | None]]) -> dict:
    """RebQ's metrics (``src/engine/evaluator.py::compute_cl_metric``) of the matrix R of the phases done:
    ``AP`` = mean of the last row, ``forgetting`` = mean over j < L-1 of R[j][j] - R[L-1][j] (None for L = 1),
    ``last`` = R[L-1][L-1]."""
    L = len(R)
    last_row = [R[L - 1][j] for j in range(L)]
    forgetting = (sum(R[j][j] - last_row[j] for j in range(L - 1)) / (L - 1)) if L > 1 else None
    return {"AP": sum(last_row) / L, "forgetting": forgetting, "last": last_row[-1]}


def phase_table(results: Mapping) -> pd.DataFrame:
    """One row per finished phase: classes, accuracies (%), memory."""
    df = pd.DataFrame(results["phases"])
    if df.empty:
        return df
    df = df.rename(columns={"phase": "phase", "new_classes": "new cls", "seen_classes": "seen cls",
                            "accuracy": "acc (seen)", "new_accuracy": "acc new", "old_accuracy": "acc old",
                            "forgetting": "forgetting", "memory_exemplars": "memory",
                            "memory_exemplars_per_class": "per class", "memory_cost_tokens": "cost (tokens)",
                            "memory_cost_byte_share": "cost (byte share)", "memory_bytes": "memory MB",
                            "kept_patch_share": "patches kept %", "kept_word_share": "words kept %"})
    df = df.drop(columns=["memory_unit", "memory_cost"], errors="ignore")  # the unit's cost is one of the columns
    memory_cols = ["memory", "per class", "cost (tokens)", "cost (byte share)", "memory MB", "patches kept %",
                   "words kept %"]
    df["memory MB"] = df["memory MB"].map(lambda b: None if b is None or pd.isna(b) else b / 2**20)
    for col in ("patches kept %", "words kept %"):
        df[col] = df[col].map(lambda v: None if v is None or pd.isna(v) else 100 * v)
    if df["memory"].isna().all():
        df = df.drop(columns=memory_cols)
    return df


def matrix_table(results: Mapping) -> pd.DataFrame:
    R = results.get("accuracy_matrix", [])
    done = results["completed_phases"]
    return pd.DataFrame([row[:done] for row in R[:done]], index=[f"after {t}" for t in range(done)],
                        columns=[f"phase {j}" for j in range(done)])


def summary_table(results: Mapping) -> pd.DataFrame:
    keys = ["avg_incremental_accuracy", "last_accuracy", "forgetting", "forgetting_pycil", "forgetting_first",
            "old_accuracy", "new_accuracy", "mean_last_row"]
    rebq = results.get("rebq_metrics") or {}
    return pd.DataFrame({"metric": keys + [f"RebQ {k}" for k in ("AP", "forgetting", "last")],
                         "value": [results.get(k) for k in keys] + [rebq.get(k) for k in ("AP", "forgetting", "last")]})


def results_markdown(results: Mapping) -> str:
    protocol = f" ({results['protocol']})" if results.get("increment") else ""
    head = (f"# {results['exp_name']}\n\n{results['dataset']}, method {results['method']}, "
            f"{results['completed_phases']}/{results['num_phases']} phases{protocol}, seed {results['seed']}. "
            f"Accuracies in %.\n")
    if not results["completed_phases"]:
        return head
    return "\n".join([head, "## Per phase\n", markdown_table(phase_table(results)), "",
                      "## Accuracy matrix R[t][j]\n", markdown_table(matrix_table(results), index=True), "",
                      "## Summary\n", markdown_table(summary_table(results)), ""])


def phase_metrics(results: Mapping, phase: int) -> dict[str, float]:
    """The evaluation after ``phase`` as flat metrics for loggers (accuracies in %, memory in exemplars / bytes):
    ``eval/accuracy`` (seen classes), ``eval/new_accuracy``, ``eval/old_accuracy``, ``eval/forgetting``,
    ``eval/task_{j}_accuracy`` (R[phase][j], j <= phase), ``memory/exemplars``, ``memory/mean_exemplars_per_class``,
    ``memory/cost`` (in the budget's unit), ``memory/cost_tokens``, ``memory/cost_byte_share`` (in full exemplars),
    ``memory/bytes``, ``memory/kept_patch_share``, ``memory/kept_word_share``; entries that do not exist yet (e.g.
    old accuracy after phase 0) are left out."""
    row = results["phases"][phase]
    out: dict[str, Any] = {f"eval/{k}": row[k] for k in ("accuracy", "new_accuracy", "old_accuracy", "forgetting",
                                                           "seen_classes")}
    out.update({f"eval/task_{j}_accuracy": v for j, v in enumerate(results["accuracy_matrix"][phase][:phase + 1])})
    memory = results["memory"][phase]
    if memory:
        out.update({f"memory/{k}": memory.get(k) for k in ("exemplars", "mean_exemplars_per_class", "cost", "bytes",
                                                             "kept_patch_share", "kept_word_share")})
        out.update({f"memory/cost_{u}": (memory.get("costs") or {}).get(u) for u in ("tokens", "byte_share")})
    return {k: float(v) for k, v in out.items() if v is not None}
