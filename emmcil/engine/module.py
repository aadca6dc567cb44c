"""The Lightning module: ViLT backbone (with SSF) + growing classifier, trained one phase at a time; batches become
the backbone's float images on its device (:meth:`IncrementalModule.on_after_batch_transfer`)."""
from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Callable, Mapping

import pytorch_lightning as pl
import torch

from emmcil.data import model_images
from emmcil.methods import Method
from emmcil.methods.recipes import build_optimizer, build_scheduler, schedule_interval
from emmcil.model import ViLT, ViLTConfig, ViLTOutput, apply_freeze_policy, build_backbone, merge_ssf
from emmcil.model.heads import IncrementalClassifier
from emmcil.model.keyed import sample_keys
from emmcil.model.ssf import has_ssf, is_tunable, merged_state_dict

if TYPE_CHECKING:
    from emmcil.settings import Settings

# A prediction pass's per-batch function: (backbone, batch) -> {name: per-sample tensor (B, ...)}.
PredictStep = Callable[[ViLT, dict], Mapping[str, torch.Tensor]]


class NonFiniteError(RuntimeError):
    """The training loss or a trainable weight stopped being finite: the phase stops, nothing of it is saved."""


class IncrementalModule(pl.LightningModule):
    """Backbone + ``classifier``; ``tuning`` ("ssf", "frozen", "full") decides what trains. ``settings``: the run's
    typed settings (the backbone is :meth:`~emmcil.model.ViLTConfig.from_settings` of them).

    Passes without gradients (evaluation, prediction, the masking and CAM passes) run inside
    :meth:`ssf_merged`, on a copy of the backbone with SSF folded into its weights: SSF costs nothing there.

    ``method`` (a :class:`~emmcil.methods.Method`; the base class is plain fine-tuning) decides how a batch is
    encoded, its logits and the training loss, and may add parameters of its own (``method_net``).
    A prediction pass is a :class:`PredictPass` around the module, handed to ``Trainer.predict``: what a batch
    returns (:meth:`predict_batch`) is the pass's argument, never state of the module.

    Training batches from :class:`~emmcil.engine.loaders.PhaseBatches` carry ``sample_seed`` (the keys of the
    model's dropout: :mod:`emmcil.model.keyed`, with ``model_rng="sample"``) and ``loss_weight`` (the loss is scaled
    by their sum, so that the micro-batches of any layout add up to the global batch's mean). A non-finite loss or
    trainable weight is recorded on the device at the step it happens and raised as :class:`NonFiniteError` (phase,
    step, likely cause) at the next check: every ``log_every_n_steps`` batches and at the end of every epoch.
    """

    def __init__(self, method: Method, settings: "Settings"):
        super().__init__()
        self.settings = settings  # the run's: model (sizes, head, tuning, model_rng), run, hardware, optimisation
        m = settings.model
        self.backbone = build_backbone(ViLTConfig.from_settings(settings), m.load_path or "", m.trust_checkpoint,
                                       m.timm_init or "")
        self.classifier = IncrementalClassifier(self.backbone.cfg.hidden_size, head=settings.model.head)
        self.method = method
        # the method's own parameters (prompts, adapters, ...), built up front so that checkpoints always match
        net = method.build_net(self.backbone.cfg)
        if net is not None:
            self.method_net = net
        self._batches = self._first_bad = None  # non-finite checks (reset_checks)

    # -- structure
    def add_classes(self, n: int) -> int:
        """Grow the classifier by ``n`` classes and re-apply the freeze policy; returns the trainable count."""
        self.classifier.add_classes(n)
        return self.apply_freeze_policy()

    TUNABLE = ("pooler.", "classifier.", "method_net.")

    def apply_freeze_policy(self) -> int:
        """The tuning mode's policy (SSF / pooler / classifier / the method's own parameters train), then the
        method's refinement (e.g. freezing an earlier task's prompts); returns the trainable count."""
        apply_freeze_policy(self, self.settings.model.tuning, self.TUNABLE)
        self.method.set_trainable(self)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _tuned(self, name: str) -> bool:
        return is_tunable(name, self.settings.model.tuning, self.TUNABLE)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter the tuning mode may train (SSF, pooler, classifier, method_net for tuning="ssf"),
        trainable right now or frozen by the method, detached on CPU: what a checkpoint must hold."""
        return {n: p.detach().cpu().clone() for n, p in self.named_parameters() if self._tuned(n)}

    @torch.no_grad()
    def frozen_checksum(self) -> float:
        """A fingerprint of the frozen weights, to check that a resumed run rebuilt the same backbone."""
        return float(sum(p.double().sum() + p.double().abs().sum() for n, p in self.named_parameters()
                         if not self._tuned(n)))

    # -- SSF folded for inference
    def merged_backbone(self) -> ViLT:
        """The backbone with every SSF folded into the layer before it (:func:`~emmcil.model.merge_ssf`): the same
        function at a plain ViLT's cost, for passes without gradients. A copy, built once and refreshed from the
        current weights at every call; it is not a submodule, so it is never trained, checkpointed or counted."""
        merged = self.__dict__.get("_merged_backbone")
        if merged is None:
            merged = merge_ssf(copy.deepcopy(self.backbone)).requires_grad_(False)
            self.__dict__["_merged_backbone"] = merged  # bypasses nn.Module.__setattr__: not registered
        else:
            merged.load_state_dict(merged_state_dict(self.backbone))
        return merged

    @contextlib.contextmanager
    def ssf_merged(self):
        """Within the block ``self.backbone`` is :meth:`merged_backbone` (when the backbone has SSF), so that every
        caller (methods' ``encode``, predict steps) runs the merged weights; the trained backbone is put back on
        exit, exceptions included. Only for passes without gradients."""
        trained = self.backbone
        if not has_ssf(trained):
            yield
            return
        self.backbone = self.merged_backbone()
        try:
            yield
        finally:
            self.backbone = trained

    # -- forward
    def encode(self, batch: dict, return_attention: bool = False) -> ViLTOutput:
        """The backbone on a batch, as the method encodes it (prompts, adapters: ``Method.encode``)."""
        return self.method.encode(self, batch, return_attention)

    def logits(self, output: ViLTOutput) -> torch.Tensor:
        """Logits (B, num_seen_classes) of an encoded batch, as the method computes them (``Method.logits``)."""
        return self.method.logits(self, output)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits (B, num_seen_classes)."""
        return self.logits(self.encode(batch))

    # -- Lightning hooks
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Batches arrive as uint8 pixels (or JPEG files with ``decode_on="device"``), pinned and copied without
        blocking; here, on the device, they become the backbone's normalised float images
        (:func:`emmcil.data.model_images`), for training, evaluation and every prediction pass alike."""
        return model_images(batch)
    def on_train_epoch_start(self) -> None:
        self.method.on_train_epoch_start(self, self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int):
        keyed = self.settings.model.model_rng == "sample"
        with sample_keys(self, batch.get("sample_seed") if keyed else None):
            output = self.encode(batch)
            logits = self.logits(output)
            loss = self.method.training_loss(self, batch, output, logits)
        self.record_nonfinite(loss.detach(), "loss")
        weights = batch.get("loss_weight")
        real = batch.get("real_samples", logits.shape[0])  # a host int (driver.PhaseData): no device sync
        if real:
            acc = (logits.argmax(1) == batch["labels"]).float().mean()
            self.log("train/loss", loss, prog_bar=True, batch_size=real)  # every log_every_n_steps steps
            self.log("train/acc", acc, prog_bar=True, batch_size=real)
            # and the epoch's means, written at the end of every epoch: a phase with fewer steps than
            # log_every_n_steps (a small phase, a short run) still leaves its training in logs/phase_<t>/metrics.csv
            self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=real)
            self.log("train/acc_epoch", acc, on_step=False, on_epoch=True, batch_size=real)
        return loss if weights is None else loss * weights.sum().to(loss.dtype)

    # -- non-finite loss and weights
    def reset_checks(self) -> None:
        self._batches = torch.zeros((), dtype=torch.long, device=self.device)
        self._first_bad = torch.full((2,), -1, dtype=torch.long, device=self.device)  # batch of the loss, weights

    def on_train_start(self) -> None:
        self.reset_checks()

    def record_nonfinite(self, value: torch.Tensor, what: str) -> None:
        """Keep (on the device, no sync) the first training batch whose ``what`` ("loss" or "weights") is not
        finite."""
        if self._batches is None:
            self.reset_checks()
        if what == "loss":
            self._batches += 1
        k = 0 if what == "loss" else 1
        bad = ~torch.isfinite(value).all()
        self._first_bad[k] = torch.where(bad & (self._first_bad[k] < 0), self._batches, self._first_bad[k])

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        params = [p for p in self.parameters() if p.requires_grad]
        if params:  # after the optimiser step: a weight is finite iff its largest |value| is
            self.record_nonfinite(torch.stack(torch._foreach_norm(params, ord=float("inf"))), "weights")
        if (batch_idx + 1) % max(1, self.settings.run.log_every_n_steps) == 0:
            self.check_finite()

    def on_train_epoch_end(self) -> None:
        self.check_finite()

    def on_train_end(self) -> None:
        self.check_finite()

    def check_finite(self) -> None:
        """NonFiniteError naming the phase, the step, the epoch and the likely causes, when a batch so far had a
        non-finite loss or left a non-finite weight; every rank raises together (the flags are reduced)."""
        first = self._first_bad if self._first_bad is not None else torch.full((2,), -1)
        if self._trainer is not None and self.trainer.world_size > 1:
            first = self.trainer.strategy.reduce(first.clone().float(), reduce_op="max").long()
        loss_at, weights_at = (int(v) for v in first.tolist())
        if loss_at < 0 and weights_at < 0:
            return
        what, batch = ("loss", loss_at) if loss_at >= 0 and (weights_at < 0 or loss_at <= weights_at) \
            else ("trainable weights", weights_at)
        accumulation = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        per_epoch = self.trainer.num_training_batches if self._trainer is not None else 0
        epoch = f", epoch {(batch - 1) // per_epoch}" if isinstance(per_epoch, int) and per_epoch > 0 else ""
        raise NonFiniteError(
            f"phase {self.method.current_phase(self)}: the training {what} became NaN or infinite at optimiser step "
            f"{(batch - 1) // accumulation} (batch {batch - 1} of the phase{epoch}); the phase stops, and nothing of "
            f"it is saved. Likely cause: {nonfinite_cause(self.settings)}")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """The plain pass (``Trainer.predict(module)``): :meth:`predict_batch` without a step or features."""
        return self.predict_batch(batch)

    def predict_batch(self, batch: dict, step: PredictStep | None = None, features: bool = False) -> dict:
        """Per-sample results of one batch of B samples: ``labels``, ``indices`` (dataset rows) and ``positions``
        (the pass's order), and either ``step(backbone, batch)``'s dict of per-sample tensors (B, ...) (the backbone
        as it is now: SSF-merged inside :meth:`ssf_merged`), or ``preds`` (B,) (+ the pooled ``features`` f(x)
        (B, C), float32, with ``features=True``)."""
        if step is not None:
            out = dict(step(self.backbone, batch))
        else:
            output = self.encode(batch)
            out = {"preds": self.logits(output).argmax(1)}
            if features:
                out["features"] = output.pooled.float()
        out.update(labels=batch["labels"], indices=batch["indices"], positions=batch["position"])
        return out

    def configure_optimizers(self):
        """The method's recipe (:mod:`emmcil.methods.recipes`; keys ``optimizer``, ``lr``, ``weight_decay``,
        ``weight_decay_1d``, ``betas``, ``eps``, ``momentum``, ``lr_schedule``, ``warmup``, ``schedule_interval``)
        over the trainable parameters; the schedule spans the phase's optimiser steps (or epochs). Rebuilt by every
        phase's Trainer, so every phase starts afresh (PILOT's ``reinit_optimizer``, RebQ's ``reset_optimizer``)."""
        o = self.settings.optimisation
        optimizer = build_optimizer(self.named_parameters(), o)
        interval = schedule_interval(o)
        total = self.trainer.estimated_stepping_batches if interval == "step" else self.trainer.max_epochs
        scheduler = build_scheduler(optimizer, o, int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


class PredictPass(pl.LightningModule):
    """One pass of ``module`` over a dataset without gradients, as ``Trainer.predict`` runs it
    (``trainer.predict(PredictPass(module, step=...), loader)``): what each batch returns is given here, as
    arguments, and is :meth:`IncrementalModule.predict_batch`'s (``step`` replaces ``preds``/``features``; giving
    both is a ValueError). The pass holds nothing else: its parameters are ``module``'s, batches become images by
    ``module``'s :meth:`~IncrementalModule.on_after_batch_transfer`. Lightning wraps a module in DDP only to fit, so
    ``module`` runs here as it runs in a plain ``trainer.predict(module)``."""

    def __init__(self, module: IncrementalModule, step: PredictStep | None = None, features: bool = False):
        super().__init__()
        if step is not None and features:
            raise ValueError("PredictPass: a step returns what it computes; features=True is for the plain pass")
        self.module = module
        self.step, self.features = step, features

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return self.module.on_after_batch_transfer(batch, dataloader_idx)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self.module.predict_batch(batch, self.step, self.features)


def nonfinite_cause(settings: "Settings") -> str:
    """The likely reasons for a non-finite loss or weight under the run's ``settings``, most likely first."""
    precision, optimizer = settings.hardware.precision, settings.optimisation.optimizer
    causes = []
    if precision in ("16-true", "bf16-true"):
        causes.append(f"precision={precision} keeps the weights and {optimizer}'s state in half precision (float16's "
                      f"range ends at 65504 and an Adam eps of 1e-8 is 0 there): use 16-mixed or bf16-mixed")
    elif precision == "16-mixed":
        causes.append("float16 activations overflowed (precision=16-mixed): try bf16-mixed or 32-true")
    causes.append(f"a learning rate too high for this model and batch (lr={settings.optimisation.lr}): lower it, or "
                  f"set gradient_clip_val")
    causes.append("a NaN or infinite value in the input data")
    return "; or ".join(causes) + "."
