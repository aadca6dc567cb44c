"""Resolve the configs of many ``python run.py with ...`` commands at once, training nothing (scripts/common.sh).

    python scripts/resolve_configs.py COMMANDS_FILE [--verbose]

COMMANDS_FILE holds one shell-quoted command a line, as the scripts print them (``python run.py with <named
configs> key=value ...``). Each one is handed to run.py's sacred experiment as ``run.py print_config with ...``
(``Experiment.run_commandline``, exactly what ``python run.py print_config with ...`` does), all in this one process:
starting Python, torch and Lightning once instead of once a command (~7 s each). A command fails when sacred
does (an unknown named config, an unknown key: ``ConfigAddedError``, a bad value that the config function rejects),
when it sets no explicit ``exp_name``, when the resolved ``exp_name`` differs from the one given, or when two
commands would share a run directory ``{log_dir}/{exp_name}``.

Prints one ``# resolved ...`` comment a command (the full ``print_config`` output with --verbose); exits 1 if any
command failed, naming each.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHOWN = ("dataset", "method", "num_phases", "seed", "memory_per_class", "tau_image", "tau_text", "aug_text_swap",
         "aug_patch_merge", "exp_tag", "devices", "num_nodes", "strategy", "precision")


def with_args(line: str) -> list[str]:
    """The arguments after ``run.py`` of a printed command line (they start with ``with``)."""
    argv = shlex.split(line)
    runs = [i for i, a in enumerate(argv) if Path(a).name == "run.py"]
    if not runs:
        raise ValueError(f"not a `run.py` command: {line}")
    return argv[runs[0] + 1:]


def explicit_exp_name(args: list[str]) -> str | None:
    names = [a.split("=", 1)[1] for a in args if a.startswith("exp_name=")]
    return names[-1] if names else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commands", type=Path, help="file with one shell-quoted `python run.py with ...` a line")
    parser.add_argument("--verbose", action="store_true", help="print every resolved config in full")
    opts = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import run  # noqa: F401  (registers run.py's main command on the experiment)
    from emmcil.config import ex, keep_strings

    from emmcil.data.textfiles import read_lines

    lines = [ln for ln in read_lines(opts.commands) if not ln.startswith("#")]
    failed: list[str] = []
    run_dirs: dict[tuple[str, str], str] = {}
    for line in lines:
        args = with_args(line)
        given = explicit_exp_name(args)
        out, err = io.StringIO(), io.StringIO()
        code = 0
        run_obj = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_obj = ex.run_commandline(keep_strings(["run.py", "print_config", *args, "--loglevel=ERROR"]))
            except SystemExit as e:  # sacred prints the error and exits 1
                code = e.code if isinstance(e.code, int) else 1
        if code or run_obj is None:
            failed.append(line)
            print(f"error: the config of this command does not resolve:\n  {line}\n{err.getvalue().strip()}",
                  file=sys.stderr)
            continue
        cfg = run_obj.config
        problems = []
        if given is None:
            problems.append("no explicit exp_name=")
        elif cfg["exp_name"] != given:
            problems.append(f"resolved exp_name {cfg['exp_name']!r} differs from the one given ({given!r})")
        key = (str(cfg["log_dir"]), str(cfg["exp_name"]))
        if key in run_dirs:
            problems.append(f"run directory {key[0]}/{key[1]} is also that of: {run_dirs[key]}")
        run_dirs.setdefault(key, line)
        if problems:
            failed.append(line)
            print(f"error: {'; '.join(problems)}:\n  {line}", file=sys.stderr)
            continue
        if opts.verbose:
            print("\n".join("# " + s for s in out.getvalue().rstrip().splitlines()))
        shown = " ".join(f"{k}={cfg[k]}" for k in SHOWN if k in cfg)
        print(f"# resolved {cfg['log_dir']}/{cfg['exp_name']}: {shown}")
    print(f"# {len(lines) - len(failed)} of {len(lines)} configs resolved")
    if failed:
        print(f"error: {len(failed)} of {len(lines)} commands have a bad config (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
