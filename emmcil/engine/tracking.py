"""Where a run's numbers go besides ``results.json``: Lightning's loggers and sacred's run record.

- Training, per phase (Lightning logs them): ``train/loss``, ``train/acc`` and the learning rate
  (``LearningRateMonitor``), to ``logs/phase_{t}/metrics.csv``, ``logs/tensorboard/phase_{t}/`` and W&B.
- Evaluation, after every phase (:func:`emmcil.engine.results.phase_metrics`, step = phase): accuracy on the seen
  classes, on the new and the old ones, on each task (phase j's classes), forgetting, and the memory (exemplars,
  bytes, full-exemplar equivalents), to ``logs/phases/metrics.csv``, ``logs/tensorboard/phases/``, W&B, and sacred
  (``log_scalar``: what ``-F DIR`` and other observers record as metrics).
- At the end: ``results.json``, ``results.md``, ``class_order.json`` and the figures as sacred
  artifacts; the run's summary as sacred's result (returned by ``run.py``'s main).

CSV is always on. TensorBoard is on when ``tensorboard`` or ``tensorboardX`` is installed (requirements.txt lists
``tensorboardX``, the small one). Weights & Biases with ``wandb=True`` (``wandb_project``, ``wandb_entity``,
``wandb_mode=offline`` to write ``logs/wandb/`` and upload later with ``wandb sync``); one W&B run per run directory,
continued when the run resumes (its id is kept in ``logs/wandb_id``).
"""
from __future__ import annotations

import importlib.util
import secrets
from pathlib import Path
from typing import Any, Mapping

from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger, Logger

from emmcil.atomic import write_text

ARTIFACTS = ("results.json", "results.md", "class_order.json")  # sacred records the config itself


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write (it uses tensorboard, else tensorboardX)."""
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


class RunTracker:
    """The loggers of one run (``log_dir``: the run's ``logs/``) and, when run through ``run.py``, its sacred run.

    ``sacred_run``: sacred's ``_run`` (or None); ``enabled=False`` (``evaluate``) logs nothing. Under DDP every rank
    makes the same loggers (Lightning's log only on rank 0); ``main=False`` (the other ranks) writes no file of its
    own and leaves sacred alone.
    """

    def __init__(self, cfg: Mapping[str, Any], log_dir: Path, sacred_run=None, enabled: bool = True,
                 main: bool = True):
        self.cfg, self.log_dir, self.enabled, self.main = cfg, Path(log_dir), enabled, main
        self.sacred_run = sacred_run if main else None
        self.tensorboard = tensorboard_available()
        self._wandb = self._make_wandb() if enabled and cfg.get("wandb") else None
        self._phases: list[Logger] = []

    # ------------------------------------------------------------------ loggers
    def _make_wandb(self) -> Logger:
        if importlib.util.find_spec("wandb") is None:
            raise ModuleNotFoundError("wandb=True needs the wandb package: pip install wandb (then `wandb login`, "
                                      "or wandb_mode=offline)")
        if self.cfg.get("wandb_mode", "online") not in ("online", "offline"):
            raise ValueError(f"wandb_mode={self.cfg['wandb_mode']!r}: expected 'online' or 'offline'")
        from pytorch_lightning.loggers import WandbLogger

        id_file = self.log_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        if self.main:
            write_text(id_file, run_id + "\n")
        return WandbLogger(name=self.cfg["exp_name"], project=self.cfg.get("wandb_project") or "emmcil",
                           entity=self.cfg.get("wandb_entity") or None, save_dir=str(self.log_dir), id=run_id,
                           resume="allow", offline=self.cfg.get("wandb_mode") == "offline", config=dict(self.cfg))

    def phase_loggers(self, phase: int) -> list[Logger] | bool:
        """The loggers of phase ``phase``'s Trainer (False when disabled)."""
        if not self.enabled:
            return False
        loggers: list[Logger] = [CSVLogger(save_dir=str(self.log_dir), name="", version=f"phase_{phase}")]
        if self.tensorboard:
            from pytorch_lightning.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(self.log_dir), name="tensorboard", version=f"phase_{phase}"))
        if self._wandb is not None:
            loggers.append(self._wandb)
        return loggers

    def callbacks(self) -> list:
        """Callbacks for every phase's Trainer: the learning-rate monitor (when logging)."""
        return [LearningRateMonitor(logging_interval="step")] if self.enabled else []

    def _phase_loggers(self) -> list[Logger]:
        """The loggers of the evaluation after every phase (made on first use)."""
        if not self._phases:
            self._phases = [CSVLogger(save_dir=str(self.log_dir), name="", version="phases")]
            if self.tensorboard:
                from pytorch_lightning.loggers import TensorBoardLogger

                self._phases.append(TensorBoardLogger(save_dir=str(self.log_dir), name="tensorboard",
                                                      version="phases"))
            if self._wandb is not None:
                self._phases.append(self._wandb)
        return self._phases

    # ------------------------------------------------------------------ events
    def record_info(self, key: str, value: Any) -> None:
        """Put ``value`` in sacred's run record (``info``), e.g. the provenance."""
        if self.enabled and self.sacred_run is not None:
            self.sacred_run.info[key] = value

    def log_phase(self, phase: int, metrics: Mapping[str, float], replay: bool = False) -> None:
        """The evaluation metrics of ``phase`` (step = phase). ``replay=True``: phases a resumed run finished
        before; only the CSV log gets them again (Lightning's CSVLogger starts its file afresh in a new process,
        while TensorBoard, W&B and sacred's observers kept them)."""
        if not self.enabled:
            return
        loggers = self._phase_loggers()
        for logger in loggers[:1] if replay else loggers:
            if logger is self._wandb:
                logger.log_metrics({**metrics, "phase": phase})  # W&B steps are its own: the phase is a column
            else:
                logger.log_metrics(dict(metrics), step=phase)
            logger.save()
        if self.sacred_run is not None and not replay:
            for name, value in metrics.items():
                self.sacred_run.log_scalar(name, value, phase)

    def finish(self, run_dir: Path, results: Mapping[str, Any]) -> dict[str, Any]:
        """Flush the loggers, hand the run's files to sacred's observers, and return the run's summary (sacred's
        result): run directory, phases done, and the summary metrics."""
        summary = {"run_dir": str(run_dir), "completed_phases": results["completed_phases"],
                   "finished": results["finished"]}
        summary.update({k: results.get(k) for k in ("last_accuracy", "avg_incremental_accuracy", "forgetting")})
        if not self.enabled:
            return summary
        for logger in self._phases:  # (Lightning's loggers act on rank 0 only)
            logger.finalize("success")
        if self._wandb is not None and self.main:
            self._wandb.experiment.summary.update({k: v for k, v in summary.items() if k != "run_dir"})
            self._wandb.experiment.finish()
        if self.sacred_run is not None:
            files = [run_dir / name for name in ARTIFACTS] + sorted(run_dir.glob("*.png"))
            for path in files:
                if path.is_file():
                    self.sacred_run.add_artifact(str(path), name=path.name)
        return summary
