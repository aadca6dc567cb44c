"""The memory browser: ``python -m emmcil.report.memory RUN_DIR [RUN_DIR ...] --out DIR`` writes static HTML pages
of what each run's memory holds after every phase, as the paper's Fig. 4 draws an exemplar.

For every stored exemplar: its image as stored (a masked exemplar's kept patches in place and the discarded ones
dark, CIM's downsampled background, MRDC's JPEG file as it is), the attention map the method chose it by (``emm``:
A_CLS->I; ``cim``: its CAM) over the input image, its caption with the kept words red and the discarded ones gray,
its cost in the run's ``memory_unit``, its cosine similarity to the class mean its ranking aims at and its rank
among the class's samples; per class and per phase the totals (exemplars, cost, kept shares, bytes). Several runs
go side by side on one page (``emm`` beside ``replay`` at the same memory), class by class, matched by dataset
class. Written to ``--out``: ``index.html`` (every run, every phase's totals, checked against ``results.json``),
``phase_<t>.html`` (one page per phase, so a 200-class run opens: images load lazily) and ``files/`` (the images,
hard-linked or copied from the runs). No server, no network, no JavaScript: the folder opens from the file system.

The pages read what the run saved with each phase (``memory/phase_<t>/``, written by
:mod:`emmcil.memory.snapshot`: PNG, JPEG and JSON), never a checkpoint, so this module stays free of torch; why the
phase saves them instead of the browser re-computing them: that module's docstring. A run made before the phases
saved them, or with ``memory_browser=False``, gets an error that says so.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import numpy as np
from PIL import Image

from emmcil.settings import saved_concern
from emmcil.settings.general import MemorySettings

from .collect import ReportError

# The layout emmcil.memory.snapshot writes (FOLDER, MANIFEST, FORMAT there; tests/test_memory_browser.py checks
# that they agree).
FOLDER, MANIFEST, FORMAT = "memory", "memory.json", 1
GENERATOR = "emmcil.report.memory"
CLASSES_PER_PAGE = 20  # a phase's page holds this many classes; a 200-class run's phase gets 10 pages
TILE_PX = 96  # the height images are shown at (CSS pixels; a click opens the file at its own size)
KEPT, DISCARDED = "#d62728", "#9a9a9a"  # Fig. 4's colours (emmcil.memory.figure)
# the frames of the stored images and of the attention maps, and the bar that ends a page (the browser test finds
# them in a screenshot)
STORED_FRAME, MAP_FRAME, END_BAR = "#1f77b4", "#ff7f0e", "#2ca02c"


class MemoryBrowserError(ReportError):
    """A run the browser cannot show; the message names the run directory and what to do."""


def format_cost(cost: float | None, unit: str) -> str:
    """A cost in a ``memory_unit``: ``0.314 full ex.`` (``tokens``, ``byte_share``: relative to the same sample in
    full), ``12.3 KB`` (``bytes``); another unit as ``<value> <unit>``."""
    if cost is None:
        return "-"
    if unit in ("tokens", "byte_share"):
        return f"{cost:.3f}\u00a0full\u00a0ex."
    if unit == "bytes":
        return format_bytes(cost)
    return f"{cost:.3g} {unit}"


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for scale, name in ((2**30, "GB"), (2**20, "MB"), (2**10, "KB")):
        if n >= scale:
            return f"{n / scale:.1f} {name}"
    return f"{int(n)} B"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"


def mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------------------------- reading runs
@dataclass
class MemoryRun:
    """One run's saved memory: ``manifests[t]`` is phase t's ``memory.json``."""

    path: Path
    results: dict
    class_order: list[int]                       # remapped label -> dataset class
    class_names: list[str] | None                # by dataset class, when the dataset has names
    manifests: dict[int, dict]
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        return str(self.results["method"])

    def record(self, phase: int, label: int, index: int) -> tuple[dict, int] | None:
        """The record of exemplar (label, dataset row) as of ``phase``: the latest phase <= ``phase`` that stored it,
        and that phase; None if no saved phase holds it."""
        for t in sorted((t for t in self.manifests if t <= phase), reverse=True):
            if (label, index) in self.manifests[t]["_by_key"]:
                return self.manifests[t]["_by_key"][label, index], t
        return None

    def memory_after(self, phase: int) -> dict[int, list[tuple[dict, int] | None]]:
        """Dataset class -> its exemplars after ``phase`` in stored order (record and the phase that saved it, or
        None where no saved phase holds it)."""
        classes = self.manifests[phase]["classes"]
        return {self.class_order[int(c)]: [self.record(phase, int(c), int(i)) for i in rows]
                for c, rows in classes.items()}

    label: str = ""                              # how the pages name it (set by write_browser)

    def reported(self, phase: int, orig: int | None = None) -> dict:
        """What results.json says of the memory after ``phase`` (of dataset class ``orig``, or all of it): cost in
        the run's unit, bytes and (for all of it) the kept shares; the totals of exemplars no saved phase holds."""
        memory = self.results["memory"][phase] or {}
        if orig is None:
            return {"cost": memory.get("cost"), "nbytes": memory.get("bytes"),
                    "patch_share": memory.get("kept_patch_share"), "word_share": memory.get("kept_word_share")}
        label = str(self.class_order.index(orig))
        return {"cost": (memory.get("cost_per_class") or {}).get(label),
                "nbytes": (memory.get("bytes_per_class") or {}).get(label), "patch_share": None, "word_share": None}

    def class_name(self, orig: int) -> str:
        """``name (dataset class 7)``, or ``dataset class 7`` for a dataset without names."""
        if self.class_names and orig < len(self.class_names):
            return f"{self.class_names[orig]} (dataset class {orig})"
        return f"dataset class {orig}"


