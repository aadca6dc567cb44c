"""The phase loop of a class-incremental run, with per-phase checkpoints and exact resume.

For each phase t (see :mod:`emmcil.methods.base` for the method hooks):

1. seed every RNG from (seed, t); grow the classifier by t's classes; ``method.before_phase``;
2. train (a fresh Lightning Trainer: optimiser and schedule are rebuilt) on t's data + ``method.replay_dataset``,
   then ``method.after_training`` (e.g. EASE's prototype classifier);
3. evaluate on the test data of all classes seen so far (per-class counts -> accuracy matrix row);
4. ``method.after_phase`` (e.g. fill the memory);
5. checkpoint atomically, rewrite ``results.json`` / ``results.md``, log the phase's evaluation
   (:mod:`emmcil.engine.tracking`), print a summary line.

A re-run of the same config loads the last complete checkpoint and continues with the next phase. Because
each phase is seeded from (seed, t) and starts only from what the checkpoint holds, a resumed run computes the
same numbers as an uninterrupted one. While a process runs a run, it holds the run directory's lock
(:func:`emmcil.engine.rundir.locked`): a second process on the same directory is refused.
"""
from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from emmcil import stops
from emmcil.markdown import markdown_table
from emmcil.memory.buffer import mean_full_exemplar_nbytes
from emmcil.methods import PhaseContext, get_method, settings_of
from emmcil.provenance import provenance
from emmcil.settings import Settings

from . import rundir
from .loaders import accumulation_steps, build_data, loader_workers, make_loader, num_devices  # noqa: F401
from .module import IncrementalModule, PredictPass, PredictStep
from .results import build_results, phase_metrics, phase_table, results_markdown, summary_table
from .tracking import RunTracker

def run_settings(cfg: Mapping) -> Settings:
    """The typed :class:`~emmcil.settings.Settings` of a run's resolved config, built once at its start (a config
    saved by an older version takes :data:`~emmcil.engine.rundir.READ_DEFAULTS` for the keys it lacks)."""
    return settings_of({**rundir.READ_DEFAULTS, **cfg})


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar without the logger version (``v_num``), which names the phase's log folder."""

    def get_metrics(self, trainer, model):
        items = super().get_metrics(trainer, model)
        items.pop("v_num", None)
        return items


class SettingError(ValueError):
    """A setting that this machine would silently run otherwise (e.g. float16 autocast on a CPU), or settings with
    problems (:meth:`~emmcil.settings.Settings.problems`) that reached the run without the config's check (an
    entry point of its own, e.g. :mod:`emmcil.engine.evaluate`'s overrides)."""


def resolved_accelerator(settings: Settings) -> str:
    """"cpu" or "gpu" as Lightning picks it for ``accelerator``: "auto" is a CUDA or Apple (MPS) GPU when there is
    one; other names as given. ``settings``: the run's :class:`~emmcil.settings.Settings` (so below)."""
    accelerator = settings.hardware.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() or torch.backends.mps.is_available() else "cpu"
    return accelerator


