"""The Lightning module: ViLT backbone (with SSF) + growing classifier, trained one phase at a time; batches become
the backbone's float images on its device (:meth:`IncrementalModule.on_after_batch_transfer`)."""
from __future__ import annotations

import contextlib
import copy
from typing import Mapping

import pytorch_lightning as pl
import torch

from emmcil.data import model_images
from emmcil.methods import Method
from emmcil.methods.recipes import build_optimizer, build_scheduler, schedule_interval
from emmcil.model import ViLT, ViLTOutput, apply_freeze_policy, build_backbone, merge_ssf
from emmcil.model.heads import IncrementalClassifier
from emmcil.model.ssf import has_ssf, is_tunable, merged_state_dict


class IncrementalModule(pl.LightningModule):
    """Backbone + ``classifier``; ``tuning`` ("ssf", "frozen", "full") decides what trains.

    Passes without gradients (evaluation, prediction, the masking and CAM passes) run inside
    :meth:`ssf_merged`, on a copy of the backbone with SSF folded into its weights: SSF costs nothing there.

    ``method`` (a :class:`~emmcil.methods.Method`; the base class is plain fine-tuning) decides how a batch is
    encoded, its logits and the training loss, and may add parameters of its own (``method_net``).
    ``predict_step`` returns per-sample ``preds``, ``labels``, ``indices``, ``positions`` and, when
    ``return_features`` is set, the pooled features f(x) (B, C) used for herding and class means; a
    ``predict_fn(backbone, batch) -> dict`` of per-sample tensors replaces preds/features (e.g. a masking pass).
    """

    def __init__(self, cfg: Mapping, method: Method):
        super().__init__()
        self.cfg = dict(cfg)
        self.backbone = build_backbone(self.cfg)
        self.classifier = IncrementalClassifier(self.backbone.cfg.hidden_size, head=self.cfg.get("head", "linear"))
        self.method = method
        # the method's own parameters (prompts, adapters, ...), built up front so that checkpoints always match
        net = method.build_net(self.backbone.cfg)
        if net is not None:
            self.method_net = net
        self.return_features = False
        self.predict_fn = None

    # -- structure
    def add_classes(self, n: int) -> int:
        """Grow the classifier by ``n`` classes and re-apply the freeze policy; returns the trainable count."""
        self.classifier.add_classes(n)
        return self.apply_freeze_policy()

    TUNABLE = ("pooler.", "classifier.", "method_net.")

    def apply_freeze_policy(self) -> int:
        """The tuning mode's policy (SSF / pooler / classifier / the method's own parameters train), then the
        method's refinement (e.g. freezing an earlier task's prompts); returns the trainable count."""
        apply_freeze_policy(self, self.cfg.get("tuning", "ssf"), self.TUNABLE)
        self.method.set_trainable(self)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _tuned(self, name: str) -> bool:
        return is_tunable(name, self.cfg.get("tuning", "ssf"), self.TUNABLE)

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
        output = self.encode(batch)
        logits = self.logits(output)
        loss = self.method.training_loss(self, batch, output, logits)
        bs = logits.shape[0]
        acc = (logits.argmax(1) == batch["labels"]).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)  # every log_every_n_steps steps
        self.log("train/acc", acc, prog_bar=True, batch_size=bs)
        # and the epoch's means, written at the end of every epoch: a phase with fewer steps than
        # log_every_n_steps (a small phase, a short run) still leaves its training in logs/phase_<t>/metrics.csv
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=bs)
        self.log("train/acc_epoch", acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        if self.predict_fn is not None:
            out = dict(self.predict_fn(self.backbone, batch))
        else:
            output = self.encode(batch)
            out = {"preds": self.logits(output).argmax(1)}
            if self.return_features:
                out["features"] = output.pooled.float()
        out.update(labels=batch["labels"], indices=batch["indices"], positions=batch["position"])
        return out

    def configure_optimizers(self):
        """The method's recipe (:mod:`emmcil.methods.recipes`; keys ``optimizer``, ``lr``, ``weight_decay``,
        ``weight_decay_1d``, ``betas``, ``eps``, ``momentum``, ``lr_schedule``, ``warmup``, ``schedule_interval``)
        over the trainable parameters; the schedule spans the phase's optimiser steps (or epochs). Rebuilt by every
        phase's Trainer, so every phase starts afresh (PILOT's ``reinit_optimizer``, RebQ's ``reset_optimizer``)."""
        cfg = self.cfg
        optimizer = build_optimizer(self.named_parameters(), cfg)
        interval = schedule_interval(cfg)
        total = self.trainer.estimated_stepping_batches if interval == "step" else self.trainer.max_epochs
        scheduler = build_scheduler(optimizer, cfg, int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
