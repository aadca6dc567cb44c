"""Time of the multi-run report (``python -m emmcil.report``), beside torch's import alone, side by side in one run.

The report reads what runs write (``results.json``, ``config.json``) and imports neither torch nor the method
registry (issue 18: it took about 20 s, half of it importing the registry and torch, only to know the methods'
defaults). Each command below runs ``--repeats`` times in a fresh interpreter, the commands in turn (so that a
change in the machine's load hits them all); the median is shown:

* ``import torch``: what any command that imports torch pays before doing anything;
* ``report --help``: the report's start-up;
* ``report over N runs``: a whole report (every table, both figures) over real runs of the demo set at a tiny size
  (finetune, replay and emm, two seeds each, and a memory and a threshold variant: 3 phases, one step a phase; made
  first, in about half a minute; ``--runs DIR`` reports over your own runs instead).

``--compare CHECKOUT`` times another checkout's report on the same runs too (e.g. the commit before the report
became a package: ``git worktree add /tmp/before <commit>``), and prints after / before. Whether each report
imported torch is read from ``python -X importtime``.

    python benchmarks/bench_report.py
    python benchmarks/bench_report.py --compare /tmp/before --repeats 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # config.py, emmcil
from machine_load import OtherLoad  # noqa: E402  (benchmarks/machine_load.py)

# (method, seed, updates): 7 runs, 5 groups; the memory and threshold variants make the report draw every table.
RUNS = [("finetune", 0, {}), ("replay", 0, {}), ("replay", 1, {}), ("replay", 0, {"memory_per_class": 3}),
        ("emm", 0, {}), ("emm", 1, {}), ("emm", 0, {"tau_image": 0.5})]
TINY = dict(num_phases=3, max_epoch=1, limit_train_batches=1, batch_size=16, per_gpu_batchsize=16, hidden_size=32,
            num_layers=1, num_heads=2, image_size=64, max_text_len=32, num_workers=0, num_threads=1,
            progress_bar=False)


def make_runs(log_dir: Path) -> Path:
    """The demo runs of :data:`RUNS` (the driver's own run directories) in ``log_dir``."""
    import contextlib
    import io

    from emmcil.config import resolve_config
    from emmcil.engine.driver import run_experiment

    for method, seed, updates in RUNS:
        own = {"mask_figure": 0} if method == "emm" else {}  # no masking figures (a key of emm only)
        cfg = resolve_config(["demo", method], **{**TINY, **own, "seed": seed, "log_dir": str(log_dir), **updates})
        with contextlib.redirect_stdout(io.StringIO()):
            run_experiment(cfg)
    return log_dir


def imports_torch(cmd: list[str], env: dict, cwd: str) -> bool:
    """Whether ``cmd`` (a ``python ...`` command) imports torch, from ``-X importtime``'s list of imports."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=cwd, capture_output=True, text=True)
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in proc.stderr.splitlines())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=None, help="a folder of run directories (default: make the demo's)")
    ap.add_argument("--compare", type=Path, default=None, help="another checkout whose report is timed too")
    ap.add_argument("--repeats", type=int, default=3, help="fresh interpreters per command (the median is shown)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        t0 = time.perf_counter()
        runs = args.runs or make_runs(Path(tmp) / "runs")
        n = len(list(runs.glob("*/results.json")))
        made = "" if args.runs else f" (made in {time.perf_counter() - t0:.0f} s)"
        versions = {"this checkout": ROOT, **({"before": args.compare.resolve()} if args.compare else {})}
        py = sys.executable
        commands = {("-", "import torch"): ([py, "-c", "import torch"], dict(os.environ))}
        for version, root in versions.items():
            env = {**os.environ, "PYTHONPATH": str(root)}
            commands[(version, "report --help")] = ([py, "-m", "emmcil.report", "--help"], env)
            commands[(version, f"report over {n} runs")] = (
                [py, "-m", "emmcil.report", str(runs), "--out", str(Path(tmp) / "out" / version)], env)
        load = OtherLoad()
        seconds: dict[tuple, list[float]] = {key: [] for key in commands}
        for _ in range(args.repeats):
            for key, (cmd, env) in commands.items():
                t = time.perf_counter()
                # from the temporary folder: python -m puts the working directory first on sys.path
                proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
                seconds[key].append(time.perf_counter() - t)
                if proc.returncode != 0:
                    raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
        median = {key: statistics.median(v) for key, v in seconds.items()}
        torch_import = median[("-", "import torch")]
        print(f"{n} runs in {runs}{made}; {args.repeats} fresh interpreters per command, Python "
              f"{sys.version.split()[0]}; {load} during the timing\n")
        print("times (median, seconds)")
        for (version, what), (cmd, env) in commands.items():
            where = "" if version == "-" else f", {version}"
            print(f"  {what}{where}: {median[(version, what)]:.2f}  (imports torch: "
                  f"{'yes' if imports_torch(cmd, env, tmp) else 'no'})")
        print("\nratios")
        for version in versions:
            for what in ("report --help", f"report over {n} runs"):
                ratio = median[(version, what)] / torch_import
                met = "met" if ratio <= 1 else "NOT met"
                target = f"  (target <= 1.00: {met})" if version == "this checkout" else ""
                print(f"  {what}, {version} / import torch: {ratio:.2f}{target}")
        if args.compare:
            for what in ("report --help", f"report over {n} runs"):
                print(f"  {what}, this checkout / before: "
                      f"{median[('this checkout', what)] / median[('before', what)]:.2f}")


if __name__ == "__main__":
    main()
