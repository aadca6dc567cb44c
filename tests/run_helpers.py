"""Tiny experiments through the sacred config, shared by the driver, method and protocol tests; the report run as
``python -m emmcil.report`` in a fresh interpreter."""
import contextlib
import json
import signal
import subprocess
import sys

import torch
from sacred.initialize import create_run

import run  # noqa: F401  (registers the main command)
from emmcil.config import ex

# hidden 32, 1 layer, 64 px images (4x4 to 4x5 patches), 2 steps a phase: a 2-phase run takes a few seconds
SMALL = dict(num_phases=2, max_epoch=1, limit_train_batches=2, batch_size=16, per_gpu_batchsize=16, hidden_size=32,
             num_layers=1, num_heads=2, image_size=64, max_text_len=32, num_workers=0, progress_bar=False,
             log_every_n_steps=1)


def resolve(*named, **updates) -> dict:
    """The resolved config, as sacred builds it for ``run.py with <named> key=value``; nothing runs."""
    return dict(create_run(ex, "main", config_updates=updates, named_configs=list(named)).config)


def demo_config(demo_root, log_dir, *named, **updates) -> dict:
    """``run.py with demo <named> key=value`` at the SMALL size, on the demo set in ``demo_root``."""
    return resolve("demo", *named, **{**SMALL, "data_root": str(demo_root), "log_dir": str(log_dir), **updates})


def settings(base: dict | None = None, **updates):
    """The typed settings a run builds (``emmcil.engine.driver.run_settings``) from ``base`` (a resolved config;
    default ``demo finetune``) with ``updates`` (keys set as they are, unchecked)."""
    from emmcil.engine.driver import run_settings

    return run_settings({**(resolve("demo", "finetune") if base is None else base), **updates})


def changed(s, **updates):
    """The typed settings ``s`` with ``updates`` set in the concern (or the method's settings) that declares each
    key, unchecked: e.g. ``changed(method.settings, l2p_head="pooler")`` for a method built again with one own key
    changed. KeyError for a key no part declares."""
    import dataclasses

    from emmcil.settings import CONCERNS

    parts = {name: getattr(s, name) for name in [*CONCERNS, "method"]}
    for key in updates:
        if not any(key in {f.name for f in dataclasses.fields(part)} for part in parts.values()):
            raise KeyError(f"no part of the settings declares {key!r}")
    for name, part in parts.items():
        own = {k: v for k, v in updates.items() if k in {f.name for f in dataclasses.fields(part)}}
        if own:
            parts[name] = dataclasses.replace(part, **own)
    return dataclasses.replace(s, **parts)


@contextlib.contextmanager
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning threads make
    them several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Runs ``python -m MODULE ARGS`` (the report, or the memory browser) in this process as -m does, then prints the
# modules it imported that the report must not need: torch and the libraries on it, and the training side of emmcil
# (engine, methods, model).
_REPORT_IN_A_FRESH_PROCESS = """
import json, runpy, sys
module, *sys.argv = sys.argv[1:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
heavy = ("torch", "torchvision", "pytorch_lightning", "lightning", "transformers", "timm", "sacred")
training = ("emmcil.engine", "emmcil.methods", "emmcil.memory", "emmcil.model", "emmcil.data")
print("\\nREPORT", json.dumps({"code": code, "imported": sorted(
    m for m in sys.modules if m.split(".")[0] in heavy or m.startswith(training))}))
"""


def report_in_a_fresh_process(*args: str, module: str = "emmcil.report") -> tuple[int, list[str], str]:
    """``python -m emmcil.report *args`` (or another ``module`` of the report) in a new interpreter: (exit status,
    the torch-side modules it imported, its output)."""
    proc = subprocess.run([sys.executable, "-c", _REPORT_IN_A_FRESH_PROCESS, module, module, *args],
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")), None)
    assert line is not None, proc.stdout + proc.stderr
    result = json.loads(line.removeprefix("REPORT "))
    return result["code"], result["imported"], proc.stdout + proc.stderr


@contextlib.contextmanager
def lock_held_elsewhere(path):
    """Another process holding run directory ``path``'s lock while the block runs; yields that process. It is
    killed with SIGKILL at the end (a crash: the OS releases the lock)."""
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom emmcil.engine.rundir import locked\n"
                               f"with locked({str(path)!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
