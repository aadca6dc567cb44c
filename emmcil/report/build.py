"""The whole report: every table and figure of :mod:`emmcil.report` into one folder, and ``report.md`` with their
captions (what ``python -m emmcil.report`` runs)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from emmcil.figures import PRINT_DPI
from emmcil.markdown import markdown_table

from .collect import (METRICS, SUMMARY_METRICS, ReportError, collect, equal_phases, format_value, is_tagged,
                      protocol_title, summarize_groups, version_notes)
from .paper import PAPER_MEMORY, PAPER_MEMORY_SOURCE, PAPER_TABLE, PAPER_TABLE_SOURCE
from .plots import plot_accuracy_per_phase, plot_memory
from .tables import (main_table, memory_series, memory_table, std_note, threshold_tables, usual_seed_count,
                     write_table)

# Settings a caption names when they are the same for every run of a table (the demo's short schedule, say).
CAPTION_SETTINGS = ("model_size", "tuning", "max_epoch", "batch_size", "lr", "precision")


def _settings_note(runs: pd.DataFrame) -> str:
    """The CAPTION_SETTINGS every run shares, e.g. ``model_size=tiny, max_epoch=5``; keys that vary are skipped."""
    parts = []
    for k in CAPTION_SETTINGS:
        values = {json.dumps(c.get(k)) for c in runs["results_config"]}
        if len(values) == 1 and (v := json.loads(values.pop())) is not None:
            parts.append(f"{k}={format_value(v)}")
    return ", ".join(parts)


def metric_caption(metric: str, definition: str) -> str:
    """The caption's sentence on the accuracy shown: ``metric`` and its ``definition`` (the runs' own)."""
    return (f"Accuracy (%) shown: `{metric}` ({definition}). The paper does not state which accuracy its table "
            f"reports; `--metric avg_incremental_accuracy` gives the mean over phases instead.")


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
    caption = metric_caption(metric, runs["metric_definition"].iloc[0])  # the first run's words for the metric
    common = " ".join(s for s in [caption, "Mean ± sample std (ddof = 1) over seeds.",
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
            paths = write_table(md_df, num_df, out, stem)
            written["tables"].append(paths[0])
            written["csv"].append(paths[1])
            n_note = std_note(usual_seed_count(in_dataset[in_dataset["variant"].map(is_tagged) == tagged]))
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

    def title(dataset: str, protocol: str) -> str:  # "L = 10", "B50-Inc10 (6 phases)"
        L = groups[(groups["dataset"] == dataset) & (groups["protocol"] == protocol)]["num_phases"].iloc[0]
        return protocol_title(protocol, int(L))

    memory = memory_series(groups)
    for (dataset, protocol), series in memory.items():
        md_df, num_df = memory_table(series, dataset, protocol)
        stem = f"memory_{dataset}_{protocol.replace('=', '')}"
        paths = write_table(md_df, num_df, out, stem)
        written["tables"].append(paths[0])
        written["csv"].append(paths[1])
        ref = (f" Paper: {PAPER_MEMORY_SOURCE}." if (dataset, equal_phases(protocol)) in PAPER_MEMORY else "")
        sections += [f"## {dataset}, {title(dataset, protocol)}: memory size\n",
                     f"Memory budget per class in full exemplars (`memory_per_class`, in the run's `memory_unit`: "
                     f"by default `tokens`, each exemplar costs its stored tokens over the same sample's, so "
                     f"`replay` holds exactly m a class, as the paper's x-axis counts samples/class); exemplars/class: "
                     f"exemplars stored per seen class after the last phase (masked ones cost less, so more fit); "
                     f"accuracy: {metric} (%). Only methods run at two or more memory sizes are here; a method "
                     f"run at one size is in the tables above.{ref}\n", markdown_table(md_df), ""]
    if memory:
        written["figures"] += plot_memory(memory, out / "memory.png", metric)
        sections += ["![memory size](memory.png)\n",
                     "Bars: exemplars per class (left axis); lines: accuracy (right axis), mean ± std over seeds; "
                     "dashed: the paper's digitised values where they exist (MM-ImageNet-R, L = 10), accuracy as "
                     "lines, exemplar counts as outlined bars. For print: [memory.pdf](memory.pdf) (vector), the "
                     f"PNG at {PRINT_DPI} dpi.\n"]

    for (dataset, protocol, label), (md_df, num_df) in threshold_tables(groups).items():
        stem = f"thresholds_{dataset}_{protocol.replace('=', '')}_" + re.sub(r"[^A-Za-z0-9.=]+", "_", label).strip("_")
        paths = write_table(md_df, num_df, out, stem, index=True)
        written["tables"].append(paths[0])
        written["csv"].append(paths[1])
        sections += [f"## {dataset}, {title(dataset, protocol)}: thresholds of {label}\n",
                     f"{metric} (%) for each (τ_I, τ_T); in brackets, exemplars stored per class. The paper's "
                     f"thresholds and their ablation are not known.\n", markdown_table(md_df, index=True), ""]

    written["figures"] += plot_accuracy_per_phase(groups, out / "accuracy_per_phase.png")
    sections += ["## Accuracy after each phase\n", "![accuracy per phase](accuracy_per_phase.png)\n",
                 "Accuracy (%) on all classes seen so far after each phase, mean ± std band over seeds. For print: "
                 f"[accuracy_per_phase.pdf](accuracy_per_phase.pdf) (vector), the PNG at {PRINT_DPI} dpi.\n"]

    summary_cols = (["dataset", "num_phases", "protocol", "method", "label", "exp_tag", "memory_per_class",
                     "tau_image", "tau_text", "n", "seeds"]
                    + [f"{m}_{s}" for m in ("metric",) + SUMMARY_METRICS for s in ("mean", "std")])
    groups.assign(variant=groups["variant"].map(lambda v: json.dumps(dict(v))), metric_name=metric)[
        ["metric_name"] + summary_cols].to_csv(
        out / "groups.csv", index=False)
    run_cols = ["path", "exp_name", "dataset", "method", "num_phases", "protocol", "seed", "label", "exp_tag",
                "memory_per_class", "tau_image", "tau_text", "exemplars_per_class", *METRICS]
    runs[run_cols].to_csv(out / "runs.csv", index=False)
    written["csv"] += [out / "groups.csv", out / "runs.csv"]
    report = out / "report.md"
    report.write_text("\n".join(sections) + "\n")
    written["tables"].insert(0, report)
    return written
