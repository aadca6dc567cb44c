"""Every benchmark in one command, then every ratio beside its target: the source of docs/benchmarks.md's figures.

Runs, one after the other as subprocesses of this interpreter (so one benchmark's threads and memory do not affect
the next), and prints their output under headings as it comes:

1. ``bench_backbone.py``: forward of ViLT-B/32 (batch 4, 384x384 and 384x576), ours with SSF merged vs plain ViLT,
   transformers' ``ViltModel`` and the matmul roofline;
2. ``bench_train.py``: training step (batch 2, 384x384), ours with SSF / frozen / full vs ``ViltModel`` frozen, and
   the SSF step over the forward against its bound;
3. ``bench_masking.py``: masking pass vs evaluation pass (demo set with the tiny model, ViLT-B/32), exemplars per
   class at m = 1..10, masks;
4. ``bench_compile.py``: ``compile=True``: graphs, recompiles over pixelbert sizes, compiled vs eager speed-up
   (tiny model; ViLT-B/32 with ``--full``);
5. ``bench_loader.py``: loader vs training step (demo set with the tiny model; 384-px photos with ``--full``), and
   the loader's samples/s per worker for photos as found and stored by the writers, before / after / with device
   decoding, with the workers a GPU needs (at the GPU step rate measured with ``--device cuda``, JPEG decoding and
   normalising on the GPU included).

and ends with one table of every ratio the scripts print (their ``ratios`` / ``times`` blocks) with its target where
issue 16 sets one, the exemplars per class at m = 5 beside the paper's, the loader / train ratios and the loader's
figures per worker and workers per GPU against their targets (a benchmark that fails is reported as such and the
others still run). ``--device`` and
``--threads`` are passed to every benchmark (when not given, each keeps its own default: torch's default threads,
except ``bench_masking.py``'s 1). Its time is in the README's Quick start (``bench_commands.py`` measures it).
``--full`` drops the small settings; with ``--device cuda`` it runs the GPU settings (bf16, GPU batch sizes,
ViLT-B/32 compiled), written to take under 8 minutes on one H100/H200-class GPU. This is the first thing to run on a
new machine (``benchmarks/README.md``).

    python benchmarks/bench_all.py                        # CPU: every target at ViLT-B/32 size, a few minutes
    python benchmarks/bench_all.py --threads 1            # on a shared 2-core machine (benchmarks/README.md)
    python benchmarks/bench_all.py --device cuda --full   # one GPU
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
from emmcil.markdown import markdown_table  # noqa: E402

# per script: arguments of the default run (CPU, every target at ViLT-B/32, a few minutes), of --full, and of
# --full --device cuda (bf16, GPU batches)
SETTINGS = {
    # 10 rounds: merged and plain do the same GEMMs, so their ratio sits at ~1 and 5 rounds left +-2 % of noise
    "bench_backbone.py": {"small": ["--iters", "10"], "full": ["--iters", "10"],
                          "gpu": ["--batch", "64", "--dtype", "bf16", "--iters", "10", "--warmup", "3"]},
    "bench_train.py": {"small": [], "full": [],
                       "gpu": ["--batch", "32", "--steps", "10", "--warmup", "3", "--dtype", "bf16"]},
    "bench_masking.py": {"small": ["--repeats", "3"], "full": [],
                         "gpu": ["--batch", "64", "--b32-batch", "32", "--b32-batches", "4", "--repeats", "3"]},
    "bench_compile.py": {"small": [], "full": ["--model", "b32", "--batch", "4"],
                         "gpu": ["--model", "b32", "--batch", "32", "--dtype", "bf16"]},
    "bench_loader.py": {"small": ["--skip-b32"], "full": [],
                        "gpu": ["--b32-batch", "32", "--b32-steps", "10", "--workers", "0", "4", "8",
                                "--gpu-batch", "32", "--gpu-steps", "10"]},
}
PAPER_AT_5 = {"replay": 5, "cim": 10, "emm": 14}  # exemplars per class at m = 5 in the paper's memory plot
# a ratio line: "  name: value  (..., target >= 1.00: met)", the target part optional
RATIO = re.compile(r"^\s+(?P<name>[^:]+?):\s+(?P<value>\d+(?:\.\d+)?)(?P<rest>.*)$")
TARGET = re.compile(r"target (?P<op>[<>]=) (?P<target>\d+(?:\.\d+)?)")


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
            if len(block) > 2 and all(len(row) == len(block[0]) for row in block):
                out.append(pd.DataFrame(block[2:], columns=block[0]))
            block = []
    return out


def ratio_lines(text: str) -> list[dict]:
    """Every line of the ``ratios ...`` / ``times ...`` blocks of a benchmark's output: name, value, target."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith(("ratios", "times")):
            inside = True
            continue
        if not line.strip():
            inside = False
        m = RATIO.match(line) if inside else None
        if m:
            t = TARGET.search(m["rest"])
            value = float(m["value"])
            met = None if t is None else (value >= float(t["target"]) if t["op"] == ">=" else
                                           value <= float(t["target"]))
            out.append({"ratio": m["name"].strip(), "value": value,
                        "target": "" if t is None else f"{t['op']} {t['target']}",
                        "met": "" if met is None else ("yes" if met else "NO")})
    return out


