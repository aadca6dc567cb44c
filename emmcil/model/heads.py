"""Classifier heads for class-incremental learning."""
from __future__ import annotations

import torch
from torch import nn


HEADS = ("linear", "mlp")


class IncrementalClassifier(nn.Module):
    """A head whose output rows grow by each phase's new classes: ``logits = g(f) @ W.T + b``.

    ``head="linear"``: g is the identity (ViLT's classifiers on the pooled feature; the default). ``head="mlp"``: g =
    Linear(dim, 2 dim) -> LayerNorm -> GELU, the trunk of the first author's ``missing_aware_prompts`` classifier
    (``vilt/modules/vilt_missing_aware_prompt_module.py``: ``food101_classifier`` = that trunk + Linear(2 dim,
    classes)), built once and shared by every phase, with its ``init_weights`` (``vilt/modules/objectives.py``:
    Linear N(0, .02) and bias 0, LayerNorm 1 and 0); only the last layer grows.

    Row c is the class at position c of the class order (see ``emmcil.data.scenario``), so growing only appends
    rows; old rows are copied unchanged. New rows follow ViLT's init: weight ~ N(0, .02), bias 0 (drawn from the
    global torch RNG, which the phase driver seeds per phase). Raises ValueError for another ``head``.
    """

    def __init__(self, dim: int, num_classes: int = 0, head: str = "linear"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head={head!r}: expected one of {HEADS}")
        self.head = head
        if head == "mlp":
            self.trunk = nn.Sequential(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU())
            for m in self.trunk:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            dim = 2 * dim
        self.dim = dim  # the width the growing rows read
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
        """(..., input dim) -> (..., num_classes)."""
        if self.head == "mlp":
            features = self.trunk(features)
        return nn.functional.linear(features, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"head={self.head}, dim={self.dim}, num_classes={self.num_classes}"
