"""The run directory: its name (:func:`run_name`), its lock (:func:`locked`), per-phase checkpoints and the resume
rule (:func:`config_diff`). Which keys make a run: :data:`NON_RESULT_KEYS`, the one list of the keys that do not
change what a run computes, applied by :func:`results_config` (the batch layout, :data:`LAYOUT_KEYS`, counts where
:func:`layout_dependence` says so); the resume check, the run name and the report's grouping all use it. Every file
is written atomically (:mod:`emmcil.atomic`); an unreadable one is moved aside, never overwritten. The layout and
what each file holds: docs/experiments.md#the-run-directory; resume: docs/experiments.md#resume.
"""
from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import json
import os
import pickle
import re
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from filelock import FileLock, Timeout

from emmcil.atomic import atomic_write, move_aside, remove_stale, write_text
from emmcil.methods.catalogue import catalogue, method_entry
from emmcil.settings import CONCERNS, Settings, general_fields, non_result_keys
from emmcil.provenance import CONFIG_ENTRY as PROVENANCE

def _torch():
    import torch

    return torch


__all__ = ["NON_RESULT_KEYS", "ADDED_KEY_DEFAULTS", "READ_DEFAULTS", "saved_settings", "saved_config_diff",
           "UnknownSavedMethodError", "results_config", "run_identity", "config_diff", "run_name", "locked", "RunDir",
           "RunInUseError", "NotARunDirectoryError", "ConfigMismatchError", "CheckpointMismatchError",
           "UnreadableCheckpointError", "UnreadableFileError", "checkpoint_identity", "fingerprint_changes",
           "atomic_write", "write_text", "write_json", "read_json", "plain", "to_json"]

# The one list of config keys that do not change what a run computes (or change it only by floating-point rounding:
# the order of a sum, another kernel): a run resumes despite a change in them, they are not part of the run's name,
# and the report averages runs that differ only in them. num_workers changes nothing at all (every sample is drawn
# from its own seed, emmcil.engine.loaders); devices, num_nodes and per_gpu_batchsize change the rounding only (the
# same global batches, per-sample dropout), except where layout_dependence says otherwise.
# Declared by the settings' fields (``result=False``): the run directory and its bookkeeping; where the inputs are
# and whether to trust them (their content is named by other keys); how fast and on what (the same numbers up to
# rounding: the effective batch is batch_size, by accumulation); how images are decoded (the same pixels within the
# decoders' tolerance, docs/data.md, "Decoding"); what is shown and where it is logged.
NON_RESULT_KEYS = non_result_keys([*CONCERNS.values(), *(entry.settings for entry in catalogue().values())])
# The batch layout: which samples share a device's micro-batch. Result keys where the run depends on it.
LAYOUT_KEYS = ("per_gpu_batchsize", "devices", "num_nodes")
# Model-side random draws (config key: what turns it on) that take torch's RNG stream over a batch with
# model_rng="torch", and so depend on which samples share it.
MODEL_DRAWS = {"drop_rate": "dropout", "attn_drop_rate": "attention dropout", "drop_path_rate": "stochastic depth"}
# Keys the run name shows in its fixed part ({dataset}_{method}_{L}phases[_mem..][_miss..]_seed{s}[_{exp_tag}]).
NAME_KEYS = frozenset({"dataset", "method", "num_phases", "init_classes", "increment", "seed", "memory_per_class",
                       "memory_budget_mode",
                       "memory_total", "missing_type", "missing_ratio", "missing_both_ratio", "missing_seed"})
MISSING_PARAMETERS = ("missing_ratio", "missing_both_ratio", "missing_seed")
VARIANT_READABLE_CHARS = 64  # key=value pieces shown in a run name, at most; the rest goes into its hash

LOCK_NAME, HOLDER_NAME = ".lock", ".lock.json"
# What a checkpoint holds and how (2: with its ``identity``, loaded with weights_only=True). A checkpoint of
# another format is refused, naming the format.
CHECKPOINT_FORMAT = 2
# config.json's entry (not a config key) and class_order.json's / results.json's: the data's content fingerprint
DATA_ENTRY = "data_fingerprint"
# the run directory's files that record the data's fingerprint, besides every checkpoint
FINGERPRINT_FILES = ("config.json", "class_order.json", "results.json")