def load_memory_run(path: str | Path) -> MemoryRun:
    """Read a run directory's ``results.json``, ``class_order.json`` and every ``memory/phase_<t>/memory.json``.

    Raises :class:`MemoryBrowserError` for a folder without results.json, a method without memory, a run with no
    saved phase (made before the phases saved the browser's files, or with ``memory_browser=False``), or a
    manifest of a newer format. A finished phase without its folder is named in ``notes``."""
    path = Path(path)
    if path.name == "results.json":
        path = path.parent
    try:
        results = json.loads((path / "results.json").read_text())
    except FileNotFoundError:
        raise MemoryBrowserError(f"{path}: no results.json (not a run directory, or a run before the end of its "
                                 f"first phase)") from None
    except json.JSONDecodeError as e:
        raise MemoryBrowserError(f"{path / 'results.json'}: not valid JSON ({e})") from None
    memory = results.get("memory") or []
    if not any(memory):
        raise MemoryBrowserError(f"{path}: method {results.get('method')!r} keeps no memory: there are no exemplars "
                                 f"to browse")
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except (OSError, ValueError) as e:
        raise MemoryBrowserError(f"{config_path}: cannot read it as JSON ({e})") from None
    manifests = {}
    for t in range(int(results["completed_phases"])):
        file = path / FOLDER / f"phase_{t}" / MANIFEST
        if not file.is_file():
            continue
        manifest = json.loads(file.read_text())
        if int(manifest.get("format", 0)) > FORMAT:
            raise MemoryBrowserError(f"{file}: format {manifest['format']}, written by a newer emmcil than this "
                                     f"browser (format {FORMAT}); update emmcil")
        manifest["_folder"] = file.parent
        for rec in manifest["exemplars"]:  # the map drawn once, though every later phase's page shows it
            rec["_map"] = heatmap_uri(rec["attention"]) if rec.get("attention") is not None else None
        manifest["_by_key"] = {(int(rec["label"]), int(rec["index"])): rec for rec in manifest["exemplars"]}
        manifests[t] = manifest
    if not manifests:
        if not saved_concern(MemorySettings, config).memory_browser:
            why = "it was made with memory_browser=False, so its phases saved nothing for the browser"
        else:
            why = ("it was made before the phases saved what the browser shows (memory/phase_<t>/memory.json); its "
                   "checkpoints hold the stored exemplars but not their attention maps, discarded words, ranks or "
                   "similarities")
        raise MemoryBrowserError(f"{path}: {why}. Run it again to browse its memory: the same command with "
                                 f"restart=True (or with another exp_name=... to keep this run).")
    notes = []
    missing = [t for t in range(int(results["completed_phases"])) if t not in manifests and memory[t]]
    if missing:
        notes.append(f"phases {missing} saved nothing for the browser (made before it, or with "
                     f"memory_browser=False); their pages show what later phases saved")
    order = json.loads((path / "class_order.json").read_text()) if (path / "class_order.json").is_file() else {}
    return MemoryRun(path=path, results=results, class_order=list(results["class_order"]),
                     class_names=order.get("class_names"), manifests=manifests, notes=notes)


