"""Size and speed of the memory browser (``python -m emmcil.report.memory``) on a run of the paper's size.

A 200-class run (MM-ImageNet-R, L = 10 phases of 20 classes, ``emm`` at m = 5: about 14 masked exemplars a class, so
2,800 after the last phase) is written as its phases save it (``memory/phase_<t>/memory.json`` with a 12 x 18 patch
map and a caption of ``--tokens`` wordpieces, about half of them kept, per exemplar; the images are one 384 x 576
PNG and one JPEG linked under every exemplar's names, since only the pages are measured here). The browser writes
it twice: as it does (``--classes-per-page``, default 20, so the last phase takes 10 pages) and with a whole phase on
one page. Side by side in one run:

* the time to write every page (in this process: the browser imports no torch) and the size of the last phase's
  first page each way;
* with Chromium (``scripts/screenshot.sh``), the time to open each of them and draw its first screen (``--window``
  CSS pixels; the images below it are lazy-loaded), Chromium's start-up included (an empty page shows it alone),
  and the ratio.

    python benchmarks/bench_memory_browser.py
    python benchmarks/bench_memory_browser.py --classes 100 --phases 5 --per-class 14
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # emmcil
from machine_load import OtherLoad  # noqa: E402  (benchmarks/machine_load.py)

from emmcil.report.memory import write_browser  # noqa: E402

WORDS = "a painting of a small brown dog sitting on a wooden bench in a park with trees and a blue sky".split()


def image_files(folder: Path, rows: int, cols: int, patch: int) -> tuple[Path, Path]:
    """One PNG (smooth, as a photo's masked canvas) and one JPEG, linked under every exemplar's names."""
    h, w = rows * patch, cols * patch
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (h + w))], -1).astype(np.uint8)
    png, jpg = folder / "_stored.png", folder / "_input.jpg"
    Image.fromarray(rgb).save(png)
    Image.fromarray(rgb).save(jpg, quality=90)
    return png, jpg


def make_run(path: Path, classes: int, phases: int, per_class: int, tokens: int, rows: int = 12, cols: int = 18,
             patch: int = 32) -> Path:
    """A run directory as an ``emm`` run's phases leave it, for the browser (results.json's fields it reads)."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    png, jpg = image_files(path, rows, cols, patch)
    per_phase = classes // phases
    memory, held = [], {}
    caption = ["[CLS]"] + [WORDS[i % len(WORDS)] for i in range(tokens - 2)] + ["[SEP]"]
    for t in range(phases):
        folder = path / "memory" / f"phase_{t}"
        folder.mkdir(parents=True)
        new = list(range(t * per_phase, (t + 1) * per_phase))
        records = []
        for c in new:
            held[c] = list(range(c * 30, c * 30 + per_class))
            for rank, index in enumerate(held[c], 1):
                stem = f"c{c}_{index}"
                os.link(png, folder / f"{stem}.png")
                os.link(jpg, folder / f"{stem}_input.jpg")
                kept = [True] + list(rng.random(tokens - 2) < 0.5) + [True]
                records.append({
                    "label": c, "orig_label": c, "index": index, "image_id": f"n{c:08d}_{index}.jpg",
                    "kind": "patches", "rank": rank, "candidates": 120, "similarity": float(1 - 0.01 * rank),
                    "cost": 0.34, "unit": "tokens",
                    "costs": {"tokens": 0.34, "byte_share": 0.33, "bytes": 200_000},
                    "nbytes": 200_000, "full_nbytes": 600_000,
                    "patch_share": 0.26, "word_share": 0.5, "num_patches": 56, "num_tokens": int(sum(kept)),
                    "grid": [rows, cols], "tokens": caption, "token_kept": [bool(k) for k in kept],
                    "attention": np.round(rng.random((rows, cols)), 3).tolist(), "stored_image": f"{stem}.png",
                    "stored_size": [rows * patch, cols * patch], "input_image": f"{stem}_input.jpg"})
        manifest = {"format": 1, "phase": t, "method": "emm", "unit": "tokens", "class_budget": 5.0,
                    "notes": {"ranking": "cos(f(x~), mu_c)", "similarity": "cos(f(x~), mu_c)", "attention": "A"},
                    "new_classes": new, "classes": {str(c): v for c, v in held.items()}, "exemplars": records}
        (folder / "memory.json").write_text(json.dumps(manifest))
        memory.append({"exemplars": per_class * len(held)})
    (path / "results.json").write_text(json.dumps({"method": "emm", "class_order": list(range(classes)),
                                                   "completed_phases": phases, "memory": memory}))
    return path


