"""ruff over the repository, with the rules of pyproject.toml's ``[tool.ruff]``: the style is kept by CI."""
import json
import subprocess
import sys
from pathlib import Path

from conftest import require

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    require("ruff")  # requirements.txt (pinned in requirements.lock): under CI it must be installed
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=300)


def test_ruff_finds_nothing_in_the_repository():
    """``ruff check .`` (no cache written into the clone) passes: a style slip fails CI with ruff's message."""
    run = ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_applies_the_projects_rules():
    """The configuration is the one read: lines up to 120 characters pass, 121 fail (E501); an unused import (F401)
    and trailing whitespace (W291) fail."""
    def codes(source: str) -> set[str]:
        run = ruff("check", "--no-cache", "--output-format", "json", "--stdin-filename", "emmcil/example.py", "-",
                   stdin=source)
        return {problem["code"] for problem in json.loads(run.stdout)}

    assert codes("x = '" + "a" * 114 + "'\n") == set()  # 120 characters
    assert codes("x = '" + "a" * 115 + "'\n") == {"E501"}
    assert codes("import os\n") == {"F401"}
    assert codes("x = 1 \n") == {"W291"}