# ---------------------------------------------------------------------------------------------- html pieces
CSS = f"""
:root {{ --tile: {TILE_PX}px; }}
body {{ font: 13px/1.35 system-ui, sans-serif; margin: 0 16px 16px; color: #222; background: #fff; }}
header {{ border-bottom: 1px solid #ccc; margin-bottom: 8px; }}
h1 {{ font-size: 20px; margin: 10px 0 4px; }} h2 {{ font-size: 15px; margin: 0 0 4px; }}
nav a, nav b {{ margin-right: 10px; }} nav.classes a {{ margin-right: 8px; white-space: nowrap; }}
table {{ border-collapse: collapse; margin: 6px 0; }} td, th {{ border: 1px solid #ddd; padding: 2px 6px; }}
th {{ background: #f4f4f4; text-align: left; }} td.n {{ text-align: right; }} .bad {{ color: {KEPT}; }}
.legend {{ color: #555; max-width: 1100px; }} .note {{ color: #8a5a00; }}
section.cls {{ border-top: 1px solid #ccc; padding-top: 6px; margin-top: 10px; }}
.runs {{ display: grid; gap: 12px; }} .run > .sum {{ margin: 0 0 4px; color: #333; overflow-wrap: anywhere; }}
td {{ overflow-wrap: anywhere; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 8px; }}
.ex {{ width: min-content; min-width: 230px; border: 1px solid #e2e2e2; padding: 4px; background: #fafafa; }}
.pics {{ display: flex; gap: 4px; }} .pics a {{ display: block; }}
.pics img {{ height: var(--tile); width: auto; display: block; }}
img.stored {{ border: 2px solid {STORED_FRAME}; }}
.attn {{ position: relative; display: block; border: 2px solid {MAP_FRAME}; }}
.attn img.map {{ position: absolute; left: 0; top: 0; width: 100%; height: 100%; opacity: .5;
  image-rendering: pixelated; }}
.cap {{ margin: 4px 0 2px; font-family: ui-monospace, monospace; font-size: 12px; }}
.cap .k {{ color: {KEPT}; font-weight: 600; }} .cap .d {{ color: {DISCARDED}; }}
.cap .s {{ color: #000; font-size: 10px; }}
footer {{ border-top: 4px solid {END_BAR}; margin-top: 16px; padding-top: 2px; color: #888; font-size: 11px; }}
.meta, .id {{ margin: 0; color: #444; font-size: 11px; }} .id {{ color: #888; overflow-wrap: anywhere; }}
"""


def caption_html(tokens: Sequence[str], kept: Sequence[bool]) -> str:
    """Wordpieces as Fig. 4 writes them: kept red, discarded gray, [CLS]/[SEP] black; ``##`` pieces joined to the
    word they continue (each piece keeps its own colour). Neighbours of one colour share a span (a 128-token caption
    on each of a 200-class run's 2,800 exemplars: the markup is most of a page)."""
    parts: list[list[str]] = []  # [class, text]; class "" for the space between two spans
    for tok, k in zip(tokens, kept):
        cls = "s" if tok in ("[CLS]", "[SEP]") else "k" if k else "d"
        joined = tok.startswith("##") and len(tok) > 2
        text = html.escape(tok[2:] if joined else tok)
        space = "" if not parts or joined else " "
        if parts and parts[-1][0] == cls:
            parts[-1][1] += space + text
        else:
            if space:
                parts.append(["", space])
            parts.append([cls, text])
    return "".join(f'<span class="{c}">{t}</span>' if c else t for c, t in parts)


