"""What the exemplar-free baselines on a frozen ViLT share (L2P, DualPrompt, EASE: PILOT's pre-trained-model CIL).

How it is built, with its sources and defaults: docs/method.md#the-exemplar-free-base-l2p-dualprompt-ease.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import Method



def backbone_inputs(batch: dict) -> tuple[tuple, dict]:
    """Positional and keyword arguments of :meth:`emmcil.model.ViLT.forward` for a collated batch."""
    return ((batch["text_ids"], batch["text_masks"], batch["images"], batch["pixel_masks"]),
            {"patch_keep": batch.get("patch_keep")})


class ExemplarFreeMethod(Method):
    """Base of L2P, DualPrompt and EASE (not registered itself)."""

    # frozen backbone, no SSF, no dropout (PILOT: drop 0.0); a literal, read by emmcil.methods.catalogue
    named_config: ClassVar[dict[str, Any]] = {"tuning": "frozen", "ssf": False, "drop_rate": 0.0}
    train_mask: ClassVar[bool] = True  # old classes' logits at -inf in training

    # -- model
    def set_trainable(self, module) -> None:
        module.backbone.pooler.requires_grad_(False)

    @torch.no_grad()
    def query(self, module, batch: dict) -> torch.Tensor:
        """(B, C) the frozen backbone's text [CLS] state ``hidden[:, 0]`` without prompts (eval mode, no grad)."""
        backbone = module.backbone
        was_training = backbone.training
        backbone.train(False)
        try:
            args, kwargs = backbone_inputs(batch)
            return backbone(*args, **kwargs).hidden[:, 0].float()
        finally:
            backbone.train(was_training)

    def logits(self, module, output) -> torch.Tensor:
        """The classifier on the pooled feature, earlier phases' classes at -inf in training
        (:meth:`mask_old_classes`)."""
        return self.mask_old_classes(module, module.classifier(output.pooled))

    def pull_weight(self) -> float | None:
        """The pull constraint's weight (prompts chosen by keys: L2P's and DualPrompt's ``*_pull``), or None."""
        return None

    def training_loss(self, module, batch: dict, output, logits: torch.Tensor) -> torch.Tensor:
        """Cross-entropy; with a :meth:`pull_weight`, minus it x ``output.pull`` (L2P's ``reduce_sim`` term)."""
        loss = F.cross_entropy(logits, batch["labels"])
        weight = self.pull_weight()
        return loss if weight is None else loss - float(weight) * output.pull

    def mask_old_classes(self, module, logits: torch.Tensor) -> torch.Tensor:
        """In training (and with ``train_mask``), -inf on the logits of earlier phases' classes."""
        if not (module.training and self.train_mask):
            return logits
        known = self.known_classes(module)
        if known == 0:
            return logits
        mask = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        mask[:known] = True
        return logits.masked_fill(mask, float("-inf"))


def select_by_keys(query: torch.Tensor, keys: torch.Tensor, top_k: int, batchwise: bool) -> torch.Tensor:
    """Indices (B, top_k) of the keys most cosine-similar to each query (L2P / DualPrompt prompt selection).

    ``batchwise`` (PILOT ``batchwise_prompt``): every sample gets the ``top_k`` keys chosen most often over the
    batch (ties to the lower index), as the original L2P code does in training and at test time.
    """
    if not 1 <= top_k <= keys.shape[0]:
        raise ValueError(f"top_k={top_k} must lie in [1, {keys.shape[0]}] (the number of keys)")
    sim = l2_normalize(query) @ l2_normalize(keys).t()          # (B, pool)
    idx = sim.topk(top_k, dim=1).indices                         # (B, top_k)
    if batchwise:
        counts = torch.bincount(idx.flatten(), minlength=keys.shape[0])
        # stable: among equal counts the lower index wins (a small index bonus below one count)
        order = (counts.double() - torch.arange(len(counts), device=counts.device) / (2 * len(counts)))
        idx = order.topk(top_k).indices.sort().values.expand(query.shape[0], -1)
    return idx


def pull_constraint(query: torch.Tensor, keys: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """L2P's surrogate ``reduce_sim``: sum over the batch and the chosen keys of cos(query, key), divided by B.
    Maximised (subtracted from the loss with a coefficient); gradients reach the keys only (the query is frozen)."""
    return (l2_normalize(keys)[idx] * l2_normalize(query)[:, None]).sum() / query.shape[0]


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||, sqrt(eps)) over the last axis (as L2P's ``l2_normalize``)."""
    return x * torch.rsqrt((x.float() ** 2).sum(-1, keepdim=True).clamp_min(eps)).to(x.dtype)
