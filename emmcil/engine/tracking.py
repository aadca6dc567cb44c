"""Where a run's numbers go besides ``results.json``: Lightning's loggers (CSV always, TensorBoard when a writer is
installed, Weights & Biases with ``wandb=True``) and sacred's run record. One run directory is one run in every
logger, across its phases and the processes that resume it: the step is a global step over the experiment (the
offset is saved in every phase checkpoint), and a phase re-run replaces its records (TensorBoard's ``purge_step``).
What each logger holds, where, and at which step: docs/experiments.md#logs.
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
from pathlib import Path
from typing import Any, Mapping

from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from emmcil.atomic import write_text
from emmcil.settings.protocol import protocol_label
from emmcil.settings import Settings

ARTIFACTS = ("results.json", "results.md", "class_order.json")  # sacred records the config itself
# The run's summary metrics: W&B's summary, TensorBoard's ``final/*`` scalars, the HParams tab's metric columns.
FINAL_METRICS = ("last_accuracy", "avg_incremental_accuracy", "forgetting", "old_accuracy", "new_accuracy")


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write (it uses tensorboard, else tensorboardX)."""
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


class StepClock:
    """The global step of a run, shared by its TensorBoard and W&B loggers: ``offset`` (the global step at which the
    current phase's training starts, phase-local step 0), the current ``phase``, and the largest step logged."""

    def __init__(self, offset: int = 0):
        self.offset, self.phase, self.last = int(offset), 0, int(offset) - 1

    def to_global(self, step: int | None) -> int:
        """A phase-local (Lightning) step as a global one; None = the last step logged (or the offset)."""
        step = max(self.last, self.offset) if step is None else self.offset + int(step)
        self.last = max(self.last, step)
        return step

    def end_phase(self, trained_steps: int) -> int:
        """The phase trained ``trained_steps`` optimiser steps: returns the step of its evaluation (its last training
        step or later) and moves the offset past it, so the next phase's steps are all larger."""
        step = max(self.offset + int(trained_steps), self.last)
        self.last, self.offset = step, step + 1
        return step


def hparams_of(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config as TensorBoard hyper-parameters: numbers, strings and booleans as they are, anything else (lists,
    None) as its JSON text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in cfg.items()}


class RunTensorBoardLogger(TensorBoardLogger):
    """The run's one TensorBoard run (``{log_dir}/tensorboard/``), used by every phase's Trainer and the evaluation.

    Lightning's phase-local steps become global ones (``clock``), each record gets the ``phase`` scalar, and the
    writer stays open between phases (Lightning's per-Trainer ``finalize`` only flushes; :meth:`close` closes), so
    TensorBoard reads one event file a process. Lightning's own ``log_hyperparams`` (the LightningModule's, empty)
    is ignored: :meth:`write_hparams` records the config. ``purge_step``: TensorBoard drops the events logged at or
    after it before, i.e. those of a phase that is being re-run."""

    def __init__(self, log_dir: Path, clock: StepClock, cfg: Mapping[str, Any]):
        # tensorboardX names event files by the second and host alone, and a second file of that name would
        # replace the first: the suffix tells apart processes, and sorts a resumed run's file after the earlier ones
        # when both start in the same second (TensorBoard reads the files in name order)
        super().__init__(save_dir=str(log_dir), name="tensorboard", version="", default_hp_metric=False,
                         purge_step=clock.offset, filename_suffix=f".{clock.offset:010d}.{os.getpid()}")
        self.clock = clock
        self.hparams = dict(cfg)  # what save() writes to hparams.yaml where there is none

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, absolute: bool = False) -> None:
        step = step if absolute else self.clock.to_global(step)
        super().log_metrics({**metrics, "phase": self.clock.phase}, step)

    @rank_zero_only
    def log_hyperparams(self, params, metrics=None, step=None) -> None:
        """Lightning's call at the start of every fit (the module's hparams: none): the config is recorded once, by
        :meth:`write_hparams`."""

    @rank_zero_only
    def write_hparams(self) -> None:
        """The run's config as its hyper-parameters: the HParams tab's record, whose metrics are
        :data:`FINAL_METRICS` as ``final/*`` and the accuracy after each phase, and ``hparams.yaml``."""
        from lightning_fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE

        if _TENSORBOARD_AVAILABLE:  # the summary protos of the writer Lightning chose
            from torch.utils.tensorboard.summary import hparams
        else:
            from tensorboardX.summary import hparams
        metrics = {f"final/{k}": 0.0 for k in FINAL_METRICS} | {"eval/accuracy": 0.0}  # names only: values are
        writer = self.experiment._get_file_writer()                                    # the scalars of those tags
        for summary in hparams(hparams_of(self.hparams), metrics):
            writer.add_summary(summary)
        yaml = Path(self.log_dir) / self.NAME_HPARAMS_FILE
        yaml.unlink(missing_ok=True)  # save() writes it only where there is none
        self.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.flush()

    @rank_zero_only
    def close(self) -> None:
        if self._experiment is not None:
            self._experiment.close()
            self._experiment = None


