"""Conventional replay (iCaRL-style memory, CE training): full exemplars ranked by herding, under the byte budget.

After phase t, for each new class c: the pooled features f(x) of c's training samples (current model, eval mode,
no augmentation) are ranked by herding; exemplars are stored in that order while the class's byte budget holds
(``memory_per_class`` full-exemplar equivalents at the dataset's mean full-exemplar cost). The next phases train
on their new data plus every stored exemplar.

Subclasses change what is stored by overriding :meth:`Replay.rank` (the order) and :meth:`Replay.make_exemplars`
(e.g. masked exemplars), and what is replayed by overriding :meth:`Replay.replay_dataset` (e.g. augmentation).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch

from emmcil.incremental.augment import AugmentedReplay, replay_length
from emmcil.incremental.exemplar import Exemplar
from emmcil.incremental.herding import herding_order
from emmcil.incremental.memory import MemoryBuffer

from . import register
from .base import Method, PhaseContext


@register
class Replay(Method):
    """Herding-selected full exemplars in a byte-budgeted, class-balanced memory."""

    name = "replay"
    uses_memory = True
    config = {
        "replay_ratio": 0.0,  # 0: every exemplar once per epoch, shuffled with the new data; r in (0, 1): exemplars
                              # repeated so that they make up about r of the phase's training items
    }

    def __init__(self, cfg):
        super().__init__(cfg)
        self.memory: MemoryBuffer | None = None

    def setup(self, ctx: PhaseContext) -> None:
        cfg = self.cfg
        self.memory = MemoryBuffer(ctx.full_exemplar_bytes(), memory_per_class=cfg["memory_per_class"],
                                   mode=cfg["memory_budget_mode"], memory_total=cfg["memory_total"],
                                   fill=cfg["memory_fill"])

    def augmentation(self) -> tuple[float, float]:
        """(p_text_swap, p_patch_merge) of :class:`~emmcil.incremental.augment.AugmentedReplay`; none here."""
        return 0.0, 0.0

    def replay_dataset(self, ctx: PhaseContext):
        exemplars = self.memory.exemplars()
        if not exemplars:
            return None
        n_new = len(ctx.scenario.train_dataset(ctx.phase))
        length = replay_length(len(exemplars), n_new, float(self.cfg["replay_ratio"]))
        return AugmentedReplay(exemplars, ctx.max_text_len, *self.augmentation(), length=length)

    # -- selection
    def rank(self, features: torch.Tensor) -> Iterator[int]:
        """Order in which a class's samples enter the memory. features (N, C) -> lazy iterator of row indices."""
        return herding_order(features)

    def make_exemplars(self, ctx: PhaseContext, dataset, positions: Iterable[int]) -> Iterator[Exemplar]:
        """Exemplars of ``dataset`` items at ``positions`` (ranked), built lazily: full image and text."""
        for i in positions:
            yield Exemplar.from_item(dataset[int(i)], ctx.patch_size)

    def make_room(self, ctx: PhaseContext) -> int:
        """The byte budget of one class this phase; with a fixed total memory, old classes give up space first."""
        budget = self.memory.class_budget(len(ctx.seen_classes))
        if self.memory.mode == "total":
            self.memory.reduce(budget)
        return budget

    def after_phase(self, ctx: PhaseContext) -> None:
        budget = self.make_room(ctx)
        data = ctx.eval_scenario.train_dataset(ctx.phase)
        out = ctx.predict(data, features=True)
        for c in ctx.new_classes:
            members = (out["labels"] == c).nonzero()[:, 0]
            if len(members) == 0:
                continue
            ranked = (int(members[k]) for k in self.rank(out["features"][members]))
            self.memory.fill(c, self.make_exemplars(ctx, data, ranked), budget)

    # -- bookkeeping
    def memory_report(self) -> dict | None:
        return self.memory.report() if self.memory is not None else None

    def state_dict(self) -> dict:
        return {"memory": self.memory.state_dict()} if self.memory is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "memory" in state:
            self.memory.load_state_dict(state["memory"])