def heatmap_uri(attention: Sequence[Sequence[float]]) -> str:
    """A (rows, cols) map in [0, 1] as a data-URI PNG of rows x cols pixels, jet colours (Fig. 4's), shown stretched
    over the input image."""
    from matplotlib import colormaps

    grid = np.clip(np.asarray(attention, dtype=np.float64), 0.0, 1.0)
    rgb = (colormaps["jet"](grid)[..., :3] * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class Files:
    """The images the pages show, linked (or copied) from the runs into ``out/files/r<k>/phase_<t>/``."""

    def __init__(self, out: Path):
        self.out, self.done = out, set()

    def use(self, k: int, run: MemoryRun, phase: int, name: str) -> str:
        """The page-relative URL of ``run``'s image ``name`` saved by ``phase``, placed beside the pages."""
        rel = Path("files") / f"r{k}" / f"phase_{phase}" / name
        if rel not in self.done:
            src, dst = run.manifests[phase]["_folder"] / name, self.out / rel
            if not src.is_file():
                raise MemoryBrowserError(f"{src}: missing (named in {run.manifests[phase]['_folder'] / MANIFEST})")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(src, dst)
            self.done.add(rel)
        return quote(rel.as_posix())


def card_html(rec: dict, k: int, run: MemoryRun, saved_phase: int, files: Files) -> str:
    """One exemplar: image as stored | attention map over the input | caption | numbers."""
    h, w = rec["stored_size"]
    alt = html.escape(f"stored image of {rec['image_id']}")
    src = files.use(k, run, saved_phase, rec["stored_image"])
    pics = [f'<a href="{src}"><img class="stored" src="{src}" width="{w}" height="{h}" loading="lazy" '
            f'decoding="async" alt="{alt}" title="as stored ({rec["kind"]})"></a>']
    if rec["_map"] is not None and rec.get("input_image"):
        src = files.use(k, run, saved_phase, rec["input_image"])
        pics.append(f'<span class="attn" title="attention map over the input image (not stored)"><img src="{src}" '
                    f'width="{w}" height="{h}" loading="lazy" decoding="async" alt="input image">'
                    f'<img class="map" src="{rec["_map"]}" alt="attention map"></span>')
    sim = "-" if rec.get("similarity") is None else f"{rec['similarity']:.6g}"  # tiny models: 0.999997
    words = "" if rec.get("word_share") is None else f" · words {percent(rec['word_share'])}"
    other = "; ".join(f"{u}: {format_cost(c, u)}" for u, c in rec.get("costs", {}).items() if u != rec["unit"])
    cost = f'<span title="in the other units: {html.escape(other)}">' if other else "<span>"
    cost += f"cost {format_cost(rec['cost'], rec['unit'])}</span>"
    meta = (f"rank {rec['rank']}/{rec['candidates']} · sim {sim} · {cost}<br>"
            f"patches {percent(rec['patch_share'])}{words} · {format_bytes(rec['nbytes'])}")
    return (f'<article class="ex" data-run="{k}" data-kind="{html.escape(rec["kind"])}" '
            f'data-patch-share="{rec["patch_share"]:.6f}">'
            f'<div class="pics">{"".join(pics)}</div>'
            f'<p class="cap">{caption_html(rec["tokens"], rec["token_kept"])}</p>'
            f'<p class="meta">{meta}</p><p class="id">{html.escape(rec["image_id"])}</p></article>')


def totals(entries: Sequence[tuple[dict, int] | None], reported: dict) -> dict:
    """Exemplars, cost (in the run's unit), bytes and mean kept shares of a list of exemplars; ``unrecorded``
    counts those no saved phase holds (a run resumed after ``memory_browser=False``). Then the sums of the saved
    ones would be short, so the numbers are results.json's (``reported``: :meth:`MemoryRun.reported`; None, shown as
    "?", where it has none)."""
    recs = [e[0] for e in entries if e is not None]
    out = {"exemplars": len(entries), "unrecorded": len(entries) - len(recs),
           "cost": sum(r["cost"] for r in recs), "nbytes": sum(r["nbytes"] for r in recs),
           "patch_share": mean([r["patch_share"] for r in recs]), "word_share": mean([r["word_share"] for r in recs])}
    if out["unrecorded"]:
        out.update({k: reported.get(k) for k in ("cost", "nbytes", "patch_share", "word_share")})
    return out


def totals_text(t: dict, unit: str, budget: float | None = None) -> str:
    budget_text = f" of {format_cost(budget, unit)}" if budget is not None else ""
    text = (f"{t['exemplars']} exemplar{'s' * (t['exemplars'] != 1)} · cost {format_cost(t['cost'], unit)}"
            f"{budget_text} · patches {percent(t['patch_share'])} · words {percent(t['word_share'])} · "
            f"{format_bytes(t['nbytes'])}")
    if t["unrecorded"]:
        text += (f' · <span class="note">{t["unrecorded"]} saved before the browser, not shown (totals from '
                 f'results.json; "-" where it has none)</span>')
    return text


def page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="generator" '
            f'content="{GENERATOR}"><title>{html.escape(title)}</title><style>{CSS}</style></head>\n'
            f'<body>\n{body}\n<footer>end of page · written by python -m {GENERATOR}</footer></body></html>\n')


