"""Re-score a phase checkpoint of a run without retraining.

    python -m emmcil.engine.evaluate RUN_DIR [--phase T] [--split test] [--missing-type both --missing-ratio 0.7]
        [--data-root DIR] [--accelerator cpu] [--per-gpu-batchsize 64] [--num-workers 4] [--json FILE]

Reads ``RUN_DIR/config.json`` and the checkpoint of phase T (default: the last one), rebuilds the model and the
method's state (memory buffer, prompts, prototypes) as a resumed run would, and evaluates on the test samples of the
classes seen up to phase T, in a split of the run's dataset (``--split``, default the run's ``test_split``),
optionally under another missing-modality setting (``--missing-*``, as the config's ``missing_*`` keys). Prints the
accuracy on each task (the classes phase j introduced) and on all seen classes; on the run's own split and setting
these are the row R[T] of ``results.json``'s accuracy matrix (the recorded values are printed beside them).
Nothing in RUN_DIR is written. A relative ``data_root`` is read from the folder the run was made in when it is not
found from here (:func:`data_root_from`); ``--data-root`` points at data that moved. The checkpoint is loaded with
``torch.load(weights_only=True)`` and must be the run's own (its method and config: ``RunDir.check_identity``); a
checkpoint that cannot be read, one of another run, or a run file that does not parse ends the command with a
message naming the file (exit status 1), a SIGTERM / SIGINT with ``emmcil.stops.STOPPED_EXIT_CODE``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from emmcil import stops
from emmcil.data.arrow import ArrowFormatError
from emmcil.engine.driver import IncrementalRun, quiet_lightning
from emmcil.engine.metrics import accuracy_row
from emmcil.engine.rundir import (DATA_ENTRY, PROVENANCE, READ_DEFAULTS, ConfigMismatchError, RunDir,
                                  UnknownSavedMethodError, UnreadableCheckpointError, UnreadableFileError,
                                  checkpoint_identity, fingerprint_changes, saved_settings)
from emmcil.markdown import markdown_table
from emmcil.methods.catalogue import method_entry
from emmcil.settings import Settings, SettingsError

MISSING_KEYS = ("missing_type", "missing_ratio", "missing_both_ratio", "missing_seed")


def data_root_from(rd: RunDir, saved: Settings) -> str:
    """The run's ``data_root`` as seen from here: a relative one that does not exist here is taken relative to the
    folder the run was made in (the last ``cwd`` of its provenance), e.g. ``data_root=data/arrow`` of a run made in
    the repository and re-scored from elsewhere; otherwise as saved (``saved``: the run's settings)."""
    record = rd.read_record("config.json") or {}
    root = saved.data.data_root or ""
    if not root or Path(root).is_absolute() or Path(root).exists():
        return root
    made_in = [s["cwd"] for s in record.get(PROVENANCE) or [] if s.get("cwd")]
    return str(Path(made_in[-1]) / root) if made_in and (Path(made_in[-1]) / root).exists() else root


def evaluate_run(run_dir: str | Path, phase: int | None = None, split: str | None = None,
                 missing: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """Evaluate phase ``phase``'s checkpoint of ``run_dir`` (default: the last one) on ``split``.

    missing: ``missing_*`` keys to evaluate under (default: the run's); overrides: other config keys that do not
    change the model (``data_root``, ``accelerator``, ``per_gpu_batchsize``, ``num_workers``...).
    Returns {"phase", "split", "missing", "tasks": [{"task", "classes" (original labels), "class_names" (or None),
    "samples", "accuracy"}], "accuracy" (all
    seen classes, %), "correct"/"total" per seen class, "recorded": results.json's R[phase] and accuracy when the
    split, the missing setting and the data (the files' fingerprints) are the run's own, else None,
    "data_changed": the splits ("train", "test") whose files differ from the run's}.
    Raises FileNotFoundError (no config.json / no checkpoint of that phase), ValueError (bad phase or key,
    a run file that does not parse: ``UnreadableFileError``), ``UnreadableCheckpointError`` (the checkpoint does
    not load), ``CheckpointMismatchError`` (a checkpoint of another run).
    """
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    if not rd.config_path.is_file():
        raise FileNotFoundError(f"{rd.config_path} not found: is {run_dir} a run directory?")
    try:
        saved = saved_settings(rd.config())  # a run saved before a key was added reads it at its old value
    except (SettingsError, UnknownSavedMethodError) as e:
        raise ValueError(f"{rd.config_path}: {e}") from None
    finished = rd.finished_phases()
    if not finished:
        raise FileNotFoundError(f"{run_dir} holds no phase checkpoint yet (checkpoints/phase_*.pt)")
    phase = finished[-1] if phase is None else int(phase)
    if phase not in finished:
        raise FileNotFoundError(f"{rd.checkpoint_path(phase)} not found; checkpoints of phases {finished} exist "
                                f"(keep_checkpoints may have pruned the others)")
    unknown = sorted(set(missing or {}) - set(MISSING_KEYS)) + sorted(set(overrides or {}) - set(saved.to_config()))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}")
    overrides = {"data_root": data_root_from(rd, saved), **(overrides or {})}
    cfg = {**saved.to_config(), **overrides, **(missing or {}), "log_dir": str(run_dir.parent),
           "exp_name": run_dir.name, "test_split": split or saved.data.test_split, "progress_bar": False,
           "restart": False, "devices": 1, "num_nodes": 1, "strategy": "auto", "wandb": False}
    with quiet_lightning():
        # the run's own checkpoint: the method and config of config.json (the data may differ: say so below); the
        # keys it lacked (read at their old values) are absent from an older checkpoint's identity too
        added = {**method_entry(saved.experiment.method).config, **READ_DEFAULTS}
        state = rd.load_checkpoint(phase, expect=checkpoint_identity(saved, None), new_key_defaults=added)
        run = IncrementalRun(cfg, read_only=True)
        L = run.data.scenario.num_phases
        run.method.setup(run.context(min(phase + 1, L - 1)))  # as a run resumed after this phase
        run.restore(state)
        run.trainer = run.make_trainer(phase)
        correct, total = run.evaluate(phase)

    phases = [run.data.scenario.phase_classes(t) for t in range(L)]
    boundaries = [0] + [p[-1] + 1 for p in phases]
    row = accuracy_row(correct, total, boundaries, L)[:phase + 1]
    order = run.data.order
    names = run.data.class_names
    tasks = [{"task": j, "classes": [order[c] for c in phases[j]],
              "class_names": [names[order[c]] for c in phases[j]] if names else None,
              "samples": sum(total[boundaries[j]:boundaries[j + 1]]), "accuracy": row[j]} for j in range(phase + 1)]
    # "test" in data_changes compares the files evaluated now with the run's test files: a change only when
    # they are the same split (--split train evaluates other files, not changed ones)
    test_split = run.settings.data.test_split
    own_split = test_split == saved.data.test_split
    data_changes = fingerprint_changes({**run.run_dir.saved_fingerprints(),
                                        "checkpoint": state["identity"].get(DATA_ENTRY)}, run.data.fingerprint)
    changed = sorted(k for k in data_changes if k != "test" or own_split)
    # the recorded values are for the run's own split, missing setting and data (the test files' fingerprint)
    own = own_split and run.settings.missing == saved.missing and "test" not in changed
    recorded = None
    if own:
        done = state["counts"][phase]
        recorded = {"accuracy_row": state["accuracy_matrix"][phase][:phase + 1],
                    "accuracy": 100.0 * sum(done[0]) / sum(done[1]) if sum(done[1]) else None}
    return {"run_dir": str(run_dir), "phase": phase, "split": test_split,
            "missing": dataclasses.asdict(run.settings.missing), "tasks": tasks,
            "accuracy": 100.0 * sum(correct) / sum(total) if sum(total) else None, "correct": correct,
            "total": total, "recorded": recorded, "data_changed": changed}


def accuracy_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """One row per task and one for all seen classes: classes (names, else original labels), samples, accuracy (%)
    and, on the run's own split and setting, the accuracy results.json recorded."""
    recorded = result["recorded"]
    rows = []
    for t in result["tasks"]:
        classes = t["class_names"] or [str(c) for c in t["classes"]]
        shown = ", ".join(classes) if len(classes) <= 4 else f"{', '.join(classes[:3])}, ... ({len(classes)})"
        row = {"task": f"phase {t['task']}", "classes": shown,
               "samples": t["samples"], "accuracy": t["accuracy"]}
        if recorded:
            row["recorded"] = recorded["accuracy_row"][t["task"]]
        rows.append(row)
    last = {"task": "all seen", "classes": str(sum(len(t["classes"]) for t in result["tasks"])),
            "samples": sum(t["samples"] for t in result["tasks"]), "accuracy": result["accuracy"]}
    if recorded:
        last["recorded"] = recorded["accuracy"]
    return pd.DataFrame(rows + [last])


def main(argv: Sequence[str] | None = None, prog: str = "python -m emmcil.engine.evaluate") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory ({log_dir}/{exp_name})")
    parser.add_argument("--phase", type=int, help="the checkpoint's phase (default: the last one)")
    parser.add_argument("--split", help="arrow split of the run's dataset (default: the run's test_split)")
    parser.add_argument("--missing-type", choices=["none", "text", "image", "both"],
                        help="evaluate with this modality missing (default: as the run)")
    parser.add_argument("--missing-ratio", type=float, help="share of the samples that miss it")
    parser.add_argument("--missing-both-ratio", type=float, help="for 'both': share that miss the image")
    parser.add_argument("--missing-seed", type=int, help="seed of the missing-modality tables")
    parser.add_argument("--data-root", help="where the arrow files are now (default: the run's data_root)")
    parser.add_argument("--accelerator", help="Lightning accelerator (default: the run's)")
    parser.add_argument("--per-gpu-batchsize", type=int, help="evaluation batch size (default: the run's)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers (default: the run's)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    opts = parser.parse_args(argv)
    missing = {k: getattr(opts, k) for k in MISSING_KEYS if getattr(opts, k) is not None}
    overrides = {k: getattr(opts, k) for k in ("data_root", "accelerator", "per_gpu_batchsize", "num_workers")
                 if getattr(opts, k) is not None}
    with stops.stoppable():
        try:
            result = evaluate_run(opts.run_dir, opts.phase, opts.split, missing, overrides)
        except (FileNotFoundError, ValueError, ConfigMismatchError, UnreadableCheckpointError,
                UnreadableFileError, ArrowFormatError) as e:
            hint = ""
            if isinstance(e, UnreadableCheckpointError):
                rd = RunDir(opts.run_dir)
                others = [t for t in rd.finished_phases() if rd.checkpoint_path(t) not in e.paths]
                hint = (f"\n(checkpoints of phases {others} exist too: --phase {others[-1]} re-scores the last of "
                        f"them; re-running the run's command resumes from it)" if others else "")
            print(f"error: {e}{hint}", file=sys.stderr)
            return 1
        except BaseException as e:
            stop = stops.stop_of(e)
            if stop is None:
                raise
            print(f"{stop}: nothing was written; re-run the same command to evaluate", file=sys.stderr)
            return stops.STOPPED_EXIT_CODE
    missing = result["missing"]
    setting = ("nothing missing" if missing.get("missing_type", "none") == "none"
               else ", ".join(f"{k}={v}" for k, v in missing.items()))
    print(f"\n{opts.run_dir}: checkpoint of phase {result['phase']}, split {result['split']!r}, {setting}\n")
    print(markdown_table(accuracy_table(result)))
    if result["data_changed"]:
        print(f"\nnote: the {' and '.join(result['data_changed'])} files differ from those the run was made on "
              f"(the fingerprints its checkpoint and files recorded), so the accuracy the run recorded is not shown")
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
