"""The report's figures: accuracy after each phase (a panel per dataset x L) and the memory-size plot (exemplars per
class as bars, accuracy as lines, the paper's digitised values dashed). Drawn on matplotlib ``Figure`` objects and
saved as PNG at print resolution and as PDF (:func:`emmcil.figures.save_figure`), without pyplot, so no global
backend or figure registry is touched."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emmcil.figures import save_figure

from .collect import equal_phases, format_value, is_tagged, protocol_title, variant_label
from .paper import PAPER_MEMORY, PAPER_NAMES

# The memory plot's colours (gray SSF, blue SSF + CIM, pink SSF + Ours), and one for each other method.
METHOD_COLOURS = {"replay": "#7f7f7f", "cim": "#1f77b4", "emm": "#e377c2", "mrdc": "#2ca02c", "finetune": "#8c564b",
                  "joint": "#bcbd22", "l2p": "#ff7f0e", "dualprompt": "#d62728", "ease": "#9467bd"}


LINE_STYLES = ("-", ":", "-.", (0, (3, 1, 1, 1, 1, 1)))  # not "--": the paper's values are dashed
MARKERS = ("o", "s", "^", "D", "v", "P")


def series_styles(methods: Sequence[str]) -> list[dict]:
    """A matplotlib style per series of a panel (``color``, ``ls``, ``marker``): the method's colour (its own, or a
    tab10 colour no other method of the panel has), and for a method's 2nd, 3rd, ... series (its variants, e.g.
    ``emm [m=1]``) another line style and marker, so that no two series look alike however many there are (tab10
    alone repeats after 10)."""
    taken = {METHOD_COLOURS[m] for m in methods if m in METHOD_COLOURS}
    spare = (f"C{i}" for i in range(10) if f"C{i}" not in taken)
    colour: dict[str, str] = {}
    for m in dict.fromkeys(methods):
        colour[m] = METHOD_COLOURS.get(m) or next(spare, "black")
    seen: dict[str, int] = {}
    styles = []
    for m in methods:
        k = seen[m] = seen.get(m, -1) + 1
        styles.append({"color": colour[m], "ls": LINE_STYLES[k % len(LINE_STYLES)],
                       "marker": MARKERS[k % len(MARKERS)]})
    return styles


def legend_name(r: pd.Series) -> str:
    """A group's legend entry: its label, the paper's row name for a method at its defaults, the seed count."""
    paper = f" ({PAPER_NAMES[r['method']]})" if r["method"] in PAPER_NAMES and not r["variant"] else ""
    return f"{r['label']}{paper}, n={r['n']}"


def plot_accuracy_per_phase(groups: pd.DataFrame, path: Path, metric_note: str = "") -> list[Path]:
    """Accuracy on all seen classes after each phase, mean ± std band over seeds; a panel per dataset x protocol.
    Returns the PNG and PDF written."""
    panels = list(groups.groupby(["dataset", "protocol"], sort=False))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    shown = [untagged if len(untagged := g[~g["variant"].map(is_tagged)]) else g for _, g in panels]
    names = [[legend_name(r) for _, r in g.iterrows()] for g in shown]
    # the legends sit below the panels: one column of long labels (variants), two of short ones; the figure grows
    # with them (a fixed size squeezed the plots to a sliver and cut the labels off at 20+ groups)
    longest = max(len(n) for panel in names for n in panel)
    ncol = 1 if longest > 32 else 2
    lines = max(math.ceil(len(panel) / ncol) for panel in names)
    fig = Figure(figsize=(max(5.0, 0.06 * longest * ncol + 0.8) * cols, (3.2 + 0.16 * lines) * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, ((dataset, protocol), _), g, panel in zip(axes.flat, panels, shown, names):
        L = int(g["num_phases"].iloc[0])
        for style, (_, r), name in zip(series_styles(list(g["method"])), g.iterrows(), panel):
            mean, std = np.array(r["curve_mean"]), np.array(r["curve_std"], dtype=float)
            x = np.arange(1, len(mean) + 1)
            ax.plot(x, mean, ms=3, lw=1.4, label=name, **style)
            if np.isfinite(std).any():
                ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15, lw=0)
        ax.set_title(f"{dataset}, {protocol_title(protocol, L)}", fontsize=10)
        ax.set_xlabel("phase")
        ax.set_ylabel("accuracy on seen classes (%)")
        ax.set_xticks(np.arange(1, L + 1, max(1, L // 10)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if metric_note:
        fig.suptitle(metric_note, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, bbox_inches="tight")  # nothing cut off at the edges (long legends)


def plot_memory(memory: Mapping[tuple[str, str], Mapping[tuple, pd.DataFrame]], path: Path, metric: str
                ) -> list[Path]:
    """The memory plot: exemplars per class (bars, left axis) and accuracy (lines, right axis) against the memory
    size, per method; the paper's digitised values dashed (MM-ImageNet-R, L = 10): accuracy lines, and exemplar counts
    as outlined bars beside ours. Returns the PNG and PDF written."""
    panels = list(memory.items())
    fig = Figure(figsize=(6.0 * len(panels), 5.0))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, ((dataset, protocol), series) in zip(axes.flat, panels):
        paper = PAPER_MEMORY.get((dataset, equal_phases(protocol)), {})
        L = int(next(iter(series.values()))["num_phases"].iloc[0])
        sizes = sorted({m for g in series.values() for m in g["memory_per_class"]}
                       | {m for ref in paper.values() for m in ref})
        pos = {m: k for k, m in enumerate(sizes)}
        acc_ax = ax.twinx()
        width = 0.8 / max(1, len(series))
        tops = [1.0]
        styles = series_styles([method for method, _ in series])
        for i, ((method, rest), g) in enumerate(series.items()):
            c = styles[i]["color"]
            label = variant_label(method, rest)
            x = np.array([pos[m] for m in g["memory_per_class"]], dtype=float)
            ax.bar(x - 0.4 + width * (i + 0.5), g["exemplars_per_class_mean"], width, color=c, alpha=0.35,
                   yerr=g["exemplars_per_class_std"].fillna(0), error_kw={"lw": 0.8}, label=f"{label}: exemplars")
            acc_ax.errorbar(x, g["metric_mean"], yerr=g["metric_std"].fillna(0), color=c, marker=styles[i]["marker"],
                            ls=styles[i]["ls"], ms=4, lw=1.6,
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
        ax.set_xticks(range(len(sizes)), [format_value(m) for m in sizes])
        ax.set_xlabel("memory size (samples/class)")
        ax.set_ylabel("# of exemplars per class (bars)")
        acc_ax.set_ylabel(f"{metric} (%) (lines)")
        ax.set_title(f"{dataset}, {protocol_title(protocol, L)}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = acc_ax.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
                  frameon=False)
        top = max([float(np.nanmax(g["exemplars_per_class_mean"])) for g in series.values()] + tops)
        ax.set_ylim(0, top * 1.15)
    fig.tight_layout()
    return save_figure(fig, path, bbox_inches="tight")  # nothing cut off at the edges (long legends)
