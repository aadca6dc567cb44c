"""The Lightning module: ViLT backbone (with SSF) + growing classifier, trained one phase at a time."""
from __future__ import annotations

from typing import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from emmcil.model import ViLTOutput, apply_freeze_policy, build_backbone
from emmcil.model.ssf import is_tunable
from emmcil.model.heads import IncrementalClassifier


def cross_entropy_loss(module: "IncrementalModule", batch: dict, output: ViLTOutput, logits: torch.Tensor):
    """Cross-entropy over all classes seen so far (the classifier has exactly those rows)."""
    return F.cross_entropy(logits, batch["labels"])


def linear_warmup_decay(total_steps: int, warmup_steps: int):
    """LR factor of ``get_polynomial_decay_schedule_with_warmup`` (power 1, end 0), as ViLT / missing_aware_prompts:
    0 -> 1 linearly over ``warmup_steps``, then 1 -> 0 linearly at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


class IncrementalModule(pl.LightningModule):
    """Backbone + ``classifier``; ``tuning`` ("ssf", "frozen", "full") decides what trains.

    The training loss is ``method.training_loss`` when a method is attached (default: cross-entropy).
    ``predict_step`` returns per-sample ``preds``, ``labels``, ``indices``, ``positions`` and, when
    ``return_features`` is set, the pooled features f(x) (B, C) used for herding and class means; a
    ``predict_fn(backbone, batch) -> dict`` of per-sample tensors replaces preds/features (e.g. a masking pass).
    """

    def __init__(self, cfg: Mapping, method=None):
        super().__init__()
        self.cfg = dict(cfg)
        self.backbone = build_backbone(self.cfg)
        self.classifier = IncrementalClassifier(self.backbone.cfg.hidden_size)
        self.method = method
        # the method's own parameters (prompts, adapters, ...), built up front so that checkpoints always match
        net = method.build_net(self.backbone.cfg) if method is not None else None
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
        if self.method is not None:
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

    # -- forward
    def encode(self, batch: dict, return_attention: bool = False) -> ViLTOutput:
        """The backbone on a batch; a method may change how (prompts, adapters: ``Method.encode``)."""
        if self.method is not None:
            return self.method.encode(self, batch, return_attention)
        return self.backbone(batch["text_ids"], batch["text_masks"], batch["images"], batch["pixel_masks"],
                             patch_keep=batch.get("patch_keep"), return_attention=return_attention)

    def logits(self, output: ViLTOutput) -> torch.Tensor:
        """Logits (B, num_seen_classes) of an encoded batch; a method may change how (``Method.logits``)."""
        if self.method is not None:
            return self.method.logits(self, output)
        return self.classifier(output.pooled)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits (B, num_seen_classes)."""
        return self.logits(self.encode(batch))

    # -- Lightning hooks
    def training_step(self, batch: dict, batch_idx: int):
        output = self.encode(batch)
        logits = self.logits(output)
        loss_fn = self.method.training_loss if self.method is not None else cross_entropy_loss
        loss = loss_fn(self, batch, output, logits)
        bs = logits.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/acc", (logits.argmax(1) == batch["labels"]).float().mean(), prog_bar=True, batch_size=bs)
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
        """AdamW (betas 0.9/0.98, eps 1e-8), no weight decay on 1-D parameters (biases, norms, SSF scales and
        shifts); linear warmup over ``warmup`` (a fraction of the steps if < 1, else a step count), then linear
        decay to 0, stepped every optimiser step. Rebuilt by every phase's Trainer."""
        cfg = self.cfg
        decay, no_decay = [], []
        for _, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg["lr"],
                                      betas=tuple(cfg.get("betas", (0.9, 0.98))), eps=cfg.get("eps", 1e-8))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = cfg["warmup"]
        warmup_steps = int(warmup * total) if warmup < 1 else int(warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(total, warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