def screenshot_seconds(page: Path, shot: Path, window: tuple[int, int]) -> float:
    t = time.perf_counter()
    subprocess.run(["bash", str(ROOT / "scripts" / "screenshot.sh"), str(page), str(shot), *map(str, window)],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--phases", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=14, help="exemplars a class (emm at m = 5: 14 in the paper)")
    ap.add_argument("--tokens", type=int, default=80, help="wordpieces a caption (MM-ImageNet-R: up to 128)")
    ap.add_argument("--classes-per-page", type=int, default=20, help="the browser's default")
    ap.add_argument("--window", type=int, nargs=2, default=(1400, 1000), help="Chromium's window, CSS pixels")
    ap.add_argument("--repeats", type=int, default=3, help="screenshots per page (the median is shown)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_memory_browser_") as tmp:
        t = time.perf_counter()
        run = make_run(Path(tmp) / "run", args.classes, args.phases, args.per_class, args.tokens)
        made = time.perf_counter() - t
        load = OtherLoad()
        ways = {f"pages of {args.classes_per_page} classes": args.classes_per_page, "a phase on one page": 10**9}
        written, first_page = {}, {}
        for way, per_page in ways.items():
            out = Path(tmp) / way.replace(" ", "_")
            t = time.perf_counter()
            write_browser([run], out, classes_per_page=per_page, log=lambda msg: None)
            written[way] = (time.perf_counter() - t, sum(p.stat().st_size for p in out.glob("phase_*.html")),
                            len(list(out.glob("phase_*.html"))))
            first_page[way] = out / f"phase_{args.phases - 1}.html"
        n_last = args.classes * args.per_class
        print(f"a {args.classes}-class run, {args.phases} phases, {args.per_class} exemplars a class ({n_last} after "
              f"the last phase), {args.tokens}-wordpiece captions; made in {made:.1f} s; {load} during the timing\n")
        print("pages (the last phase's first page: its size, and the exemplars it shows)")
        for way, (seconds, total, count) in written.items():
            page = first_page[way]
            shown = page.read_text().count('<article class="ex"')
            print(f"  {way}: written in {seconds:.2f} s, {count} pages, {total / 2**20:.1f} MB in all; last phase's "
                  f"first page {page.stat().st_size / 2**20:.2f} MB, {shown} exemplars")
        browser = os.environ.get("CHROMIUM") or shutil.which("chromium")
        if not browser:
            print("\nno Chromium (apt-get install -y chromium): opening the pages not timed")
            return
        empty = Path(tmp) / "empty.html"
        empty.write_text("<!doctype html><title>empty</title>")
        first_page["an empty page (Chromium's start-up)"] = empty
        times = {}
        for _ in range(args.repeats):  # in turn, so that a change in the machine's load hits them all
            for way, page in first_page.items():
                times.setdefault(way, []).append(screenshot_seconds(page, Path(tmp) / "shot.png", tuple(args.window)))
        median = {way: statistics.median(v) for way, v in times.items()}
        print(f"\nChromium: open the last phase's first page and draw its first {args.window[0]}x{args.window[1]} "
              f"screen (median of {args.repeats}, start-up included)")
        for way, seconds in median.items():
            print(f"  {way}: {seconds:.2f} s")
        a, b, _ = list(median)
        print(f"\nratios\n  {a} / {b}, time to draw: {median[a] / median[b]:.2f}")
        print(f"  {a} / {b}, page bytes: {first_page[a].stat().st_size / first_page[b].stat().st_size:.2f}")


if __name__ == "__main__":
    main()
