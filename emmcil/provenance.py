"""What a run was made with: code version (git commit, dirty tree), package versions, host, command line.

Recorded once per process in the run's ``config.json`` (a ``provenance`` list: a run resumed later gets a second
entry) and in sacred's run record (``info.provenance``, seen by ``-F DIR`` and other observers); the report
(``python -m emmcil.report``) warns when the runs of one table were made with different versions.
"""
from __future__ import annotations

import functools
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

# Packages whose version can change a result (distribution names, as pip knows them).
PACKAGES = ("torch", "torchvision", "pytorch-lightning", "transformers", "timm", "numpy", "pyarrow", "pillow",
            "sacred")
# config.json's entry that holds these records, one per process (it is not a config key).
CONFIG_ENTRY = "provenance"
# The versions the report compares between the runs of one table (a subset of ``versions``' keys).
COMPARED = ("python", "torch", "cuda", "pytorch-lightning", "transformers", "timm", "emmcil")


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` of the checkout emmcil is imported from (None
    outside a git checkout, e.g. an installed wheel). Dirty: tracked files differ from the commit."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


@functools.cache
def git_repository() -> dict[str, Any] | None:
    """The checkout emmcil is imported from as sacred records a repository, ``{"url", "commit", "dirty"}`` (the
    ``origin`` remote's URL, else ``git:/`` + the folder), or None outside a git checkout. Computed once a process."""
    state = git_state()
    if state["git_commit"] is None:
        return None
    url = _git("config", "--get", "remote.origin.url") or "git:/" + str(Path(__file__).resolve().parents[1])
    return {"url": url, "commit": state["git_commit"], "dirty": bool(state["git_dirty"])}


def versions() -> dict[str, str | None]:
    """Python, emmcil, CUDA / cuDNN (as torch was built; None on CPU builds) and :data:`PACKAGES`' versions."""
    import torch

    import emmcil

    out: dict[str, str | None] = {"python": platform.python_version(), "emmcil": emmcil.__version__,
                                  "cuda": torch.version.cuda,
                                  "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available()
                                  else None}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict[str, Any]:
    """One process's record: ``started``, ``host``, ``platform``, ``command`` (the command line, shell-quoted),
    ``cwd``, ``git_commit``, ``git_dirty``, ``versions`` (:func:`versions`) and ``gpus`` (names, when CUDA is
    available)."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": socket.gethostname(),
            "platform": platform.platform(), "command": shlex.join([sys.executable, *sys.argv]), "cwd": os.getcwd(),
            **git_state(), "versions": versions(), "gpus": gpus}