def summary(outputs: dict[str, tuple[str, int, float]]) -> pd.DataFrame:
    rows = []
    for script, (text, rc, _) in outputs.items():
        found = ratio_lines(text)
        loader = next((t for t in tables(text) if "loader samples/s" in t.columns), None)
        for _, r in (loader.iterrows() if loader is not None else []):
            found.append({"ratio": f"loader / train samples/s, {r['setting']}, {r['workers']} workers",
                          "value": float(r["loader samples/s"]) / float(r["train samples/s"]), "target": "",
                          "met": ""})
        storage = next((t for t in tables(text) if "cost / exemplar" in t.columns), None)
        for _, r in (storage.iterrows() if storage is not None else []):
            if r["setting"] == "demo" and r["weights"].startswith("trained"):
                found.append({"ratio": f"exemplars per class at m = 5, {r['method']} (demo, trained model)",
                              "value": float(r["m=5"].split()[0]), "target": "", "met": "",
                              "paper": PAPER_AT_5.get(r["method"], "")})
        per_worker = next((t for t in tables(text) if "samples/s per worker" in t.columns), None)
        for _, r in (per_worker.iterrows() if per_worker is not None else []):  # workers per GPU: a ratios block
            found.append({"ratio": f"loader samples/s per worker, {r['storage']}, {r['loader']}",
                          "value": float(r["samples/s per worker"]), "target": "", "met": ""})
        if rc != 0 or not found:
            found = [{"ratio": "-", "value": f"failed (exit {rc})" if rc else "no ratio in the output",
                      "target": "", "met": ""}]
        rows += [{"benchmark": script, **r} for r in found]
    return pd.DataFrame(rows).fillna("")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="passed to every benchmark (default: each one's own)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads, passed to every benchmark")
    ap.add_argument("--full", action="store_true",
                    help="each benchmark's own defaults (with --device cuda: the GPU settings) instead of small ones")
    ap.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), help="run only these")
    args = ap.parse_args(argv)
    mode = "small" if not args.full else ("gpu" if (args.device or "").startswith("cuda") else "full")
    common = ([] if args.device is None else ["--device", args.device]) + \
             ([] if args.threads is None else ["--threads", str(args.threads)])
    t0 = time.perf_counter()
    outputs = {script: run(script, SETTINGS[script][mode] + common) for script in args.only}
    print("\n## Summary: every ratio beside its target (issue 16)\n")
    print(markdown_table(summary(outputs), digits=3))
    print("\n" + ", ".join(f"{s} {sec:.0f} s" + ("" if rc == 0 else f" (exit {rc})")
                           for s, (_, rc, sec) in outputs.items()) + f"; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