def phase_nav(phases: Sequence[int], current: int | None) -> str:
    links = ['<b>overview</b>' if current is None else '<a href="index.html">overview</a>']
    links += [f"<b>phase {t}</b>" if t == current else f'<a href="phase_{t}.html">phase {t}</a>' for t in phases]
    return f'<nav class="phases">{"".join(links)}</nav>'


def legend(runs: Sequence[MemoryRun]) -> str:
    lines = ["<b>Blue frame</b>: the image as the memory stores it (a masked exemplar's discarded patches dark; CIM's "
             "background downsampled, as stored; MRDC's JPEG file). <b>Orange frame</b>: the attention map over the "
             "input image (the input is not stored). Words: <span style='color:%s'>kept</span>, "
             "<span style='color:%s'>discarded</span>. <i>rank</i>: place in the class's ranking of its samples; "
             "<i>sim</i>: cosine similarity to the class mean; <i>cost</i>: what the exemplar takes of its class's "
             "budget, in the run's memory_unit." % (KEPT, DISCARDED)]
    for k, run in enumerate(runs):
        notes = next(iter(run.manifests.values()))["notes"]
        parts = [f"ranking: {notes['ranking']}", f"sim: {notes['similarity']}"]
        if notes.get("attention"):
            parts.append(f"map: {notes['attention']}")
        lines.append(f"{run_tag(run)}: " + html.escape("; ".join(parts)))
        lines += [f'<span class="note">{html.escape(n)}</span>' for n in run.notes]
    return '<p class="legend">' + "<br>".join(lines) + "</p>"


def page_name(phase: int, part: int) -> str:
    """``phase_<t>.html`` for a phase's first page, ``phase_<t>_<k>.html`` for its k-th (k >= 2)."""
    return f"phase_{phase}.html" if part == 1 else f"phase_{phase}_{part}.html"