def resolved_settings(settings: Settings) -> dict[str, Any]:
    """The values a run uses where its config leaves the choice to the machine (config.json's provenance records
    them per process): DataLoader workers after the cap at the usable cores, torch's intra-op threads, the
    accelerator, deterministic kernels, the devices, the accumulation and the micro-batch size. None of them changes
    the results beyond float rounding unless ``emmcil.engine.rundir.layout_dependence`` says so (then the layout
    keys are result keys)."""
    h, batch_size = settings.hardware, settings.optimisation.batch_size
    per_node = num_devices(h.devices)
    accumulation = accumulation_steps(settings)
    parts = accumulation * per_node * h.num_nodes
    return {"num_workers": loader_workers(h.num_workers), "num_threads": torch.get_num_threads(),
            "accelerator": resolved_accelerator(settings), "deterministic": deterministic_kernels(settings),
            "devices_per_node": per_node, "world_size": per_node * h.num_nodes, "accumulation": accumulation,
            "micro_batch": -(-batch_size // parts), "effective_batch": batch_size,
            "model_rng": settings.model.model_rng}


def deterministic_kernels(settings: Settings) -> bool | str:
    """Lightning's ``deterministic`` for a run: the ``deterministic`` key when set (True, False or "warn"); None
    (the default) = True on a CPU, False on a GPU.

    On a CPU, with more than one intra-op thread, a few kernels sum in thread order: the backward of advanced
    indexing (``index_put_`` with accumulate), which reads prompts, keys and position embeddings, so two runs of
    one command differed in the last bits and then drifted apart (a phase's accuracy between 50 and 83 %).
    torch's deterministic mode replaces them by serial ones at little cost there. On a GPU it also slows common
    kernels (atomics become sorts) and needs ``CUBLAS_WORKSPACE_CONFIG`` (Lightning sets it), so it stays opt-in.
    """
    if settings.hardware.deterministic is not None:
        return settings.hardware.deterministic
    return resolved_accelerator(settings) == "cpu"


def shows_progress_bar(settings: Settings, stream=None) -> bool:
    """Whether phases show Lightning's tqdm bar: ``progress_bar`` is on and ``stream`` (default ``sys.stdout``) is
    a terminal. In a log file (SLURM, ``nohup``, a pipe) the bar's carriage-return updates would add thousands of
    lines a phase; there the phase lines are the progress."""
    stream = sys.stdout if stream is None else stream
    return bool(settings.run.progress_bar) and bool(getattr(stream, "isatty", lambda: False)())


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block, Lightning's per-Trainer chatter (devices, tips, "fit stopped"), repeated every phase, is
    off (the driver prints its own summary instead), and four harmless warnings are ignored; other warnings stay
    visible. Both are restored on exit, so a caller's logging and warning filters are left as they were."""
    logger = logging.getLogger("pytorch_lightning")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            # a resumed run's evaluation log (logs/phases/) starts afresh and gets the earlier phases again
            # (RunTracker.log_phase)
            warnings.filterwarnings("ignore", message=r".*Previous log files in this directory will be deleted.*")
            # the module's hook is the one meant (it normalises batches on the device); PhaseData has none
            warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer` in `LightningModule`.*")
            yield
    finally:
        logger.setLevel(level)


class UntrainedBackboneWarning(UserWarning):
    """A run tunes only part of a backbone (SSF, or prompts / adapters / heads on a frozen one) that no checkpoint
    initialised: what trains reads a random network's features, and the run stays near chance."""


def untrained_backbone_note(settings: Settings) -> str | None:
    """Why the run cannot learn much, when ``tuning`` leaves the backbone (mostly) as it was built and nothing
    pretrained was loaded into it (no ``load_path``; ``timm_init``'s ImageNet weights, when in the local cache,
    start the image side only); None otherwise. ``tuning="full"`` trains the whole backbone, and needs nothing."""
    from emmcil.model import timm_imagenet_weights

    m, method = settings.model, settings.experiment.method
    tuning = m.tuning
    if tuning == "full" or m.load_path:
        return None
    what = {"frozen": f"{method} trains its own parameters and the head on a frozen backbone",
            "ssf": f"{method} tunes only SSF's scales and shifts (and the head) of the backbone"}.get(
        tuning, f"{method} tunes the backbone partly (tuning={tuning!r})")
    timm = m.timm_init and timm_imagenet_weights(m.timm_init) is not None
    start = ("only its image side starts from timm's ImageNet weights (timm_init), the text side is random" if timm
             else "its weights are random")
    return (f"{what} (tuning={tuning!r}), but no checkpoint initialised it (load_path=''): {start}, so it will stay "
            f"near chance. Give it pretrained weights, load_path=vilt_200k_mlm_itm.ckpt (docs/reproduction.md), or "
            f"tune the whole backbone, tuning=full (as the demo does).")


def phase_seed(seed: int, phase: int) -> int:
    """A 32-bit seed for phase ``phase`` of run ``seed``; independent of how many phases ran in this process."""
    return int(np.random.SeedSequence([int(seed), int(phase)]).generate_state(1)[0])


class _Positioned(Dataset):
    """Adds ``position`` (the item's place in ``dataset``) so predictions can be put back in order."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], "position": i}


class PhaseData(pl.LightningDataModule):
    """A phase's training loader, handed to ``Trainer.fit`` through Lightning's ``train_dataloader`` hook: under DDP
    Lightning then re-creates it with a ``DistributedSampler``, also inside a custom batch sampler (it records the
    constructor arguments of a ``BatchSampler`` subclass only while its hooks run)."""

    def __init__(self, build_loader):
        super().__init__()
        self.build_loader = build_loader

    def train_dataloader(self) -> DataLoader:
        return self.build_loader()

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """On the host, before the batch moves to the device: how many of its samples count (the others pad a step
        that has fewer samples than micro-batches: weight 0), as a Python int, so the step needs no device sync."""
        if isinstance(batch, dict) and "loss_weight" in batch:
            batch["real_samples"] = int((batch["loss_weight"] > 0).sum())
        return batch


def gather_uneven(strategy, tensor: torch.Tensor, device) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` (N_r, ...) along dim 0: Lightning's predict sampler does not pad the
    shards, so they are padded to the longest for ``all_gather`` and cut back afterwards. Result on CPU."""
    count = strategy.all_gather(torch.tensor([tensor.shape[0]], device=device)).flatten().tolist()
    is_bool = tensor.dtype == torch.bool  # not every backend gathers bool
    local = tensor.to(torch.uint8) if is_bool else tensor
    padded = torch.cat([local, local.new_zeros(max(count) - local.shape[0], *local.shape[1:])]).to(device)
    gathered = strategy.all_gather(padded).cpu()  # (world, max(count), ...)
    out = torch.cat([gathered[r, :n] for r, n in enumerate(count)])
    return out.bool() if is_bool else out


def run_path(settings: Settings) -> Path:
    """The run directory ``{log_dir}/{exp_name}``; ValueError for an empty exp_name."""
    if not settings.run.exp_name:
        raise ValueError("exp_name is empty: leave it unset (the run is then named after its config) or name it")
    return Path(settings.run.log_dir) / settings.run.exp_name


def resume_note(cfg: Mapping) -> str:
    """What to do after a run was stopped (Ctrl-C, a kill of the job): re-run the same command, which resumes after
    the last phase whose checkpoint is in the run directory. ``cfg``: the run's resolved config."""
    settings = run_settings(cfg)
    done = rundir.RunDir(run_path(settings)).finished_phases()
    where = (f"after phase {done[-1]} of {settings.experiment.num_phases} (phases count from 0)" if done
             else "from its start")
    return f"stopped: re-run the same command to resume {where}; run directory {run_path(settings)}"


def cluster_plugins() -> list:
    """Under SLURM (processes started by ``srun``, one per GPU: ``scripts/slurm/table.sbatch``), Lightning's own
    ``SLURMEnvironment`` (ranks, master address and port from SLURM's variables), with its auto-requeue off: on the
    requeue signal it would save a mid-phase ``hpc_ckpt_*.ckpt`` into the run directory, which the Trainer of every
    later phase would then restore. Requeueing is the batch script's job, and resuming ours (phase checkpoints,
    exact). Elsewhere: no plugin (Lightning's own choice)."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


class IncrementalRun:
    """One class-incremental experiment, driven phase by phase from a resolved (sacred) config.

    ``sacred_run``: sacred's ``_run`` when started by ``run.py`` (metrics, artifacts and provenance go to its
    observers). ``read_only=True`` (:mod:`emmcil.engine.evaluate`): an existing run, to evaluate its checkpoints;
    nothing is written and nothing is logged. ``cfg`` is read once, into ``self.settings`` (:func:`run_settings`);
    everything reads those, and the flat record that config.json, the checkpoints' identity and results.json hold
    is ``self.settings.to_config()``.
    """

    def __init__(self, cfg: Mapping, sacred_run=None, read_only: bool = False):
        self.settings = s = run_settings(rundir.plain(cfg))
        problems = s.problems()  # the config's own check (check_config), for every entry point, before any write
        if problems:
            raise SettingError("bad config: " + "; ".join(problems))
        if s.hardware.num_threads > 0:
            torch.set_num_threads(s.hardware.num_threads)
        self.is_main = rank_zero_only.rank == 0  # under DDP every rank runs this; only rank 0 writes
        self.writes = self.is_main and not read_only
        self.run_dir = rundir.RunDir(run_path(s))
        self.result: dict[str, Any] | None = None  # the run's summary, once run() has finished
        self.tracker = RunTracker(s, self.run_dir.log_dir(), sacred_run, enabled=not read_only, main=self.is_main)
        self.resolved = resolved_settings(s)  # what the machine chose (config.json's provenance)
        if s.hardware.precision == "16-mixed" and resolved_accelerator(s) == "cpu":
            raise SettingError("precision=16-mixed on a machine without GPU: float16 autocast runs on GPUs only, and "
                               "Lightning would switch to bf16-mixed under a run named 16-mixed; use "
                               "precision=bf16-mixed (or 32-true) here")
        self.new_key_defaults = {**get_method(s.experiment.method).config, **rundir.ADDED_KEY_DEFAULTS}
        # the data a run's checkpoints were trained on is named by no config key (data_root is a path): its content
        # fingerprint is, recorded in config.json, class_order.json, results.json and every checkpoint, so that a
        # run does not resume, or get re-scored, on data that were re-written
        self.data = build_data(s)
        self.data.scenario.check_complete(self.data.class_names)  # before any phase trains
        if self.writes:
            record = {**provenance(), "resolved": self.resolved}
            self.run_dir.open(s, restart=bool(s.run.restart), provenance=record,
                              new_key_defaults=self.new_key_defaults, data_fingerprint=self.data.fingerprint,
                              data_root=self.data.root)
            self.tracker.record_info("provenance", record)
        self.identity = rundir.checkpoint_identity(s, self.data.fingerprint)  # what its checkpoints must say
        if self.writes:
            rundir.write_json(self.run_dir.path / "class_order.json", self.data.describe())
            self.data.save_missing_tables(self.run_dir.path / "missing_tables")  # CMML runs only
        self.method = get_method(s.experiment.method)(s)
        pl.seed_everything(s.experiment.seed, workers=True, verbose=False)  # the backbone's init (frozen weights)
        self.module = IncrementalModule(self.method, s)
        self.counts: list[tuple[list[int], list[int]]] = []  # per phase: per seen class (correct, total)
        self.memory: list[dict | None] = []                   # per phase: the method's memory report
        self.trainer: pl.Trainer | None = None
        self.log_step = 0  # the loggers' global step after the last phase done (RunTracker.end_phase)
        self._full_exemplar_bytes: float | None = None

    # ------------------------------------------------------------------ pieces
    def full_exemplar_bytes(self) -> float:
        """Mean full-exemplar cost of the training set, cached in ``exemplar_cost.json``."""
        if self._full_exemplar_bytes is None:
            path = self.run_dir.path / "exemplar_cost.json"
            m, T = self.settings.model, self.settings.data.max_text_len
            keys = {"image_size": m.image_size, "patch_size": m.patch_size, "max_text_len": T,
                    "num_samples": len(self.data.train)}
            try:
                cost = rundir.read_json(path) if path.is_file() else None
            except rundir.UnreadableFileError:  # a cache: computed again
                cost = None
            if not isinstance(cost, dict) or any(cost.get(k) != v for k, v in keys.items()):
                cost = mean_full_exemplar_nbytes(self.data.train, self.data.tokenizer, m.image_size, m.patch_size, T)
                if self.writes:
                    rundir.write_json(path, cost)
            self._full_exemplar_bytes = float(cost["mean_bytes"])
        return self._full_exemplar_bytes

    def context(self, phase: int) -> PhaseContext:
        return PhaseContext(settings=self.settings, phase=phase, scenario=self.data.scenario,
                            eval_scenario=self.data.eval_scenario, module=self.module, run_dir=self.run_dir.path,
                            predict=self.predict, full_exemplar_bytes=self.full_exemplar_bytes,
                            tokenizer=self.data.tokenizer, is_main=self.writes)

    def make_trainer(self, phase: int) -> pl.Trainer:
        """Phase ``phase``'s Trainer, with the tracker's loggers and learning-rate monitor."""
        s, h, o = self.settings, self.settings.hardware, self.settings.optimisation
        logs = self.run_dir.log_dir()
        if self.writes and (logs / f"phase_{phase}").exists():  # a phase re-run after an interruption starts its
            shutil.rmtree(logs / f"phase_{phase}")                  # CSV log afresh (TensorBoard: purge_step)
        bar = shows_progress_bar(s)
        callbacks = self.tracker.callbacks() + ([ProgressBar()] if bar else [])
        return pl.Trainer(
            accelerator=h.accelerator, devices=h.devices, num_nodes=h.num_nodes,
            strategy=h.strategy, precision=h.precision, plugins=cluster_plugins(),
            max_epochs=o.max_epoch, max_steps=o.max_steps, accumulate_grad_batches=accumulation_steps(s),
            gradient_clip_val=o.gradient_clip_val,  # limit_train_batches: PhaseBatches, in optimiser steps
            use_distributed_sampler=False,  # PhaseBatches and Shard split the data by themselves (loaders.py)
            logger=self.tracker.phase_loggers(phase), enable_checkpointing=False,
            enable_progress_bar=bar, callbacks=callbacks,
            enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=s.run.log_every_n_steps,
            deterministic=deterministic_kernels(s), default_root_dir=str(self.run_dir.path))

    @torch.no_grad()
    def predict(self, dataset: Dataset, features: bool = False,
                step: PredictStep | None = None) -> dict[str, torch.Tensor]:
        """Run the model over ``dataset`` (eval mode, the phase's Trainer, SSF merged into the weights:
        :meth:`IncrementalModule.ssf_merged`), per-sample results in dataset order (N samples):
        ``labels``, ``indices`` and ``preds`` (+ pooled ``features`` (N, C) with ``features``), or, with
        ``step(backbone, batch) -> dict`` of per-sample tensors of fixed shapes, what ``step`` returns. The pass is
        a :class:`~emmcil.engine.module.PredictPass` made for this call. ValueError for an empty dataset."""
        if len(dataset) == 0:
            raise ValueError("predict() got an empty dataset")
        pass_ = PredictPass(self.module, step=step, features=features)
        with self.module.ssf_merged():  # no gradients here: SSF folded into the weights, plain-ViT cost
            loader = make_loader(_Positioned(dataset), self.settings, train=False)
            outs = self.trainer.predict(pass_, dataloaders=loader, return_predictions=True)
        merged = {k: torch.cat([o[k].detach().cpu() for o in outs]) for k in outs[0]}
        if self.trainer.world_size > 1:  # every rank predicted a shard: gather them all, on every rank
            merged = {k: gather_uneven(self.trainer.strategy, v, self.module.device) for k, v in merged.items()}
        pos = merged.pop("positions")
        order = torch.argsort(pos, stable=True)
        first = torch.ones(len(order), dtype=torch.bool)
        first[1:] = pos[order][1:] != pos[order][:-1]
        result = {k: v[order][first] for k, v in merged.items()}
        if len(result["labels"]) != len(dataset):
            raise RuntimeError(f"predict() returned {len(result['labels'])} samples for {len(dataset)}")
        return result

    def evaluate(self, phase: int) -> tuple[list[int], list[int]]:
        """Per seen class (correct, total) on the test data of every class seen up to ``phase``."""
        n_seen = len(self.data.scenario.classes_upto(phase))
        out = self.predict(self.data.scenario.test_dataset(phase))
        labels, hit = out["labels"], (out["preds"] == out["labels"]).long()
        total = torch.bincount(labels, minlength=n_seen)[:n_seen]
        correct = torch.bincount(labels, weights=hit.double(), minlength=n_seen)[:n_seen].round().long()
        return correct.tolist(), total.tolist()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, phase: int) -> dict:
        return {"num_classes": self.module.classifier.num_classes,
                "trainable": self.module.trainable_state_dict(),
                "frozen_checksum": self.module.frozen_checksum(),
                "method": self.method.state_dict(),
                "counts": self.counts, "memory": self.memory, "log_step": self.log_step,
                "accuracy_matrix": self.results()["accuracy_matrix"]}

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint ``state`` (:meth:`RunDir.load_checkpoint`, its identity checked). A
        parameter of another shape is :class:`~emmcil.engine.rundir.CheckpointMismatchError` naming the file."""
        self.module.classifier.grow_to(state["num_classes"])
        self.module.apply_freeze_policy()
        own = self.module.state_dict()
        shapes = [f"{k}: {tuple(v.shape)} (checkpoint) != {tuple(own[k].shape)} (this model)"
                  for k, v in state["trainable"].items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if shapes:
            raise rundir.CheckpointMismatchError(
                f"{state.get('file', 'the checkpoint')} holds weights of another model size:\n"
                + "\n".join(f"  {line}" for line in shapes[:5]) + (f"\n  ... ({len(shapes)} in all)"
                                                                    if len(shapes) > 5 else ""))
        missing, unexpected = self.module.load_state_dict(state["trainable"], strict=False)
        not_loaded = sorted(set(self.module.trainable_state_dict()) - set(state["trainable"]))
        if unexpected or not_loaded:
            raise RuntimeError(f"checkpoint of phase {state['phase']} does not match the model: "
                               f"unexpected {unexpected[:5]}, trainable but absent {not_loaded[:5]}")
        checksum = self.module.frozen_checksum()
        if not math.isclose(checksum, state["frozen_checksum"], rel_tol=1e-6, abs_tol=1e-6):
            raise RuntimeError(f"the frozen backbone differs from the one of the checkpoint (checksum {checksum} vs "
                               f"{state['frozen_checksum']}): was load_path's file changed?")
        self.method.load_state_dict(state["method"])
        self.counts, self.memory = [tuple(c) for c in state["counts"]], list(state["memory"])
        self.log_step = state.get("log_step") or 0  # absent in checkpoints made before global steps
        self.tracker.resume(self.log_step)

    # ------------------------------------------------------------------ results
    def results(self) -> dict:
        scenario = self.data.scenario
        phases = [scenario.phase_classes(t) for t in range(scenario.num_phases)]
        return build_results(self.settings, self.data.order, phases, self.counts, self.memory,
                             data_fingerprint=self.data.fingerprint)

    def write_results(self) -> dict:
        results = self.results()
        if self.writes:
            rundir.write_json(self.run_dir.path / "results.json", results)
            rundir.write_text(self.run_dir.path / "results.md", results_markdown(results))
        return results

    def summary_line(self, phase: int, n_train: int, n_replay: int, seconds: float) -> str:
        row = self.results()["phases"][phase]
        classes = self.data.scenario.phase_classes(phase)
        acc = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        line = (f"[phase {phase} of {self.data.scenario.num_phases}] classes {classes[0]}-{classes[-1]} "
                f"({len(classes)} new, {row['seen_classes']} seen) | train {n_train} new + {n_replay} replayed | "
                f"acc {acc(row['accuracy'])} (new {acc(row['new_accuracy'])}, old {acc(row['old_accuracy'])})")
        mem = self.memory[phase]
        if mem:
            costs = mem.get("costs") or {}
            shares = ", ".join(f"{costs[u]:.1f} in {u}" + (" (budget)" if u == mem["unit"] else "")
                               for u in ("tokens", "byte_share") if u in costs)
            line += (f" | memory {mem['exemplars']} exemplars ({mem['mean_exemplars_per_class']:.1f} a class), "
                     f"full exemplars: {shares}; {mem['bytes'] / 2**20:.2f} MB")
            if mem["kept_patch_share"] is not None and mem["kept_patch_share"] < 1:
                words = mem["kept_word_share"]
                line += (f"; kept {100 * mem['kept_patch_share']:.0f} % of patches"
                         + ("" if words is None else f", {100 * words:.0f} % of words"))
        return line + f" | {seconds:.0f} s"

    # ------------------------------------------------------------------ the loop
    def run_phase(self, phase: int) -> None:
        start = time.time()
        s, scenario = self.settings, self.data.scenario
        o = s.optimisation
        seed = phase_seed(s.experiment.seed, phase)
        pl.seed_everything(seed, workers=True, verbose=False)
        trainable = self.module.add_classes(len(scenario.phase_classes(phase)))
        ctx = self.context(phase)
        self.trainer = self.make_trainer(phase)
        self.method.before_phase(ctx)
        extra = self.method.replay_dataset(ctx)
        train_set = scenario.train_dataset(phase, extra=extra)
        n_replay = len(extra) if extra is not None else 0
        t = self.trainer
        print(f"phase {phase} of {scenario.num_phases}: {len(train_set) - n_replay} new-class samples + "
              f"{n_replay} replayed, "
              f"{self.module.classifier.num_classes} classes, {trainable:,} trainable parameters "
              f"({s.model.tuning}); {t.num_devices} {type(t.accelerator).__name__.replace('Accelerator', '')} "
              f"device(s) x {t.num_nodes} node(s), precision {s.hardware.precision}, "
              f"accumulation {t.accumulate_grad_batches}, {o.max_epoch} epochs, {o.optimizer} lr "
              f"{o.lr:g} {o.lr_schedule}")
        self.trainer.fit(self.module, datamodule=PhaseData(lambda: make_loader(train_set, s, train=True, seed=seed)))
        self.log_step = self.tracker.end_phase(self.trainer.global_step)
        self.method.after_training(ctx)
        self.counts.append(self.evaluate(phase))
        self.method.after_phase(ctx)
        self.memory.append(self.method.memory_report())
        with stops.deferred():  # a stop now waits until the phase is saved, and its results with it
            if self.writes:
                self.run_dir.save_checkpoint(phase, self.checkpoint_state(phase), self.identity)
                self.run_dir.prune_checkpoints(s.run.keep_checkpoints)
            results = self.write_results()
            self.tracker.log_phase(phase, phase_metrics(results, phase))
            print(self.summary_line(phase, len(train_set) - n_replay, n_replay, time.time() - start))

    def run(self) -> Path:
        """Run (or resume) every phase not done yet; returns the run directory (``self.result``: the summary)."""
        settings = self.settings
        L = self.data.scenario.num_phases
        note = untrained_backbone_note(settings)
        if note and self.is_main:
            warnings.warn(note, UntrainedBackboneWarning, stacklevel=2)
        state = self.run_dir.latest_checkpoint(self.identity, self.new_key_defaults)
        first = 0 if state is None else state["phase"] + 1
        self.method.setup(self.context(min(first, L - 1)))
        if state is not None:
            self.restore(state)
            print(f"resuming {self.run_dir.path} after phase {state['phase']} ({first}/{L} phases done)")
            done = self.results()
            for phase in range(first):
                self.tracker.log_phase(phase, phase_metrics(done, phase), replay=True)
        print(f"{settings.run.exp_name}: {settings.experiment.dataset}, {settings.experiment.method}, {L} phases of "
              f"{[len(self.data.scenario.phase_classes(t)) for t in range(L)]} classes; run directory "
              f"{self.run_dir.path}")
        chosen = self.resolved  # what the machine chose (config.json's provenance), not config values
        print(f"batches of {chosen['effective_batch']} in {chosen['world_size']} x {chosen['accumulation']} "
              f"micro-batches of <= {chosen['micro_batch']}; {chosen['num_workers']} loader workers "
              f"(num_workers={settings.hardware.num_workers}), {chosen['num_threads']} threads, "
              f"{chosen['accelerator']}, deterministic={chosen['deterministic']}, model_rng={chosen['model_rng']}")
        for phase in range(first, L):
            self.run_phase(phase)
            if 0 <= settings.run.stop_after_phase <= phase < L - 1:
                print(f"stop_after_phase={settings.run.stop_after_phase}: stopping; re-run the same command to resume")
                break
        results = self.write_results()
        if results["completed_phases"]:
            print("\n" + markdown_table(phase_table(results)) + "\n\n" + markdown_table(summary_table(results)))
        self.result = self.tracker.finish(self.run_dir.path, results)
        return self.run_dir.path


def run_experiment(cfg: Mapping, sacred_run=None) -> Path:
    """Run (or resume) the experiment of a resolved config, holding its run directory's lock; returns the run
    directory. ``sacred_run``: sacred's ``_run`` (its observers get the metrics, files, provenance and result)."""
    return run_and_summarize(cfg, sacred_run)[0]


def run_and_summarize(cfg: Mapping, sacred_run=None) -> tuple[Path, dict[str, Any]]:
    """:func:`run_experiment`, and the run's summary (sacred's result: run directory, phases done, metrics).

    Raises :class:`~emmcil.engine.rundir.RunInUseError` when another process runs this run directory."""
    lock = rundir.locked(run_path(run_settings(cfg))) if rank_zero_only.rank == 0 else contextlib.nullcontext()
    with lock, quiet_lightning():
        run = IncrementalRun(cfg, sacred_run)
        return run.run(), run.result