# General config keys added after runs were made: a run directory saved without one resumes when the key is at its
# default (it computes what that run computed).
ADDED_KEY_DEFAULTS = {k: general_fields()[k].default for k in ("length_group_window", "head", "init_classes",
                                                                 "increment")}
# Keys a config saved by an older version may lack (a run re-scored by emmcil.engine.evaluate, the memory browser),
# at the values the code read them as before it read the typed settings (:func:`saved_settings`).
READ_DEFAULTS = {"model_rng": "sample", "tuning": "ssf", "load_path": "", "timm_init": "", "num_threads": 0,
                 "jpeg_draft": False, "decode_on": "cpu", "missing_type": "none", "limit_train_batches": 1.0,
                 "memory_browser": True, "log_every_n_steps": 50, **ADDED_KEY_DEFAULTS}

# (key, value saved by older versions) -> why such a run cannot resume (added to the refusal's message)
RETIRED_VALUES = {
    ("memory_unit", "exemplar"): (
        "this run was made before memory_unit's default became 'tokens': it charged each exemplar its share of the "
        "sample's bytes (the unit now called 'byte_share'), so its memory holds other exemplars than this version "
        "stores; its results stay readable (python -m emmcil.report, python -m emmcil.engine.evaluate)"),
}


class ConfigMismatchError(RuntimeError):
    """The run directory holds a run with a different config (or made on other data)."""


class CheckpointMismatchError(ConfigMismatchError):
    """A checkpoint was written by another run: another method, config, data or model size (or an older format)."""


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded (cut short, not a checkpoint, or holding more than tensors and plain
    containers); ``paths``: the files, ``cause``: why (for one file)."""

    def __init__(self, message: str, paths=(), cause: str = ""):
        super().__init__(message)
        self.paths, self.cause = [Path(p) for p in paths], cause


class UnreadableFileError(ValueError):
    """A run directory's JSON file that cannot be read or parsed; the message names the file and the cause."""


class RunInUseError(RuntimeError):
    """Another process is running the run of this directory."""


class UnknownSavedMethodError(ValueError):
    """A saved config whose method this version does not have (``.method``: its name)."""

    def __init__(self, method: str):
        self.method = method
        super().__init__(f"method {method!r} is not registered in this version (registered: {sorted(catalogue())})")


class NotARunDirectoryError(RuntimeError):
    """A folder that ``restart=True`` would delete but that is not a run directory."""


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, to_json(obj) + "\n")