def phase_pages(runs: Sequence[MemoryRun], phase: int, phases: Sequence[int], files: Files,
                classes_per_page: int = 20) -> tuple[dict[str, str], dict[int, int]]:
    """The pages of the memory after ``phase`` (file name -> HTML; ``classes_per_page`` classes a page, so that a
    page of a 200-class run opens at once), and the number of exemplars they show per run."""
    held = {k: run.memory_after(phase) for k, run in enumerate(runs) if phase in run.manifests}
    order: list[int] = []
    for k in sorted(held):
        order += [c for c in held[k] if c not in order]
    parts = [order[i:i + classes_per_page] for i in range(0, len(order), classes_per_page)] or [[]]
    part_of = {c: n for n, part in enumerate(parts, 1) for c in part}
    rows = ["<tr><th>run</th><th>directory</th><th>classes</th><th>exemplars</th><th>cost</th><th>patches kept</th>"
            "<th>words kept</th><th>bytes</th></tr>"]
    shown = {}
    for k, run in enumerate(runs):
        if k not in held:
            rows.append(f"<tr><td>{run_tag(run)}</td><td>{html.escape(run.name)}</td>"
                        f"<td colspan=6>no phase {phase} saved</td></tr>")
            continue
        t = totals([e for v in held[k].values() for e in v], run.reported(phase))
        shown[k] = t["exemplars"]
        unit = run.manifests[phase]["unit"]
        rows.append(f"<tr><td>{run_tag(run)}</td><td>{html.escape(run.name)}</td>"
                    f"<td class=n>{len(held[k])}</td><td class=n>{t['exemplars']}</td>"
                    f"<td class=n>{format_cost(t['cost'], unit)}</td><td class=n>{percent(t['patch_share'])}</td>"
                    f"<td class=n>{percent(t['word_share'])}</td><td class=n>{format_bytes(t['nbytes'])}</td></tr>")
    # each run's column as wide as its share of the exemplars (emm holds several times replay's), at least 1/4
    per_class = [max(1.0, shown.get(k, 0) / max(1, len(held.get(k, {})))) for k in range(len(runs))]
    columns = " ".join(f"minmax(0, {max(w, max(per_class) / 4):.2f}fr)" for w in per_class)
    pages = {}
    for n, part in enumerate(parts, 1):
        here = page_name(phase, n)
        links = "".join(f'<a href="{"" if part_of[c] == n else page_name(phase, part_of[c])}#class-{c}">'
                        f'{html.escape(first_name(runs, c).replace("dataset ", ""))}</a>' for c in order)
        pager = "" if len(parts) == 1 else '<nav class="phases">classes: ' + "".join(
            f"<b>{i}</b>" if i == n else f'<a href="{page_name(phase, i)}">{i}</a>' for i in range(1, len(parts) + 1)
        ) + f" (pages of {classes_per_page})</nav>"
        head = (f"<header><h1>Memory after phase {phase}</h1>{phase_nav(phases, phase)}<table>{''.join(rows)}</table>"
                f"{legend(runs)}<details open><summary>{len(order)} classes</summary><nav class=\"classes\">"
                f"{links}</nav></details>{pager}</header>")
        sections = [class_section(runs, held, c, phase, columns, files) for c in part]
        pages[here] = page(f"memory after phase {phase}", head + "<main>" + "".join(sections) + "</main>" + pager)
    return pages, shown


def class_section(runs: Sequence[MemoryRun], held: dict, c: int, phase: int, columns: str, files: Files) -> str:
    """Dataset class ``c`` after ``phase``: per run, its totals and its exemplars' cards, side by side."""
    cols = []
    for k, run in enumerate(runs):
        entries = held.get(k, {}).get(c)
        if entries is None:
            cols.append(f'<div class="run"><p class="sum">{run_tag(run)}: not in memory</p></div>')
            continue
        manifest = run.manifests[phase]
        cards = "".join(card_html(e[0], k, run, e[1], files) for e in entries if e is not None)
        summary = totals_text(totals(entries, run.reported(phase, c)), manifest["unit"], manifest["class_budget"])
        cols.append(f'<div class="run"><p class="sum">{run_tag(run)}: {summary}</p>'
                    f'<div class="cards">{cards}</div></div>')
    learned = sorted({e[1] for k in held for e in held[k].get(c, []) if e is not None})
    when = f" <small>stored in phase {', '.join(map(str, learned))}</small>" if learned else ""
    return (f'<section class="cls" id="class-{c}"><h2>{html.escape(first_name(runs, c))}{when}</h2>'
            f'<div class="runs" style="grid-template-columns: {columns}">{"".join(cols)}</div></section>')


def run_tag(run: MemoryRun) -> str:
    return f'<b title="{html.escape(str(run.path))}">{html.escape(run.label)}</b>'


def first_name(runs: Sequence[MemoryRun], orig: int) -> str:
    return runs[0].class_name(orig)


