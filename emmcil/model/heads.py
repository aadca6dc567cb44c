"""Classifier heads for class-incremental learning."""
from __future__ import annotations

import torch
from torch import nn


class IncrementalClassifier(nn.Module):
    """A linear head ``logits = f @ W.T + b`` whose rows grow by each phase's new classes.

    Row c is the class at position c of the class order (see ``emmcil.data.scenario``), so growing only appends
    rows; old rows are copied unchanged. New rows follow ViLT's init: weight ~ N(0, .02), bias 0 (drawn from the
    global torch RNG, which the phase driver seeds per phase).
    """

    def __init__(self, dim: int, num_classes: int = 0):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(0, dim))
        self.bias = nn.Parameter(torch.empty(0))
        if num_classes:
            self.add_classes(num_classes)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def add_classes(self, n: int) -> None:
        """Append ``n`` rows. The parameters are new objects: build the optimiser after growing."""
        if n < 0:
            raise ValueError(f"cannot add {n} classes")
        if n == 0:
            return
        w, b = self.weight, self.bias
        new_w = torch.empty(n, self.dim, device=w.device, dtype=w.dtype).normal_(0.0, 0.02)
        self.weight = nn.Parameter(torch.cat([w.detach(), new_w]), requires_grad=w.requires_grad)
        self.bias = nn.Parameter(torch.cat([b.detach(), b.new_zeros(n)]), requires_grad=b.requires_grad)

    def grow_to(self, num_classes: int) -> None:
        """Grow to ``num_classes`` rows (no-op if already there); e.g. before loading a later phase's state."""
        if num_classes < self.num_classes:
            raise ValueError(f"cannot shrink the classifier from {self.num_classes} to {num_classes} classes")
        self.add_classes(num_classes - self.num_classes)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint of a later phase has more rows: grow first (new rows are overwritten by the load)
        rows = state_dict.get(prefix + "weight")
        if rows is not None and rows.shape[0] > self.num_classes:
            self.grow_to(rows.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, num_classes)."""
        return nn.functional.linear(features, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}"
