"""The code's floors (README, code map): an import may point only to the same floor or a lower one.

Read with ``ast`` from every module of the package and the entry points, imports inside functions included, so a
lazy import that runs back up a floor fails here as well as a top-level one.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Floors, top to bottom: a path (file or folder, relative to the repository) -> its floor. The longest matching
# path decides. Every module must have one, so a new folder has to be placed here.
FLOORS = {
    "run.py": 7, "config.py": 7,            # a clone's thin entry points (ViLT-style), over the experiment
    "emmcil/cli.py": 7, "emmcil/__main__.py": 7,  # the `emmcil` command: one sub-command per job, imported lazily
    "emmcil/config.py": 6, "emmcil/train.py": 6,  # the sacred experiment: named configs, keys, its command line
    "emmcil/report": 6,                     # the multi-run report, over run directories (only floor 1 below it)
    "emmcil/engine": 5,                     # the phase loop, Lightning module, run directory, results
    "emmcil/methods": 4,                    # one file a method, the contract, the registry, the recipes
    "emmcil/memory": 3,                     # the replay toolbox: exemplars, buffer, masking, selection, figure
    "emmcil/model": 2, "emmcil/data": 2,    # backbone + SSF; arrow files, datasets, transforms, catalogue
    "emmcil/__init__.py": 1, "emmcil/atomic.py": 1, "emmcil/provenance.py": 1, "emmcil/environment.py": 1,
    "emmcil/markdown.py": 1, "emmcil/stops.py": 1, "emmcil/figures.py": 1,
    "emmcil/settings": 1,                   # typed settings: fields, docs, checks (torch-free)
}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for the package and the entry points."""
    found = {p.stem: ROOT / p for p in map(Path, ("run.py", "config.py"))}
    for path in sorted((ROOT / "emmcil").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def floor(path: Path) -> int:
    rel = path.relative_to(ROOT).as_posix()
    matches = [k for k in FLOORS if rel == k or rel.startswith(k + "/")]
    if not matches:
        raise AssertionError(f"{rel} has no floor: place it in FLOORS of tests/test_layout.py")
    return FLOORS[max(matches, key=len)]


def imported(source: str, module: str, known: dict[str, Path]) -> set[str]:
    """The project modules that ``source``, the code of ``module``, imports (anywhere in it), as names of ``known``."""
    package = module if known[module].name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    out = set()
    for name in names:
        while name and name not in known:  # `import a.b.c` of an attribute: its module
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out - {module}


def test_every_module_has_a_floor():
    for path in modules().values():
        floor(path)


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_import_runs_back_up_a_floor(module):
    known = modules()
    path = known[module]
    up = sorted(f"{name} (floor {floor(known[name])})" for name in imported(path.read_text(), module, known)
                if floor(known[name]) > floor(path))
    assert not up, f"{module} (floor {floor(path)}) imports from a higher floor: {', '.join(up)}"


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.startswith("emmcil.report")))
def test_the_report_imports_only_the_small_shared_pieces(module):
    """The report reads what runs write; it needs neither the engine, the methods nor torch (tests/test_report.py
    runs it in a fresh interpreter), so below it there is only floor 1."""
    known = modules()
    other = sorted(name for name in imported(known[module].read_text(), module, known)
                   if not name.startswith("emmcil.report") and floor(known[name]) > 1)
    assert not other, f"{module} imports {', '.join(other)}"


def test_the_check_sees_lazy_and_relative_imports():
    """What the test above relies on: imports inside functions, relative ones and ``from package import module``
    are all found (here as if written in emmcil/memory/buffer.py)."""
    source = ("from .exemplar import Exemplar\n"
              "def f():\n"
              "    from ..engine import driver\n    import emmcil.methods.replay\n    from emmcil import data\n")
    assert imported(source, "emmcil.memory.buffer", modules()) == {
        "emmcil.memory.exemplar", "emmcil.engine", "emmcil.engine.driver", "emmcil.methods.replay", "emmcil",
        "emmcil.data"}


SIDE_EFFECTS = """
import importlib, json, logging, pkgutil, sys, warnings
import matplotlib, pytorch_lightning, sacred, torch, transformers  # third-party imports first: they set their own

import emmcil


def state():
    return {"warning filters": [str(f) for f in warnings.filters],
            "log levels": {name: logging.getLogger(name).level for name in ("", "pytorch_lightning", "sacred")},
            "matplotlib": [matplotlib.rcParams["backend"], "matplotlib.pyplot" in sys.modules],
            "torch threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
            "torch": [torch.get_default_dtype() is torch.float32, torch.are_deterministic_algorithms_enabled()]}


before = state()
for module in pkgutil.walk_packages(emmcil.__path__, "emmcil."):
    importlib.import_module(module.name)
print(json.dumps([before, state()]))
"""


def test_importing_a_module_changes_no_global_state():
    """Side effects (Lightning's log level, warning filters, matplotlib's backend, torch's threads) belong to the
    entry points and the run itself (``quiet_lightning``), never to an import."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SIDE_EFFECTS], capture_output=True, text=True, cwd=ROOT, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert after == before
