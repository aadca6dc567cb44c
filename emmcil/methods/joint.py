"""Joint training: each phase trains on all the data of every class seen so far (the upper bound)."""
from __future__ import annotations

from torch.utils.data import ConcatDataset

from . import register
from .base import Method


@register
class Joint(Method):
    """Replays the complete training data of all earlier phases (unbounded memory)."""

    name = "joint"

    def replay_dataset(self, ctx):
        if ctx.phase == 0:
            return None
        return ConcatDataset([ctx.scenario.train_dataset(j) for j in range(ctx.phase)])