def to_json(obj: Any, indent: int = 1, _level: int = 0) -> str:
    """JSON with one line per dict entry, but lists of numbers/strings (matrix rows, class orders) on one line."""
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, Mapping) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {to_json(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(inner + to_json(v, indent, _level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(plain(obj))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of ``path``; :class:`UnreadableFileError` (a ValueError) names the file and the cause when it
    does not parse (cut short, edited by hand) or is not UTF-8."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise UnreadableFileError(f"{path} cannot be read: it is not valid JSON ({e})") from None


def plain(obj: Any) -> Any:
    """Sacred's ReadOnlyDict/ReadOnlyList (and tuples) -> plain JSON types, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------- run identity
def saved_settings(config: Mapping, fill: Mapping[str, Any] | None = None) -> Settings:
    """The typed settings of a run's saved ``config.json`` (``config``, of this or an older version): general keys
    added since take ``fill``'s values (default :data:`READ_DEFAULTS`, the values the code read them as before they
    existed), the method's own keys their defaults; keys this version does not declare (provenance, retired keys)
    are ignored. SettingsError naming a key the saved config lacks and ``fill`` does not give;
    UnknownSavedMethodError for a method this version does not have. The values are not checked (an older version
    may have allowed them)."""
    full = {**(READ_DEFAULTS if fill is None else fill), **config}

    def method_settings(name: str) -> type:
        if name not in catalogue():
            raise UnknownSavedMethodError(name)
        return method_entry(name).settings

    return Settings.of_run(full, method_settings, method_defaults=True)


def layout_dependence(settings: Settings) -> str | None:
    """Why the run's numbers depend on which samples share a device's batch (so :data:`LAYOUT_KEYS` are result
    keys), or None: model draws from torch's RNG stream (``model_rng="torch"`` with dropout, stochastic depth or
    ``max_image_len``), or the method's own batch-level computation (``MethodSettings.layout_dependence``)."""
    model = settings.model
    if model.model_rng == "torch":
        draws = [what for key, what in MODEL_DRAWS.items() if getattr(model, key) > 0]
        draws += ["patch sampling"] if model.max_image_len > 0 else []
        if draws:
            return f"model_rng='torch' draws {', '.join(draws)} over each batch"
    return settings.method.layout_dependence(model.model_rng)


def results_config(settings: Settings) -> dict[str, Any]:
    """The run's record of what changes what it computes, key -> value (the flat config's entries,
    :meth:`Settings.to_config`): every key but :data:`NON_RESULT_KEYS` (less :data:`LAYOUT_KEYS` when the run
    depends on the batch layout, :func:`layout_dependence`), less the keys the run's method does not read: other
    methods' own keys, ``memory_*`` for a method without memory, ``memory_total`` under a per-class budget, and the
    missing-modality parameters when ``missing_type`` is "none".

    ``load_path`` counts by its file name: the same checkpoint in another folder (another machine, a moved copy) is
    the same run; that its content is the same is checked when a run resumes (the frozen weights' checksum)."""
    method = method_entry(settings.experiment.method)
    others = {k for m in catalogue().values() for k in m.config} - set(method.config)
    layout = layout_dependence(settings) is not None
    dropped = set(others) | {k for k in NON_RESULT_KEYS if not (layout and k in LAYOUT_KEYS)}
    config = settings.to_config()
    if not method.uses_memory:
        dropped |= {f.name for f in dataclasses.fields(settings.memory)}
    if settings.memory.memory_budget_mode == "per_class":
        dropped.add("memory_total")
    if settings.missing.missing_type == "none":
        dropped |= set(MISSING_PARAMETERS)
    load_path = settings.model.load_path
    return {k: Path(load_path).name if k == "load_path" and load_path else plain(v)
            for k, v in config.items() if k not in dropped}


def run_identity(settings: Settings) -> dict[str, Any]:
    """What the multi-run report (:mod:`emmcil.report`) needs to know of a run, which ``results.json`` carries so
    that the report reads it there instead of importing the method registry (and torch):

    - ``exp_tag``: the run's tag (the report keeps tagged runs, ablations, apart from the main table);
    - ``uses_memory``: whether the method keeps exemplars (its memory keys then name a variant: ``replay [m=3]``);
    - ``method_defaults``: what ``with <dataset> <method>`` sets by default for the keys that are the method's:
      its own config keys (``Method.config``), the keys its named config sets (``Method.named_config``, e.g.
      ``tuning``) and its training recipe on the run's dataset (:mod:`emmcil.methods.recipes`); a run whose value
      differs names a variant, e.g. ``emm [τ_I=0.3]`` or ``l2p [max_epoch=5]``, and the report puts the paper's
      numbers only beside runs without one;
    - ``results_config``: :func:`results_config` of the run's config, every key that changes results (the run
      name's keys too): runs of one dataset, method and L that differ in one of them are never averaged together.
    """
    from emmcil.methods.recipes import method_recipe

    e = settings.experiment
    method = method_entry(e.method)
    defaults = {**method_recipe(e.method).values(e.dataset), **method.named_config, **method.config}
    return {"exp_tag": settings.run.exp_tag, "uses_memory": bool(method.uses_memory),
            "method_defaults": plain(defaults), "results_config": results_config(settings)}


def config_diff(old: Mapping, new: Mapping, new_key_defaults: Mapping | None = None,
                keys_now: Iterable[str] | None = None) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} for the entries of two runs' records (:func:`results_config`) that differ; a missing key
    reads as <absent>.

    A key of ``old`` that this version does not have at all (``keys_now``: its config's keys, default ``new``'s;
    a retired key, or another method's key that older versions stored for every method) is left out.
    ``new_key_defaults``: keys that newer code added with these defaults; an old record without such a key matches
    when the new value is that default, so adding a key does not stop older runs from resuming.
    """
    absent = "<absent>"
    defaults = new_key_defaults or {}
    keys = (set(old) & set(new if keys_now is None else keys_now)) | set(new)
    keys = {k for k in keys if not (k not in old and k in defaults and new.get(k) == plain(defaults[k]))}
    return {k: (old.get(k, absent), new.get(k, absent)) for k in sorted(keys)
            if old.get(k, absent) != new.get(k, absent)}


def saved_config_diff(saved: Mapping, settings: Settings, new_key_defaults: Mapping | None = None
                      ) -> dict[str, tuple[Any, Any]]:
    """:func:`config_diff` of a run directory's saved ``config.json`` (of this or an older version) against the
    settings of the run now. A key the saved config lacks reads as <absent> (unless ``new_key_defaults`` gives it
    at the value it has now); a saved method this version does not know differs in ``method`` alone."""
    now = settings.to_config()
    # the saved settings, with every key it lacks at this run's value: the record compares the keys it has, and
    # what it lacks is set back to <absent> below
    lacking = [k for k in now if k not in saved]
    try:
        old = saved_settings(saved, fill={k: v for k, v in now.items() if k in lacking})
    except UnknownSavedMethodError as e:
        return {"method": (e.method, settings.experiment.method)}
    record = {k: v for k, v in results_config(old).items() if k not in lacking}
    return config_diff(record, results_config(settings), new_key_defaults, keys_now=now)


def number_text(value: float) -> str:
    """A number as the fixed part of a run name shows it: short (``5``, ``0.7``, ``2.5``), and never the same text
    for two different values (``f"{v:g}"`` alone keeps 6 digits: 5.0000001 would read ``5``)."""
    text = f"{value:g}"
    if float(text) == value:
        return text
    return str(value) if isinstance(value, int) else repr(float(value))


def missing_suffix(missing_type: str, missing_ratio: float, missing_both_ratio: float = 0.5,
                   missing_seed: int = 0) -> str:
    """``_miss{type}{ratio}`` (+ ``b{both_ratio}`` / ``ms{missing_seed}`` when not 0.5 / 0); "" for "none"."""
    if missing_type == "none":
        return ""
    name = f"_miss{missing_type}{number_text(missing_ratio)}"
    if missing_type == "both" and missing_both_ratio != 0.5:
        name += f"b{number_text(missing_both_ratio)}"
    return name + (f"ms{missing_seed}" if missing_seed else "")


def _readable(value: Any) -> str | None:
    """``value`` as it reads in a run name, or None if it is too long or has characters a file name should not."""
    if isinstance(value, float):
        text = repr(value)  # shortest round-trip form: two different floats never read the same
    elif isinstance(value, (bool, int, str)):
        text = str(value)
    else:
        return None
    return text if re.fullmatch(r"[A-Za-z0-9_.+-]{1,24}", text) else None


def run_variant(settings: Settings, reference: Settings) -> dict[str, Any]:
    """The :func:`results_config` entries of ``settings`` that differ from ``reference`` (what the same dataset
    and method get by default), except those the fixed part of the run name shows (:data:`NAME_KEYS`)."""
    ref = results_config(reference)
    return {k: v for k, v in sorted(results_config(settings).items())
            if k not in NAME_KEYS and (k not in ref or ref[k] != v)}


def run_name(settings: Settings, reference: Settings | None = None) -> str:
    """The run directory's name: ``{dataset}_{method}[_B{b}-Inc{i}]_{L}phases[_mem{m}|_memtotal{M}][_miss...]{variant}
    _seed{seed}[_{exp_tag}]``.

    ``variant``: every key that changes results (:func:`results_config`) and differs from ``reference`` (the
    defaults of the same dataset and method, e.g. ``run.py print_config with <dataset> <method>``): the method's
    own keys first, then the others, alphabetically, as ``_key=value`` while short (at most
    :data:`VARIANT_READABLE_CHARS` characters in all), and the rest as ``_h`` + 8 hex digits of their hash. Two
    configs that differ in a key that changes results therefore never share a name, and the same config always
    gets the same one. Without a reference, the name has no variant part.
    """
    e, memory, missing = settings.experiment, settings.memory, settings.missing
    method = method_entry(e.method)
    name = f"{e.dataset}_{e.method}_{e.num_phases}phases"
    if e.increment:  # PyCIL's protocol with the keys as set (init_classes 0 and = increment split alike, but are
        name = f"{e.dataset}_{e.method}_B{e.init_classes}-Inc{e.increment}_{e.num_phases}phases"  # two configs)
    if method.uses_memory:
        name += (f"_mem{number_text(memory.memory_per_class)}" if memory.memory_budget_mode == "per_class"
                 else f"_memtotal{number_text(memory.memory_total)}")
    name += missing_suffix(missing.missing_type, missing.missing_ratio, missing.missing_both_ratio,
                           missing.missing_seed)
    variant = run_variant(settings, reference) if reference is not None else {}
    ordered = sorted(variant, key=lambda k: (k not in method.config, k))
    shown, hashed, used = [], {}, 0
    for k in ordered:
        text = _readable(variant[k])
        piece = f"{k}={text}"
        if text is not None and used + len(piece) + 1 <= VARIANT_READABLE_CHARS:
            shown.append(piece)
            used += len(piece) + 1
        else:
            hashed[k] = variant[k]
    name += "".join("_" + piece for piece in shown)
    if hashed:
        name += "_h" + hashlib.sha1(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:8]
    name += f"_seed{e.seed}"
    return name + (f"_{settings.run.exp_tag}" if settings.run.exp_tag else "")


# ---------------------------------------------------------------------------------------------- checkpoint identity
def config_hash(settings: Settings) -> str:
    """16 hex digits of SHA-1 over :func:`results_config` (sorted JSON): the keys that change results."""
    return hashlib.sha1(json.dumps(results_config(settings), sort_keys=True).encode("utf-8")).hexdigest()[:16]


def checkpoint_identity(settings: Settings, data_fingerprint: Mapping[str, str] | None) -> dict[str, Any]:
    """Whose a checkpoint is, stored in it and checked when it is loaded: the checkpoint ``format``
    (:data:`CHECKPOINT_FORMAT`), the ``method``, every key that changes results (``results_config``, which holds
    the model size too) and their hash, and the data's content fingerprint (``RunData.fingerprint``)."""
    return {"format": CHECKPOINT_FORMAT, "method": settings.experiment.method,
            "results_config": results_config(settings), "results_config_hash": config_hash(settings),
            DATA_ENTRY: dict(data_fingerprint or {})}


def fingerprint_changes(saved: Mapping[str, Mapping[str, str] | None], now: Mapping[str, str]
                        ) -> dict[str, tuple[str, str, list[str]]]:
    """{split: (saved, now, [where saved])} for the splits whose fingerprint recorded in ``saved`` ({where, e.g.
    "config.json": {split: fingerprint}}) differs from ``now``. A fingerprint of an older format (another length:
    before image bytes were hashed) cannot be compared and is left out."""
    out: dict[str, tuple[str, str, list[str]]] = {}
    for where, record in saved.items():
        for split, old in (record or {}).items():
            new = now.get(split)
            if new is None or not isinstance(old, str) or len(old) != len(new) or old == new:
                continue
            out.setdefault(split, (old, new, []))[2].append(where)
    return {split: out[split] for split in now if split in out}  # in the data's order


def identity_differences(saved: Mapping, expected: Mapping, new_key_defaults: Mapping | None = None) -> list[str]:
    """What differs between a checkpoint's ``identity`` and the one this run expects, one line each; [] = the same.
    ``expected`` without a data fingerprint (``{}``) leaves the data out (re-scoring on other data)."""
    lines = []
    if saved.get("method") != expected["method"]:
        lines.append(f"method: {saved.get('method')!r} (checkpoint) != {expected['method']!r} (this run)")
    if saved.get("results_config_hash") != expected["results_config_hash"]:
        diff = config_diff(saved.get("results_config") or {}, expected["results_config"], new_key_defaults)
        lines += [f"{k}: {a!r} (checkpoint) != {b!r} (this run)" for k, (a, b) in diff.items() if k != "method"]
    for split, (old, new, _) in fingerprint_changes({"checkpoint": saved.get(DATA_ENTRY)},
                                                    expected.get(DATA_ENTRY) or {}).items():
        lines.append(f"data: the {split} files' fingerprint {old} (checkpoint) != {new} (the data now)")
    return lines


# ---------------------------------------------------------------------------------------------- the lock
def holder_info() -> dict[str, Any]:
    """Who holds a run directory: host, process id, user, command line, since when."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = ""
    return {"host": socket.gethostname(), "pid": os.getpid(), "user": user, "command": shlex.join(sys.argv),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of run directory ``path`` (created if needed) while the block runs.

    The lock is ``filelock``'s (an OS lock on ``path/.lock``: ``flock`` on POSIX), so the OS releases it when the
    holder exits or dies, even by SIGKILL; ``.lock.json`` says who holds it. A second process on the same directory
    gets :class:`RunInUseError` naming the holder, instead of training the same run a second time alongside.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            who = read_json(path / HOLDER_NAME)
            holder = (f"process {who['pid']} of {who.get('user') or 'an unknown user'} on {who['host']}, since "
                      f"{who['since']}: {who['command']}")
        except (OSError, ValueError, KeyError):
            holder = "a process that is just starting (or one that left no .lock.json)"
        raise RunInUseError(f"{path} is in use by {holder}\nWait for it to end (or stop it) before running this "
                            f"config again; to run it a second time alongside, give it another exp_name=... or "
                            f"log_dir=...") from None
    try:
        write_json(path / HOLDER_NAME, holder_info())
        yield path
    finally:
        (path / HOLDER_NAME).unlink(missing_ok=True)
        lock.release()


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
    def open(self, settings: Settings, restart: bool = False, new_key_defaults: Mapping | None = None,
             provenance: Mapping | None = None, data_fingerprint: Mapping[str, str] | None = None,
             data_root: str | os.PathLike | None = None) -> "RunDir":
        """Create the directory and write ``config.json`` (the flat config, :meth:`Settings.to_config`); on a run
        with checkpoints, refuse a changed config (:func:`saved_config_diff`) or other data (``data_fingerprint``
        against every file that recorded one: :data:`FINGERPRINT_FILES`; ``data_root``: where the data are, for the
        message), before anything is written.

        ``restart=True`` deletes what an existing run directory holds first (its checkpoints and results are lost).
        ``provenance`` (:func:`emmcil.provenance.provenance`) is appended to the ``provenance`` list of
        ``config.json``: one entry per process that ran (or resumed) the run. A ``config.json``, ``class_order.json``
        or ``results.json`` that cannot be read is moved aside with a note (the checkpoints say whose they are, so
        the run is still checked) and written anew.
        """
        config = plain(settings.to_config())
        if restart and self.path.exists():
            self.clear()
            print(f"restart=True: deleted the previous run in {self.path}")
        records = {name: self.read_record(name, set_aside=True) for name in FINGERPRINT_FILES}
        old = records["config.json"]
        finished = self.finished_phases()
        if old is not None and finished:  # without checkpoints there is nothing to keep
            diff = saved_config_diff(old, settings, new_key_defaults)
            if diff:
                lines = "\n".join(f"  {k}: {a!r} (saved) != {b!r} (now)" for k, (a, b) in diff.items())
                notes = "".join(f"\nNote: {RETIRED_VALUES[k, a]}." for k, (a, _) in diff.items()
                                if isinstance(a, str) and (k, a) in RETIRED_VALUES)
                raise ConfigMismatchError(
                    f"{self.path} holds a run with a different config, so it cannot be resumed:\n{lines}{notes}\n"
                    f"Start it over with restart=True, or choose another run directory with exp_name=... "
                    f"(or log_dir=...).")
        if data_fingerprint is not None and finished:
            changes = fingerprint_changes({k: (v or {}).get(DATA_ENTRY) for k, v in records.items()},
                                          data_fingerprint)
            if changes:
                raise ConfigMismatchError(data_change_message(self.path, changes, data_root))
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale(self.path)  # temporary files of writes that were killed
        sessions = list(old.get(PROVENANCE, [])) if old is not None and finished else []
        if provenance is not None:
            sessions.append(dict(provenance))
        extra = {DATA_ENTRY: dict(data_fingerprint)} if data_fingerprint is not None else {}
        write_json(self.config_path, {**config, **extra, **({PROVENANCE: sessions} if sessions else {})})
        return self

    def read_record(self, name: str, set_aside: bool = False) -> dict | None:
        """The JSON file ``name`` of the run directory, or None when it is absent. One that cannot be read is an
        :class:`UnreadableFileError` naming it, or with ``set_aside`` moved aside (:func:`emmcil.atomic.move_aside`)
        with a warning, and None."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            record = read_json(path)
            if not isinstance(record, dict):
                raise UnreadableFileError(f"{path} cannot be read: it holds a JSON {type(record).__name__}, "
                                          f"not an object")
            return record
        except (OSError, UnreadableFileError) as e:
            if not set_aside:
                raise UnreadableFileError(str(e)) from None
            aside = move_aside(path, str(e))
            print(f"warning: {e}\n  moved it aside to {aside} (with a note); {name} is written anew (the "
                  f"checkpoints say which run they belong to)")
            return None

    def saved_fingerprints(self) -> dict[str, dict | None]:
        """{file: the data fingerprint it recorded} for :data:`FINGERPRINT_FILES` that can be read."""
        out = {}
        for name in FINGERPRINT_FILES:
            try:
                record = self.read_record(name)
            except UnreadableFileError:
                continue
            if record is not None and record.get(DATA_ENTRY):
                out[name] = record[DATA_ENTRY]
        return out

    def clear(self) -> None:
        """Delete everything the directory holds but its lock (which the caller may hold). NotARunDirectoryError,
        deleting nothing, for a folder that is no run directory (no config.json, set aside or not, and no
        checkpoints/) or that holds other runs' directories: ``restart=True`` with an exp_name or log_dir that
        points elsewhere."""
        entries = [p for p in self.path.iterdir() if p.name not in (LOCK_NAME, HOLDER_NAME)]
        own = any(p.name == "config.json" or p.name.startswith("config.json.unreadable-") or p.name == "checkpoints"
                  for p in entries)
        nested = [p.name for p in entries if p.is_dir() and (p / "config.json").is_file()]
        if entries and (not own or nested):
            what = (f"it holds other runs ({', '.join(sorted(nested)[:3])}{', ...' if len(nested) > 3 else ''})"
                    if nested else "it holds no config.json or checkpoints/")
            raise NotARunDirectoryError(f"restart=True would delete {self.path}, which is not a run directory: {what}. "
                                f"Nothing was deleted; check exp_name and log_dir")
        for p in entries:
            if p.name in (LOCK_NAME, HOLDER_NAME):
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

    def config(self) -> dict[str, Any]:
        """The saved config (``config.json`` without its ``provenance`` and data fingerprint);
        :class:`UnreadableFileError` names a file that does not parse."""
        saved = self.read_record("config.json")
        if saved is None:
            raise FileNotFoundError(f"{self.config_path} not found: is {self.path} a run directory?")
        return {k: v for k, v in saved.items() if k not in (PROVENANCE, DATA_ENTRY)}

    # -- checkpoints
    def save_checkpoint(self, phase: int, state: dict, identity: Mapping | None = None) -> Path:
        """Write phase ``phase``'s checkpoint: ``state`` (tensors and plain containers), ``identity``
        (:func:`checkpoint_identity`), its phase and format."""
        state = {**state, "identity": dict(identity or {}), "format": CHECKPOINT_FORMAT, "phase": phase,
                 "complete": True}
        path = atomic_write(self.checkpoint_path(phase), lambda f: _torch().save(state, f))
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

    def load_checkpoint(self, phase: int, expect: Mapping | None = None,
                        new_key_defaults: Mapping | None = None) -> dict:
        """Phase ``phase``'s checkpoint, loaded with ``torch.load(weights_only=True)``: no code in the file runs.

        Raises :class:`UnreadableCheckpointError` for a file that does not load (cut short, not a checkpoint, or
        holding objects other than tensors and plain containers, which emmcil never writes), and, with ``expect``
        (:func:`checkpoint_identity` of this run), :class:`CheckpointMismatchError` naming what differs when the
        checkpoint is of another run or format. The result carries ``file``: the path it was read from.
        """
        path = self.checkpoint_path(phase)
        try:
            state = _torch().load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            cause = (f"it holds objects other than tensors and plain containers, which emmcil never writes; "
                     f"refused, since loading them could run code ({first})")
            raise UnreadableCheckpointError(f"{path} cannot be read: {cause}", [path], cause) from None
        except Exception as e:  # noqa: BLE001 - cut short, empty, not a zip: torch raises several kinds
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            cause = f"{type(e).__name__}: {text.split('. ')[0] if len(text) > 120 else text}"  # not torch's advice
            raise UnreadableCheckpointError(f"{path} cannot be read ({cause})", [path], cause) from None
        if not isinstance(state, dict) or not state.get("complete") or state.get("phase") != phase:
            cause = f"not a complete phase-{phase} checkpoint"
            raise UnreadableCheckpointError(f"{path} cannot be read: {cause}", [path], cause)
        if expect is not None:
            self.check_identity(path, state, expect, new_key_defaults)
        return {**state, "file": str(path)}

    @staticmethod
    def check_identity(path: Path, state: Mapping, expect: Mapping, new_key_defaults: Mapping | None = None) -> None:
        """:class:`CheckpointMismatchError` naming ``path`` and what differs, when ``state`` is not a checkpoint of
        the run whose identity is ``expect``."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointMismatchError(
                f"{path} is a checkpoint of format {state.get('format', 1)}, written by an older emmcil without "
                f"the identity of its run (method, config, data), so it cannot be checked; this emmcil writes and "
                f"reads format {CHECKPOINT_FORMAT}. Re-run the run with the emmcil that made it, or start it over "
                f"with restart=True.")
        lines = identity_differences(state.get("identity") or {}, expect, new_key_defaults)
        if lines:
            listed = "\n".join(f"  {line}" for line in lines)
            raise CheckpointMismatchError(
                f"{path} is a checkpoint of another run, so this run does not continue from it:\n{listed}\n"
                f"Put the run's own checkpoint back, or move this file out of checkpoints/ (the run then resumes "
                f"after the phase before, or starts over when there is none).")

    def latest_checkpoint(self, expect: Mapping | None = None, new_key_defaults: Mapping | None = None
                          ) -> dict | None:
        """The checkpoint of the last finished phase, or None for a fresh run (no checkpoint file).

        Files are renamed into place only once complete, so the newest one is loaded. One that still fails to load
        (cut short by a copy, a disk error) is reported; when an earlier phase's checkpoint loads, the run resumes
        from it and the unreadable later files are moved aside (never overwritten). When none loads, the run
        stops with :class:`UnreadableCheckpointError` naming them, instead of starting over on top of them. A
        checkpoint of another run (``expect``: :func:`checkpoint_identity`) is :class:`CheckpointMismatchError`.
        """
        unreadable: list[UnreadableCheckpointError] = []
        for phase in reversed(self.finished_phases()):
            try:
                state = self.load_checkpoint(phase, expect, new_key_defaults)
            except UnreadableCheckpointError as e:
                print(f"warning: skipping unreadable checkpoint {e}")
                unreadable.append(e)
                continue
            for e in unreadable:
                aside = move_aside(e.paths[0], e.cause)
                print(f"warning: moved {e.paths[0]} aside to {aside.name} (with a note): the run resumes after "
                      f"phase {phase} and trains the later phases again")
            return state
        if unreadable:
            listed = "\n".join(f"  {e.paths[0]}: {e.cause}" for e in reversed(unreadable))
            raise UnreadableCheckpointError(
                f"{self.path}: no checkpoint of this run can be read, so it is neither resumed nor started over on "
                f"top of them:\n{listed}\nPut readable copies back (e.g. copy them again from where they came), "
                f"or move them out of {self.checkpoint_dir} to train the run again from phase 0 (restart=True "
                f"deletes the whole run directory and starts over).", [e.paths[0] for e in reversed(unreadable)])
        return None

    def prune_checkpoints(self, keep: int) -> None:
        """Keep only the ``keep`` newest phase checkpoints (``keep <= 0``: keep all)."""
        if keep > 0:
            for phase in self.finished_phases()[:-keep]:
                self.checkpoint_path(phase).unlink(missing_ok=True)


def data_change_message(path: Path, changes: Mapping[str, tuple[str, str, list[str]]],
                        data_root: str | os.PathLike | None = None) -> str:
    """The refusal of a run on other data: each split's saved and current fingerprint, and where it was saved."""
    lines = "\n".join(f"  {split}: {old} (saved) != {new} (now)" for split, (old, new, _) in changes.items())
    where = sorted({w for _, _, ws in changes.values() for w in ws})
    now = f"{data_root} holds now" if data_root else "the data now"
    return (f"{path} holds a run made on other data than {now} (the content fingerprints of the files, "
            f"emmcil.data.ArrowDataset.fingerprint, differ):\n{lines}\n  (saved in {', '.join(where)})\n"
            f"Start it over with restart=True, or choose another run directory with exp_name=... (or log_dir=...).")
