"""Every benchmark in one command, with small settings, then a summary of the key ratios.

Runs, one after the other as subprocesses of this interpreter (so one benchmark's threads and memory do not affect
the next), and prints their output under headings as it comes:

1. ``bench_backbone.py --batch 2 --iters 3``: forward, ours vs transformers' ``ViltModel`` (ViLT-B/32);
2. ``bench_train.py`` (its defaults: batch 2, 384x384, 3 steps): training step, ours with SSF / frozen vs
   ``ViltModel`` frozen;
3. ``bench_masking.py --skip-b32``: masking pass vs evaluation pass, exemplars per class at m = 1..10 and masks
   (demo set, tiny model);
4. ``bench_loader.py --skip-b32``: loader vs training step (demo set, tiny model).

and ends with a table of the key ratios read from their outputs (a benchmark that fails is reported as such and the
others still run). ``--device`` and ``--threads`` are passed to every benchmark (when not given, each keeps its own
default: torch's default threads, except ``bench_masking.py``'s 1). Its time is in the README's Quick start
(``bench_commands.py`` measures it); ``--full`` drops the small settings (each script's defaults, the ViLT-B/32
rows of ``bench_masking.py`` and ``bench_loader.py`` included: a few minutes more).

    python benchmarks/bench_all.py
    python benchmarks/bench_all.py --threads 1            # on a shared 2-core machine (see README)
    python benchmarks/bench_all.py --device cuda --full
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root, for emmcil when run from anywhere
from emmcil.incremental.report import markdown_table  # noqa: E402

SMALL = {"bench_backbone.py": ["--batch", "2", "--iters", "3"], "bench_train.py": [],
         "bench_masking.py": ["--skip-b32"], "bench_loader.py": ["--skip-b32"]}


def run(script: str, args: list[str]) -> tuple[str, int, float]:
    """Run ``script`` from this folder, echo its output line by line; return (stdout, return code, seconds)."""
    cmd = [sys.executable, script, *args]
    print(f"\n## {script}\n\n`python benchmarks/{' '.join(cmd[1:])}`\n", flush=True)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    rc = proc.wait()
    return "".join(lines), rc, time.perf_counter() - t


def tables(text: str) -> list[pd.DataFrame]:
    """The markdown pipe tables in ``text`` (strings, stripped)."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            if len(block) > 2:
                out.append(pd.DataFrame(block[2:], columns=block[0]))
            block = []
    return out


def table_with(text: str, column: str) -> pd.DataFrame | None:
    return next((t for t in tables(text) if column in t.columns), None)


def ratio(text: str, label: str) -> float | None:
    m = re.search(re.escape(label) + r"\s+([\d.]+)", text)
    return float(m.group(1)) if m else None


def summary(outputs: dict[str, tuple[str, int, float]]) -> pd.DataFrame:
    rows = []

    def add(script, quantity, value, meaning):
        text, rc, _ = outputs.get(script, ("", None, 0.0))
        if rc is None:
            value = "not run"
        elif rc != 0:
            value = f"failed (exit {rc})"
        elif value is None:
            value = "not found in the output"
        rows.append({"benchmark": script, "ratio": quantity, "value": value, "meaning": meaning})

    text = outputs.get("bench_backbone.py", ("",))[0]
    add("bench_backbone.py", "ours / HF forward (SSF, fused attention)", ratio(text, "ours fused / ViltModel:"),
        "samples/s, >1: ours faster")
    text = outputs.get("bench_train.py", ("",))[0]
    add("bench_train.py", "ours SSF / HF frozen, train step", ratio(text, "ours SSF / HF frozen:"),
        "samples/s, >1: ours faster")
    add("bench_train.py", "ours frozen / HF frozen, train step", ratio(text, "ours frozen / HF frozen:"),
        "samples/s, >1: ours faster")
    text = outputs.get("bench_masking.py", ("",))[0]
    cost = table_with(text, "masking / eval")
    for _, r in (cost.iterrows() if cost is not None else []):
        add("bench_masking.py", f"masking / eval pass, {r['setting']}, {r['weights']} weights",
            float(r["masking / eval"]), "time, x an evaluation pass")
    if cost is None:
        add("bench_masking.py", "masking / eval pass", None, "time, x an evaluation pass")
    storage = table_with(text, "cost / exemplar")
    rows = [] if storage is None else [r for _, r in storage.iterrows()
                                       if r["setting"] == "demo" and r["weights"].startswith("trained")]
    paper = {"replay": 5, "cim": 10, "emm": 14}
    for r in rows:
        add("bench_masking.py", f"exemplars per class at m = 5, {r['method']} (demo, trained model)",
            float(r["m=5"].split()[0]), f"full exemplars: 5; paper: {paper[r['method']]}" if r["method"] in paper
            else "full exemplars: 5")
    if not rows:
        add("bench_masking.py", "exemplars per class at m = 5", None, "full exemplars: 5")
    text = outputs.get("bench_loader.py", ("",))[0]
    loader = table_with(text, "loader samples/s")
    for _, r in (loader.iterrows() if loader is not None else []):
        add("bench_loader.py", f"loader / train, {r['setting']}, {r['workers']} workers",
            float(r["loader samples/s"]) / float(r["train samples/s"]), "samples/s, >1: compute-bound")
    if loader is None:
        add("bench_loader.py", "loader / train", None, "samples/s, >1: compute-bound")
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="passed to every benchmark (default: each one's own)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads, passed to every benchmark")
    ap.add_argument("--full", action="store_true", help="each benchmark's own defaults instead of small settings")
    ap.add_argument("--only", nargs="+", choices=list(SMALL), default=list(SMALL), help="run only these")
    args = ap.parse_args(argv)
    common = ([] if args.device is None else ["--device", args.device]) + \
             ([] if args.threads is None else ["--threads", str(args.threads)])
    t0 = time.perf_counter()
    outputs = {script: run(script, ([] if args.full else SMALL[script]) + common) for script in args.only}
    print("\n## Summary\n")
    print(markdown_table(summary(outputs), digits=2))
    print("\n" + ", ".join(f"{s} {sec:.0f} s" + ("" if rc == 0 else f" (exit {rc})")
                           for s, (_, rc, sec) in outputs.items()) + f"; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