def _wandb_logger():
    from pytorch_lightning.loggers import WandbLogger

    class RunWandbLogger(WandbLogger):
        """The run's one W&B run: global steps (``clock``) as W&B's own step and ``trainer/global_step``, and the
        ``phase`` in every record. W&B keeps a record only at a step no smaller than its last, so explicit global
        steps are what let a resumed run (a new process, or an offline folder synced after the first) continue."""

        def __init__(self, clock: StepClock, **kwargs):
            super().__init__(**kwargs)
            self.clock = clock

        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, absolute: bool = False) -> None:
            step = step if absolute else self.clock.to_global(step)
            self.experiment.log({**metrics, "trainer/global_step": step, "phase": self.clock.phase}, step=step)

    return RunWandbLogger


class RunTracker:
    """The loggers of one run (``log_dir``: the run's ``logs/``) and, when run through ``run.py``, its sacred run.

    ``sacred_run``: sacred's ``_run`` (or None); ``enabled=False`` (``evaluate``) logs nothing. Under DDP every rank
    makes the same loggers (Lightning's log only on rank 0); ``main=False`` (the other ranks) writes no file of its
    own and leaves sacred alone. The driver calls :meth:`resume` (a resumed run: the global step its checkpoint
    saved), :meth:`phase_loggers` for each phase's Trainer, :meth:`end_phase` after its training, :meth:`log_phase`
    after its evaluation and :meth:`finish` at the end.
    """

    def __init__(self, settings: Settings, log_dir: Path, sacred_run=None, enabled: bool = True,
                 main: bool = True):
        self.settings, self.log_dir, self.enabled, self.main = settings, Path(log_dir), enabled, main
        self.sacred_run = sacred_run if main else None
        self.tensorboard = tensorboard_available()
        self.clock = StepClock()
        self._eval_step = 0
        self._wandb = self._make_wandb() if enabled and settings.logging.wandb else None
        self._tensorboard: RunTensorBoardLogger | None = None
        self._csv_phases: CSVLogger | None = None

    # ------------------------------------------------------------------ loggers
    def _make_wandb(self) -> Logger:
        if importlib.util.find_spec("wandb") is None:
            raise ModuleNotFoundError("wandb=True needs the wandb package: pip install wandb (then `wandb login`, "
                                      "or wandb_mode=offline)")
        id_file = self.log_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        if self.main:
            write_text(id_file, run_id + "\n")
        e, w = self.settings.experiment, self.settings.logging
        return _wandb_logger()(self.clock, name=self.settings.run.exp_name, project=w.wandb_project or "emmcil",
                               entity=w.wandb_entity or None, save_dir=str(self.log_dir), id=run_id,
                               resume="allow", offline=w.wandb_mode == "offline", config=self.settings.to_config(),
                               tags=[e.dataset, e.method, protocol_label(e.num_phases, e.init_classes, e.increment)])

    def _tensorboard_logger(self) -> RunTensorBoardLogger | None:
        """The run's TensorBoard logger, made on first use in this process (after :meth:`resume`: its purge step is
        the phase it starts with), with the config written as hyper-parameters."""
        if self._tensorboard is None and self.tensorboard:
            self._tensorboard = RunTensorBoardLogger(self.log_dir, self.clock, self.settings.to_config())
            if self.main and self.clock.offset == 0:  # by the process that starts the run (TensorBoard shows the
                self._tensorboard.write_hparams()          # first record of a run; a resumed run has the same config)
        return self._tensorboard

    def resume(self, next_step: int | None) -> None:
        """A resumed run: its loggers go on at global step ``next_step`` (what the last checkpoint saved; a
        checkpoint from before global steps has none, and the steps start again at 0)."""
        self.clock = StepClock(next_step or 0)
        for logger in (self._wandb, self._tensorboard):
            if logger is not None:
                logger.clock = self.clock

    def phase_loggers(self, phase: int) -> list[Logger] | bool:
        """The loggers of phase ``phase``'s Trainer (False when disabled)."""
        if not self.enabled:
            return False
        self.clock.phase = phase
        loggers: list[Logger] = [CSVLogger(save_dir=str(self.log_dir), name="", version=f"phase_{phase}")]
        loggers += [lg for lg in (self._tensorboard_logger(), self._wandb) if lg is not None]
        return loggers

    def callbacks(self) -> list:
        """Callbacks for every phase's Trainer: the learning-rate monitor (when logging)."""
        return [LearningRateMonitor(logging_interval="step")] if self.enabled else []

    def end_phase(self, trained_steps: int) -> int:
        """After a phase's training (``trained_steps`` optimiser steps): the global step the loggers go on at, which
        the phase's checkpoint keeps (:meth:`resume`)."""
        self._eval_step = self.clock.end_phase(trained_steps)
        return self.clock.offset

    # ------------------------------------------------------------------ events
    def record_info(self, key: str, value: Any) -> None:
        """Put ``value`` in sacred's run record (``info``), e.g. the provenance."""
        if self.enabled and self.sacred_run is not None:
            self.sacred_run.info[key] = value

    def log_phase(self, phase: int, metrics: Mapping[str, float], replay: bool = False) -> None:
        """The evaluation metrics of ``phase``: CSV and sacred at step = phase, TensorBoard and W&B at the global step
        its training ended (:meth:`end_phase`). ``replay=True``: phases a resumed run finished before; only the CSV
        log gets them again (Lightning's CSVLogger starts its file afresh in a new process, while TensorBoard, W&B
        and sacred's observers kept them)."""
        if not self.enabled:
            return
        if self._csv_phases is None:
            self._csv_phases = CSVLogger(save_dir=str(self.log_dir), name="", version="phases")
        self._csv_phases.log_metrics(dict(metrics), step=phase)
        self._csv_phases.save()
        if replay:
            return
        self.clock.phase = phase
        for logger in (self._tensorboard_logger(), self._wandb):
            if logger is not None:
                logger.log_metrics(dict(metrics), self._eval_step, absolute=True)
        if self.sacred_run is not None:
            for name, value in metrics.items():
                self.sacred_run.log_scalar(name, value, phase)

    def finish(self, run_dir: Path, results: Mapping[str, Any]) -> dict[str, Any]:
        """Flush and close the loggers (a finished run's :data:`FINAL_METRICS` as ``final/*`` scalars and W&B's
        summary), hand the run's files to sacred's observers, and return the run's summary (sacred's result): run
        directory, phases done, and the summary metrics."""
        summary = {"run_dir": str(run_dir), "completed_phases": results["completed_phases"],
                   "finished": results["finished"]}
        summary.update({k: results.get(k) for k in ("last_accuracy", "avg_incremental_accuracy", "forgetting")})
        if not self.enabled:
            return summary
        final = {f"final/{k}": float(results[k]) for k in FINAL_METRICS if results.get(k) is not None}
        if self._csv_phases is not None:  # (Lightning's loggers act on rank 0 only)
            self._csv_phases.finalize("success")
        if self._tensorboard is not None:
            if results["finished"]:
                self._tensorboard.log_metrics(final, self._eval_step, absolute=True)
            self._tensorboard.close()
        if self._wandb is not None and self.main:
            if results["finished"]:
                self._wandb.experiment.summary.update(final)
            self._wandb.experiment.summary.update({k: v for k, v in summary.items() if k != "run_dir"})
            self._wandb.experiment.finish()
        if self.sacred_run is not None:
            files = [run_dir / name for name in ARTIFACTS] + sorted(run_dir.glob("*.png")) + sorted(
                run_dir.glob("*.pdf"))
            for path in files:
                if path.is_file():
                    self.sacred_run.add_artifact(str(path), name=path.name)
        return summary
