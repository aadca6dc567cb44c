"""What a result or a test run depended on: Python, torch and its build, the CPU (or GPU), and installed versions.

``python -m emmcil.environment`` prints it, ``--freeze`` adds every installed package (``pip freeze``). CI prints
both before the tests (``python -m pytest --environment-report``, set by ``.ci/run``), so that a failure on
another machine can be told apart from a bug: a different BLAS kernel path or library version changes float
results in their last bits, and the CPU capability says which kernels torch picked.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys

from .provenance import PACKAGES, versions


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``, else "unknown"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, str]:
    """One line each: Python, OS, CPU (model, cores usable by this process / in the machine, torch's CPU capability
    and intra-op threads), torch (version, CUDA or CPU build), the GPU if one is visible, and the versions of the
    libraries whose numerics or behaviour the results depend on (:data:`emmcil.provenance.PACKAGES`, as a run's
    provenance records them). Imports torch."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = torch.version.cuda
    info = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": f"{cpu_model()}, {cores} of {os.cpu_count()} cores usable",
        "torch cpu": (f"capability {torch.backends.cpu.get_cpu_capability()}, "
                      f"{torch.get_num_threads()} intra-op threads"),
        "torch": f"{torch.__version__}, " + (f"CUDA {cuda} build" if cuda else "CPU build"),
        "gpu": (", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                if torch.cuda.is_available() else "none visible"),
    }
    # the same packages a run records in its provenance (torch is shown above)
    info.update({name: v or "not installed" for name, v in versions().items() if name in PACKAGES and name != "torch"})
    return info


def freeze() -> str:
    """``pip freeze`` of this interpreter (every installed distribution, pinned), or pip's error."""
    proc = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else f"pip freeze failed: {proc.stderr.strip()}\n"


def report(with_freeze: bool = False) -> str:
    lines = [f"{k}: {v}" for k, v in describe().items()]
    if with_freeze:
        lines += ["installed (pip freeze):", *("  " + x for x in freeze().splitlines())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", action="store_true", help="also list every installed package (pip freeze)")
    print(report(parser.parse_args(argv).freeze))


if __name__ == "__main__":
    main()
