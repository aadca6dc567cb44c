"""Wall-clock time of the README's own commands, end to end: the source of every time the README quotes.

Runs each command as the README gives it, one after the other, from the repository root, and prints a table (the
seconds, the exit code, and the share of the CPU that other processes used meanwhile: a figure taken while others
ran is not one to quote) after the machine it ran on (``emmcil.environment``):

=========  ==========================================================================================================
install    ``python -m venv`` + the README's install (``pip install --no-deps -r requirements.lock -e .``) into a new
           virtual environment in a temporary folder (the packages come from pip's cache or index: a warm cache
           is the common case); the venv's size on disk is printed beside it
demo       ``python run.py with demo``, a newcomer's first run: from a temporary folder (its ``runs/``) with an empty
           ``EMMCIL_DATA``, so writing the demo set is included
tests      ``python -m pytest -q tests -p no:cacheprovider``
figures    ``bash scripts/demo_figures.sh`` with ``REPORT_DIR`` in a temporary folder (``fig/`` is left as it is)
bench_all  ``python benchmarks/bench_all.py``
quick      the quick answers (issue: "print_config and --help without torch"): ``python -c "import torch"``,
           ``emmcil --help`` and ``emmcil print_config with demo`` (as ``python -m emmcil``, the console script's
           code), from an empty folder, each ``--repeat`` times in turn; the median and each one's ratio to
           ``import torch`` alone (target: at most 1.0x)
=========  ==========================================================================================================

Every command but ``install`` runs with this interpreter's environment (so install first, the README's way), and
its output goes to a log file in the temporary folder, named in the table when the command fails. The README's
figures are this table's, taken on a 2-core machine with nothing else running.

    python benchmarks/bench_commands.py                       # all five, about 15 min on 2 cores
    python benchmarks/bench_commands.py --only demo tests
    python benchmarks/bench_commands.py --keep                # keep the temporary folder (logs, runs, venv)
    python benchmarks/bench_commands.py --only quick --repeat 5   # print_config and --help beside import torch
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # emmcil, when run from anywhere
from emmcil.environment import describe  # noqa: E402
from machine_load import OtherLoad  # noqa: E402  (benchmarks/machine_load.py)

NAMES = ("install", "demo", "tests", "figures", "bench_all", "quick")


def commands(tmp: Path) -> dict[str, tuple[str, Path, dict]]:
    """name -> (shell command, working directory, extra environment), each as the README gives it."""
    py = sys.executable
    venv = tmp / "venv"
    return {
        "install": (f"{py} -m venv {venv} && . {venv}/bin/activate && "
                    f"pip install --no-deps -r requirements.lock -e .", ROOT, {}),
        "demo": (f"{py} {ROOT / 'run.py'} with demo", tmp, {"EMMCIL_DATA": str(tmp / "data")}),
        "tests": (f"{py} -m pytest -q tests -p no:cacheprovider", ROOT, {}),
        "figures": ("bash scripts/demo_figures.sh", ROOT, {"REPORT_DIR": str(tmp / "fig")}),
        "bench_all": (f"{py} benchmarks/bench_all.py", ROOT, {}),
    }


def quick_commands() -> dict[str, list[str]]:
    """The quick answers, each beside ``import torch`` alone, which the commands that train must pay anyway."""
    py = sys.executable
    return {"import torch": [py, "-c", "import torch"],
            "emmcil --help": [py, "-m", "emmcil", "--help"],
            "emmcil print_config with demo": [py, "-m", "emmcil", "print_config", "with", "demo"]}


def quick(cwd: Path, env: dict, repeat: int) -> list[tuple[str, list[float], int, float | None]]:
    """(command, its wall times in seconds, its last exit code, the other processes' CPU share), the commands run
    in turn ``repeat`` times, so that a change of load falls on all of them alike."""
    todo = quick_commands()
    times: dict[str, list[float]] = {name: [] for name in todo}
    codes = dict.fromkeys(todo, 0)
    load = OtherLoad()
    for _ in range(repeat):
        for name, argv in todo.items():
            t = time.perf_counter()
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True)
            times[name].append(time.perf_counter() - t)
            codes[name] = proc.returncode or codes[name]
    share = load.share()
    return [(name, times[name], codes[name], share) for name in todo]


def quick_table(rows) -> str:
    base = statistics.median(rows[0][1])
    out = ["| command | median | min | × `import torch` (median) | exit |", "|---|---|---|---|---|"]
    for name, times, rc, _ in rows:
        median = statistics.median(times)
        out.append(f"| `{name}` | {median:.2f} s | {min(times):.2f} s | {median / base:.2f}× | {rc} |")
    share = rows[0][3]
    out.append(f"\n{len(rows[0][1])} runs each, in turn; other processes' CPU share meanwhile: "
               + ("unknown" if share is None else f"{share:.0%}"))
    return "\n".join(out)


def disk_usage(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES), help="commands to time, in order")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, runs, venv)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each quick command (default 3)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="emmcil_bench_commands."))
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}  # the tests as a newcomer runs them
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env["PATH"]))  # `python` = this interpreter
    print("\n".join(f"{k}: {v}" for k, v in describe().items()), flush=True)
    rows = []
    try:
        todo = commands(tmp)
        for name in args.only:
            if name == "quick":
                quick_rows = quick(tmp, env, args.repeat)
                print(quick_table(quick_rows), flush=True)
                rows += [(f"quick: {n}", "", statistics.median(t), rc, share, "") for n, t, rc, share in quick_rows]
                continue
            cmd, cwd, extra = todo[name]
            log = tmp / f"{name}.log"
            print(f"\n{name}: {cmd}", flush=True)
            load = OtherLoad()
            with open(log, "w") as out:
                rc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, env={**env, **extra},
                                    stdout=out, stderr=subprocess.STDOUT).returncode
            seconds, other = time.perf_counter() - load.t, load.share()
            note = "" if rc == 0 else f"failed: see {log}"
            if name == "install" and rc == 0:
                note = f"venv {disk_usage(tmp / 'venv') / 2**30:.1f} GiB"
            rows.append((name, cmd, seconds, rc, other, note))
            print(f"  {seconds:.0f} s, exit {rc}" + (f", {note}" if note else ""), flush=True)
    finally:
        if args.keep or any(r[3] for r in rows):
            print(f"\nkept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print("\n| command | wall time | exit | other processes' CPU share | note |\n|---|---|---|---|---|")
    for name, cmd, seconds, rc, other, note in rows:
        share = "unknown" if other is None else f"{other:.0%}"
        print(f"| {name} | {seconds // 60:.0f} min {seconds % 60:.0f} s ({seconds:.0f} s) | {rc} | {share} | {note} |")
    if any(r[3] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
