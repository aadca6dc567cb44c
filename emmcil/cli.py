"""The ``emmcil`` command (installed by ``pip install .`` or a wheel; ``python -m emmcil`` without installing):
one sub-command per job, each importing only what it needs when it runs, so ``emmcil --help`` answers at once.

    emmcil train with demo emm key=value      # the sacred experiment, as ``python run.py with ...`` (sacred's flags)
    emmcil print_config with demo emm         # the resolved config, every key with its comment; trains nothing
    emmcil report runs --out reports          # tables and figures over many runs
    emmcil evaluate RUN_DIR                   # re-score a checkpoint; writes nothing
    emmcil SUB-COMMAND --help                 # that sub-command's own options

The exit status is the sub-command's: 0 done, 1 failed or refused (the message alone), 2 a usage error, 75
(``emmcil.stops.STOPPED_EXIT_CODE``) stopped by SIGTERM / SIGINT, resumable by the same command.
"""
from __future__ import annotations

import difflib
import importlib
import os
import sys
import warnings
from typing import NamedTuple, Sequence

PROG = "emmcil"


class Command(NamedTuple):
    module: str    # imported when the command runs, never before
    function: str  # called with the arguments after the sub-command's name (and the program name, ``prog``)
    summary: str   # the line ``emmcil --help`` shows


def _experiment(command: str | None):
    """A sacred command line over the experiment: ``train`` runs it (:func:`emmcil.train.cli`); ``print_config``
    only resolves the config, through :mod:`emmcil.config` alone (no training code is imported)."""
    def run(argv: Sequence[str], prog: str) -> int:
        argv = [prog, *([command] if command else []), *argv]
        from emmcil.config import ex, keep_strings
        _sacred_usage_names(ex, prog)
        if command is None:
            from emmcil.train import cli
            return cli(argv)
        ex.run_commandline(keep_strings(argv))
        return 0
    return run


def _sacred_usage_names(ex, prog: str) -> None:
    """sacred names the program in its ``--help`` and errors as ``sys.argv[0]`` relative to the experiment's folder
    (``../../bin/emmcil``), quoted if it holds a space; this names it ``emmcil train`` instead."""
    usage = type(ex).get_usage

    def named(program_name=None):
        short, long, internal = usage(ex, os.path.join(ex.base_dir, "PROGRAM"))
        return short.replace("PROGRAM", prog), long.replace("PROGRAM", prog), internal

    ex.get_usage = named


COMMANDS: dict[str, Command] = {
    "train": Command("emmcil.cli", "train",
                     "run or resume an experiment: emmcil train with demo emm key=value (sacred; --help: its flags)"),
    "print_config": Command("emmcil.cli", "print_config",
                            "the resolved config of `with ...`, every key with its comment; trains nothing"),
    "report": Command("emmcil.report.__main__", "main", "tables and figures (the paper's) from many runs"),
    "evaluate": Command("emmcil.engine.evaluate", "main", "re-score a run's checkpoint (another split, missing "
                                                          "modality); writes nothing"),
    "memory": Command("emmcil.report.memory", "main", "the memory browser: HTML pages of what each run's memory "
                                                      "holds after each phase"),
    "write-folder": Command("emmcil.data.write_folder", "main",
                            "a folder of images (one sub-folder a class) + captions -> arrow files"),
    "write-food101": Command("emmcil.data.write_food101", "main", "UPMC Food-101 -> arrow files"),
    "write-imagenet-r": Command("emmcil.data.write_imagenet_r", "main",
                                "ImageNet-R + InstructBLIP captions -> MM-ImageNet-R arrow files"),
    "caption": Command("emmcil.data.captions", "main", "caption an image folder with a local InstructBLIP"),
}
train = _experiment(None)
print_config = _experiment("print_config")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} SUB-COMMAND [ARGS...]    ({PROG} SUB-COMMAND --help: its options)", "",
             "Exemplar Masking for Multimodal Incremental Learning (arXiv 2412.09549): experiments, reports, data.",
             "", "sub-commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", "options:", f"  {'-h, --help':<{width}}  this message", f"  {'--version':<{width}}  the version"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``emmcil SUB-COMMAND ARGS...``: runs the sub-command and returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from emmcil import __version__
        print(f"{PROG} {__version__}")
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        print(f"{PROG}: unknown sub-command {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
              + f"\n{PROG} --help lists them", file=sys.stderr)
        return 2
    # sacred 0.8 imports pkg_resources, which setuptools deprecates: a warning about sacred no run can act on
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    command = COMMANDS[name]
    function = getattr(importlib.import_module(command.module), command.function)
    status = function(args, prog=f"{PROG} {name}")
    return 0 if status is None else status
