"""The package and its ``emmcil`` command: a wheel built offline runs the experiment from an empty folder of a fresh
environment (no clone on the path), and the command imports each sub-command only when it runs."""
import importlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emmcil import cli
from emmcil.config import ex
from run_helpers import report_in_a_fresh_process

ROOT = Path(__file__).resolve().parents[1]
# what the build reads (pyproject.toml: the metadata, readme and license file; the package's sources)
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "emmcil")
HEAVY = ("torch", "torchvision", "pytorch_lightning", "lightning", "transformers", "timm")


@pytest.fixture
def sacred_usage():
    """:func:`emmcil.cli.main` names the program in sacred's usage on the shared experiment: undone after the test."""
    yield
    ex.__dict__.pop("get_usage", None)


def test_help_lists_every_sub_command_and_imports_nothing_heavy():
    code, imported, out = report_in_a_fresh_process("--help", module="emmcil")
    assert code == 0 and imported == [], imported  # no torch, sacred, or training code of emmcil
    for name, command in cli.COMMANDS.items():
        assert f"  {name} " in out and command.summary in out


@pytest.mark.parametrize("name", sorted(set(cli.COMMANDS) - {"train", "print_config"}))
def test_each_sub_command_is_its_module_main_under_the_command_name(name, capsys):
    command = cli.COMMANDS[name]
    assert callable(getattr(importlib.import_module(command.module), command.function))
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: emmcil {name} ")


def test_train_and_print_config_are_sacred_commands_under_the_command_name(sacred_usage, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code in (0, None)
    assert "emmcil train [(with UPDATE...)]" in capsys.readouterr().out
    assert cli.main(["print_config", "with", "demo", "emm", "exp_name=2024_01"]) == 0  # text keys stay text
    out = capsys.readouterr().out
    assert "method = 'emm'" in out and "exp_name = '2024_01'" in out


def test_train_exits_as_run_py_does(monkeypatch, sacred_usage):
    """``emmcil train`` is :func:`emmcil.train.cli`: a stopped run's status (75) comes out of the command as it comes
    out of ``python run.py`` (the stop itself: tests/test_driver_run.py), with the program named ``emmcil train``."""
    import emmcil.train
    from emmcil.stops import STOPPED_EXIT_CODE

    seen = []

    def stopped(argv):
        seen.append(argv)
        raise emmcil.train.RunStopped("SIGTERM")

    monkeypatch.setattr(emmcil.train.ex, "run_commandline", stopped)
    assert cli.main(["train", "with", "demo", "exp_name=2024_01"]) == STOPPED_EXIT_CODE == 75
    assert seen == [["emmcil train", "with", "demo", "exp_name='2024_01'"]]


def test_the_docs_table_lists_every_sub_command():
    """docs/experiments.md's table of the command: exactly :data:`emmcil.cli.COMMANDS` (a new one needs its row)."""
    lines = (ROOT / "docs" / "experiments.md").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| sub-command |")))
    listed = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        listed.update(re.findall(r"`emmcil ([\w-]+)", line.split("|")[1]))
    assert listed == set(cli.COMMANDS)


def test_unknown_sub_command_names_the_closest(capsys):
    assert cli.main(["print-config"]) == 2
    assert "did you mean 'print_config'?" in capsys.readouterr().err
    assert cli.main([]) == 2


# In a fresh interpreter: the modules ``import emmcil.config`` imports, then those ``emmcil ARGS`` adds to them.
_IMPORTS_BEYOND_CONFIG = """
import json, runpy, sys
import emmcil.config
before = set(sys.modules)
sys.argv = ["emmcil", *sys.argv[1:]]
try:
    runpy.run_module("emmcil", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
print("\\nIMPORTS", json.dumps({"code": code, "added": sorted(set(sys.modules) - before)}))
"""


def test_a_bad_key_is_refused_before_the_training_code_is_imported():
    """``emmcil train`` with a config error stops at the config check: it imports nothing beyond what
    ``emmcil.config`` (the experiment's keys and checks) imports itself but the command and sacred's run, so once
    that module is free of torch, so is the refusal."""
    proc = subprocess.run([sys.executable, "-c", _IMPORTS_BEYOND_CONFIG, "train", "with", "demo", "no_such_key=1"],
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTS ")), None)
    assert line is not None, proc.stdout + proc.stderr
    result = json.loads(line.removeprefix("IMPORTS "))
    assert result["code"] == 1 and "no_such_key" in proc.stdout + proc.stderr
    added = [m for m in result["added"] if m.split(".")[0] in HEAVY or m.startswith(("emmcil.", "sacred"))]
    command = {"emmcil.cli", "emmcil.train", "emmcil.stops", "emmcil.atomic"}  # the command and its small pieces
    assert set(added) <= command | {m for m in added if m.startswith("sacred")}, added


def test_the_wheel_runs_the_experiment_from_an_empty_folder_of_a_fresh_environment(tmp_path):
    """Build the wheel offline (pip, no build isolation, no index), install it alone (``--no-deps``) into a new
    venv outside the clone, whose only other packages are this interpreter's (the locked set, seen through a .pth
    file: nothing is downloaded), then run the README's commands from an empty folder, with no PYTHONPATH, an empty
    Hugging Face cache and an empty data folder: the demo set and the tokenizer come from the installed package."""
    source, dist, venv, work = (tmp_path / d for d in ("source", "dist", "venv", "work"))
    source.mkdir()
    for name in BUILD_INPUTS:  # a copy: the build's leftovers (build/, *.egg-info) stay out of the clone
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("emmcil-*-py3-none-any.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the locked packages, after the venv's own (a path line of a .pth: the editable emmcil hook there is not run)
    Path(purelib, "locked-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
                    str(wheel)],  # ignore the editable emmcil of the locked set, which the .pth makes visible
                   check=True, capture_output=True, timeout=300)

    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", EMMCIL_DATA=str(tmp_path / "data"),
               MPLCONFIGDIR=str(tmp_path / "mpl"), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")

    def emmcil(*args: str) -> str:
        t = time.perf_counter()
        proc = subprocess.run(["emmcil", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"emmcil {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        print(f"emmcil {' '.join(args)}: {time.perf_counter() - t:.1f} s")
        return proc.stdout

    where = subprocess.run([python, "-c", "import emmcil, sys; print(emmcil.__file__, sys.prefix)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]) == venv, where  # the wheel's copy, not the clone's
    assert "dataset = 'demo'" in emmcil("print_config", "with", "demo")
    run_dir = emmcil("train", "with", "demo", "num_phases=2", "max_epoch=1").strip().splitlines()[-1]
    assert (work / run_dir / "results.json").is_file() and (tmp_path / "data" / "demo").is_dir()
    assert not (tmp_path / "hf").exists()  # the tokenizer's vocabulary came from an installed package
    report = emmcil("report")  # over runs/, the default log_dir, into reports/
    assert "table: reports/report.md" in report and (work / "reports" / "accuracy_per_phase.pdf").is_file()
    scores = emmcil("evaluate", run_dir)
    assert "| all seen |" in scores and "checkpoint of phase 1" in scores
    assert sorted(p.name for p in work.iterdir()) == ["reports", "runs"]  # it wrote only where it was asked