def index_page(runs: Sequence[MemoryRun], phases: Sequence[int], shown: dict[int, dict[int, int]]) -> str:
    """Every run and, per phase, its memory's totals beside what results.json says."""
    parts = [f"<header><h1>Memory of {len(runs)} run{'s' * (len(runs) > 1)}</h1>{phase_nav(phases, None)}"
             f"{legend(runs)}</header><main>"]
    for k, run in enumerate(runs):
        first = run.manifests[min(run.manifests)]
        rows = ["<tr><th>phase</th><th>classes</th><th>exemplars</th><th>results.json</th><th>cost</th>"
                "<th>patches kept</th><th>words kept</th><th>bytes</th></tr>"]
        for t in phases:
            if t not in run.manifests:
                continue
            held = run.memory_after(t)
            tt = totals([e for v in held.values() for e in v], run.reported(t))
            reported = (run.results["memory"][t] or {}).get("exemplars")
            # red: the pages do not show every exemplar results.json counts
            flag = "" if reported == tt["exemplars"] == shown.get(t, {}).get(k) and not tt["unrecorded"] \
                else ' class="n bad"'
            rows.append(f'<tr><td><a href="phase_{t}.html">phase {t}</a></td><td class=n>{len(held)}</td>'
                        f'<td class=n>{tt["exemplars"]}</td><td{flag or " class=n"}>{reported}</td>'
                        f'<td class=n>{format_cost(tt["cost"], run.manifests[t]["unit"])}</td>'
                        f'<td class=n>{percent(tt["patch_share"])}</td><td class=n>{percent(tt["word_share"])}</td>'
                        f'<td class=n>{format_bytes(tt["nbytes"])}</td></tr>')
        parts.append(f"<h2>{html.escape(run.label)}: {html.escape(run.name)}</h2><p>method "
                     f"{html.escape(run.method)}, memory_unit {html.escape(first['unit'])}, class budget "
                     f"{format_cost(first['class_budget'], first['unit'])}; {html.escape(str(run.path))}</p>"
                     f"<table>{''.join(rows)}</table>")
    return page("memory browser", "".join(parts) + "</main>")


def write_browser(run_dirs: Sequence[str | Path], out: str | Path, classes_per_page: int = CLASSES_PER_PAGE,
                  log=print) -> Path:
    """Write the browser of ``run_dirs`` (side by side, in this order) to ``out``; returns ``out/index.html``.
    Raises :class:`MemoryBrowserError` for a run it cannot show (see :func:`load_memory_run`)."""
    if not run_dirs:
        raise MemoryBrowserError("no run directory given")
    if classes_per_page < 1:
        raise MemoryBrowserError(f"--classes-per-page {classes_per_page}: at least 1")
    runs = [load_memory_run(p) for p in run_dirs]
    methods = [run.method for run in runs]
    for k, run in enumerate(runs):  # "emm", or "emm #2" beside another emm run
        run.label = run.method if methods.count(run.method) == 1 else f"{run.method} #{k + 1}"
    for run in runs:
        for note in run.notes:
            log(f"note: {run.path}: {note}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "index.html").is_file() and GENERATOR in (out / "index.html").read_text(errors="replace")[:400]:
        for old in out.glob("phase_*.html"):  # an earlier browser's pages: a run may have had more phases
            old.unlink()
        shutil.rmtree(out / "files", ignore_errors=True)
    phases = sorted({t for run in runs for t in run.manifests})
    files, shown = Files(out), {}
    for t in phases:
        pages, shown[t] = phase_pages(runs, t, phases, files, classes_per_page)
        for name, text in pages.items():
            (out / name).write_text(text, encoding="utf-8")
    index = out / "index.html"
    index.write_text(index_page(runs, phases, shown), encoding="utf-8")
    return index


def main(argv: Sequence[str] | None = None, prog: str = "python -m emmcil.report.memory") -> int:
    """``python -m emmcil.report.memory RUN_DIR [RUN_DIR ...] --out DIR``; returns the exit status (1 on a run it
    cannot show, printed as ``error: ...``)."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Static HTML pages of every exemplar a run's memory holds after "
                                                 "each phase; several runs side by side.")
    parser.add_argument("runs", nargs="+", help="run directories (python run.py prints one on its last line)")
    parser.add_argument("--out", required=True, type=Path, help="folder for index.html, phase_<t>.html and files/")
    parser.add_argument("--classes-per-page", type=int, default=CLASSES_PER_PAGE,
                        help=f"classes on one page of a phase (default {CLASSES_PER_PAGE}; more go on further pages, "
                             f"phase_<t>_2.html, ...)")
    opts = parser.parse_args(argv)
    try:
        index = write_browser(opts.runs, opts.out, opts.classes_per_page, log=lambda msg: print(msg, file=sys.stderr))
    except MemoryBrowserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"memory browser: {index.resolve().as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
