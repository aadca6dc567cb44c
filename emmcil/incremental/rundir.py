"""The run directory: atomic writes, per-phase checkpoints and the resume rule.

Layout of ``{log_dir}/{exp_name}/``::

    config.json             the resolved config (what a re-run is compared against)
    class_order.json        class order (original ids) and the remapped classes of each phase
    exemplar_cost.json      mean bytes of a full exemplar of the training set (cache; memory methods only)
    missing_tables/         the missing-modality table of each split, .npz (missing_type != "none" only)
    checkpoints/phase_{t}.pt    after phase t: trainable weights, classifier, method state (memory buffer),
                            RNG states, evaluation counts and accuracy matrix so far
    logs/phase_{t}/         Lightning's CSV (and TensorBoard) logs
    results.json, results.md

Every file is written atomically (temporary file in the same directory, fsync, ``os.replace``), so a kill during a
write leaves the previous version intact; stale temporary files are ignored and removed.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

# Keys that do not change what a run computes, so a resumed run may differ in them.
NON_IDENTITY_KEYS = frozenset({
    "restart", "log_dir", "exp_name", "num_workers", "data_root", "tokenizer", "keep_checkpoints",
    "stop_after_phase", "progress_bar",
})

TMP_PREFIX = ".tmp-"


class ConfigMismatchError(RuntimeError):
    """The run directory holds a run with a different config."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], Any]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync it and rename it onto ``path``.

    If ``write`` raises (or the process dies) ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def to_json(obj: Any, indent: int = 1, _level: int = 0) -> str:
    """JSON with one line per dict entry, but lists of numbers/strings (matrix rows, class orders) on one line."""
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, Mapping) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {to_json(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(inner + to_json(v, indent, _level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(plain(obj))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, to_json(obj) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def plain(obj: Any) -> Any:
    """Sacred's ReadOnlyDict/ReadOnlyList (and tuples) -> plain JSON types, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def config_diff(old: Mapping, new: Mapping, ignore=NON_IDENTITY_KEYS,
                new_key_defaults: Mapping | None = None) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} for top-level keys that differ, ignoring ``ignore``; a missing key reads as <absent>.

    ``new_key_defaults``: keys that a newer version of the code added with these defaults (e.g. another method's
    config keys); a saved config without such a key matches when the new value is that default, so adding a method
    to the codebase does not stop older runs from resuming.
    """
    absent = "<absent>"
    defaults = new_key_defaults or {}
    keys = (set(old) | set(new)) - set(ignore)
    keys = {k for k in keys if not (k not in old and k in defaults and plain(new.get(k)) == plain(defaults[k]))}
    return {k: (old.get(k, absent), new.get(k, absent)) for k in sorted(keys)
            if plain(old.get(k, absent)) != plain(new.get(k, absent))}


class RunDir:
    """One run's directory. ``open()`` creates it, or checks that it belongs to the same config."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, phase: int) -> Path:
        return self.checkpoint_dir / f"phase_{phase}.pt"

    def log_dir(self) -> Path:
        return self.path / "logs"

    # -- lifecycle
    def open(self, config: Mapping, restart: bool = False, new_key_defaults: Mapping | None = None) -> "RunDir":
        """Create the directory and write ``config.json``; on a run with checkpoints, refuse a changed config.

        ``restart=True`` deletes an existing run directory first (its checkpoints and results are lost).
        """
        config = plain(config)
        if restart and self.path.exists():
            print(f"restart=True: deleting the previous run in {self.path}")
            shutil.rmtree(self.path)
        if self.config_path.is_file() and self.finished_phases():  # without checkpoints there is nothing to keep
            old = read_json(self.config_path)
            diff = config_diff(old, config, new_key_defaults=new_key_defaults)
            if diff:
                lines = "\n".join(f"  {k}: {a!r} (saved) != {b!r} (now)" for k, (a, b) in diff.items())
                raise ConfigMismatchError(
                    f"{self.path} holds a run with a different config, so it cannot be resumed:\n{lines}\n"
                    f"Start it over with restart=True, or choose another run directory with exp_name=... "
                    f"(or log_dir=...).")
        elif self.path.exists() and any(self.checkpoint_dir.glob("phase_*.pt")):
            raise ConfigMismatchError(f"{self.path} holds checkpoints but no config.json; pass restart=True "
                                      f"to start over")
        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_stale_tmp()
        write_json(self.config_path, config)
        return self

    def remove_stale_tmp(self) -> None:
        """Delete temporary files left by a write that was killed."""
        for tmp in self.path.rglob(TMP_PREFIX + "*"):
            tmp.unlink(missing_ok=True)

    # -- checkpoints
    def save_checkpoint(self, phase: int, state: dict) -> Path:
        state = {**state, "phase": phase, "complete": True}
        path = atomic_write(self.checkpoint_path(phase), lambda f: torch.save(state, f))
        return path

    def finished_phases(self) -> list[int]:
        """Phases with a checkpoint file, ascending."""
        found = []
        for p in self.checkpoint_dir.glob("phase_*.pt"):
            try:
                found.append(int(p.stem.split("_", 1)[1]))
            except ValueError:
                continue
        return sorted(found)

    def load_checkpoint(self, phase: int) -> dict:
        state = torch.load(self.checkpoint_path(phase), map_location="cpu", weights_only=False)
        if not state.get("complete") or state.get("phase") != phase:
            raise RuntimeError(f"{self.checkpoint_path(phase)} is not a complete phase-{phase} checkpoint")
        return state

    def latest_checkpoint(self) -> dict | None:
        """The checkpoint of the last finished phase, or None for a fresh run.

        Files are renamed into place only once complete, so the newest one is loaded; a file that still fails to
        load (e.g. copied by hand) is reported and the previous phase is tried.
        """
        for phase in reversed(self.finished_phases()):
            try:
                return self.load_checkpoint(phase)
            except Exception as e:  # noqa: BLE001 - any unreadable file means "not finished"
                print(f"warning: skipping unreadable checkpoint {self.checkpoint_path(phase)}: {e}")
        return None

    def prune_checkpoints(self, keep: int) -> None:
        """Keep only the ``keep`` newest phase checkpoints (``keep <= 0``: keep all)."""
        if keep > 0:
            for phase in self.finished_phases()[:-keep]:
                self.checkpoint_path(phase).unlink(missing_ok=True)
