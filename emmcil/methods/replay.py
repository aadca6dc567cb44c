"""Conventional replay (iCaRL-style memory, CE training), the paper's "SSF" row: full exemplars ranked by herding.

How it is built, with its sources and defaults: docs/method.md#replay-and-the-memory-loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from emmcil.memory import snapshot
from emmcil.memory.augment import AugmentedReplay, replay_length
from emmcil.memory.buffer import MemoryBuffer
from emmcil.memory.exemplar import Exemplar, StoredExemplar
from emmcil.memory.herding import herding_order
from emmcil.memory.selection import cosine_to_mean
from emmcil.settings import MethodSettings, check_replay_ratio, setting

from . import register
from .base import Method, PhaseContext


@dataclass(frozen=True)
class ReplaySettings(MethodSettings):
    replay_ratio: float = setting(0.0, "0: every exemplar once per epoch, shuffled with the new data; r in (0, 1): "
                                  "exemplars repeated so that they make up about r of the phase's training items")

    def check(self, settings) -> list[str]:
        # the keys read only after a phase has trained (replay, augmentation): a bad value fails now, not hours later
        try:
            check_replay_ratio(float(self.replay_ratio))
        except ValueError as err:
            return [str(err)]
        return []


@register
class Replay(Method):
    """Herding-selected full exemplars in a class-balanced memory."""

    name = "replay"
    uses_memory = True
    settings = ReplaySettings

    def __init__(self, settings):
        super().__init__(settings)
        self.memory: MemoryBuffer | None = None

    def setup(self, ctx: PhaseContext) -> None:
        m = ctx.settings.memory
        unit = m.memory_unit
        self.memory = MemoryBuffer(memory_per_class=m.memory_per_class, mode=m.memory_budget_mode,
                                   memory_total=m.memory_total, fill=m.memory_fill, unit=unit,
                                   full_exemplar_bytes=ctx.full_exemplar_bytes() if unit == "bytes" else None)

    def augmentation(self) -> tuple[float, float]:
        """(p_text_swap, p_patch_merge) of :class:`~emmcil.memory.augment.AugmentedReplay`; none here."""
        return 0.0, 0.0

    def replay_options(self) -> dict:
        """``mode`` (where augmented exemplars go) and ``masked_replay`` (how a masked image is fed) of
        :class:`~emmcil.memory.augment.AugmentedReplay`; its defaults here."""
        return {}

    def replay_dataset(self, ctx: PhaseContext):
        exemplars = self.memory.exemplars()
        if not exemplars:
            return None
        n_new = len(ctx.scenario.train_dataset(ctx.phase))
        length = replay_length(len(exemplars), n_new, float(self.own.replay_ratio))
        return AugmentedReplay(exemplars, ctx.max_text_len, *self.augmentation(), length=length,
                               **self.replay_options())

    # -- the memory loop and its hooks
    def candidates(self, ctx: PhaseContext, data) -> dict:
        """One pass over ``data`` (the phase's new-class training samples, eval transform): per-sample ``labels``
        and whatever :meth:`rank` and :meth:`make_exemplars` need; here the pooled features f(x) (N, C)."""
        return ctx.predict(data, features=True)

    def rank(self, ctx: PhaseContext, out: dict, members: torch.Tensor) -> Iterable[int]:
        """Order in which one class's samples enter the memory: positions into ``members`` (its rows of ``out``),
        lazily. Herding (PyCIL's ``_construct_exemplar``) on their features."""
        return herding_order(out["features"][members])

    def make_exemplars(self, ctx: PhaseContext, data, out: dict, positions: Iterable[int]) -> Iterator:
        """Exemplars of ``data`` items at ``positions`` (ranked), built lazily: full image and text."""
        for i in positions:
            yield Exemplar.from_item(data[int(i)], ctx.patch_size)

    def after_fill(self, ctx: PhaseContext, data, out: dict) -> None:
        """After the new classes' lists are filled (e.g. a figure of the stored exemplars)."""

    def make_room(self, ctx: PhaseContext) -> float:
        """The budget of one class this phase; with a fixed total memory, old classes give up space first (each
        keeps the longest prefix of its ranking that fits)."""
        budget = self.memory.class_budget(len(ctx.seen_classes))
        if self.memory.mode == "total":
            self.memory.reduce(budget)
        return budget

    def after_phase(self, ctx: PhaseContext) -> None:
        budget = self.make_room(ctx)
        data = ctx.eval_scenario.train_dataset(ctx.phase)
        out = self.candidates(ctx, data)
        ranked_at: dict[int, dict[int, int]] = {}  # class -> {position in data: 1-based rank}, as far as read
        for c in ctx.new_classes:
            members = (out["labels"] == c).nonzero()[:, 0]
            if len(members) == 0:
                continue
            ranked_at[c] = {}
            self.memory.fill(c, self.make_exemplars(ctx, data, out, self._ranked(ctx, out, members, ranked_at[c])),
                             budget)
        self.after_fill(ctx, data, out)
        if ctx.is_main and ctx.settings.memory.memory_browser:
            self.save_memory_view(ctx, data, out, ranked_at)

    def _ranked(self, ctx: PhaseContext, out: dict, members: torch.Tensor, ranks: dict[int, int]) -> Iterator[int]:
        """Positions in ``data`` of one class's samples in rank order (lazily), noting each one's rank."""
        for k in self.rank(ctx, out, members):
            ranks[int(members[k])] = len(ranks) + 1
            yield int(members[k])

    # -- what the memory browser shows (emmcil.memory.snapshot; python -m emmcil.report.memory)
    def similarity(self, ctx: PhaseContext, out: dict, members: torch.Tensor) -> torch.Tensor:
        """(n,) cosine similarity of each of one class's samples to the class mean its ranking aims at: herding's,
        the mean of the L2-normalised features ``out["features"]`` (N, C)."""
        f = F.normalize(out["features"][members].double(), dim=1)
        return cosine_to_mean(f, f.mean(0))

    def view_maps(self, out: dict, position: int, rows: int, cols: int) -> tuple[torch.Tensor | None,
                                                                                  torch.Tensor | None]:
        """(map (rows, cols) in [0, 1] on the sample's patch grid, or None; kept text tokens (T,) bool, or None for
        the whole text) of the sample at ``position``: none for full exemplars."""
        return None, None

    def view_notes(self) -> dict[str, str | None]:
        """What ``ranking``, ``similarity`` and ``attention`` mean here, in words the browser shows."""
        return {"ranking": "herding (iCaRL) on the features f(x) of the class's samples",
                "similarity": "cosine similarity of f(x) to the mean of the class's L2-normalised features "
                              "(herding's target)",
                "attention": None}

    def save_memory_view(self, ctx: PhaseContext, data, out: dict, ranked_at: dict[int, dict[int, int]]) -> None:
        """``memory/phase_<t>/``: every exemplar this phase stored, with its rank, similarity, caption and map."""
        position_of = {int(row): k for k, row in enumerate(out["indices"].tolist())}  # dataset row -> position
        tokenizer, p = ctx.tokenizer, ctx.patch_size
        new = []
        for c in ctx.new_classes:
            stored = self.memory.classes.get(c, [])
            if not stored:
                continue
            members = (out["labels"] == c).nonzero()[:, 0]
            sims = dict(zip(members.tolist(), self.similarity(ctx, out, members).tolist()))
            for ex in stored:
                pos = position_of[int(ex.index)]
                item = data[pos]
                rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
                attention, text_keep = self.view_maps(out, pos, rows, cols)
                valid = item["text_masks"].bool()
                kept = text_keep.bool()[valid] if text_keep is not None else torch.ones(int(valid.sum()), dtype=bool)
                ids = item["text_ids"][valid].tolist()
                record = snapshot.exemplar_record(
                    ex, self.memory, tokens=tokenizer.convert_ids_to_tokens(ids) if tokenizer else list(map(str, ids)),
                    token_kept=kept.tolist(), rank=ranked_at[c][pos], candidates=len(members),
                    similarity=sims[pos], attention=attention)
                new.append((ex, record, item["image"] if attention is not None else None))
        snapshot.write_phase(ctx.run_dir, ctx.phase, self.memory, method=self.name, notes=self.view_notes(),
                             new_classes=ctx.new_classes, new=new)

    # -- bookkeeping
    def memory_report(self) -> dict | None:
        return self.memory.report() if self.memory is not None else None

    def state_dict(self) -> dict:
        return {"memory": self.memory.state_dict()} if self.memory is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "memory" in state:
            self.memory.load_state_dict(state["memory"])


class ExemplarView(torch.utils.data.Dataset):
    """``dataset``'s items as a method stores and replays them: item i is :meth:`exemplar` (i)'s replay item, so that
    the model sees the stored samples (e.g. their features for herding)."""

    def __init__(self, dataset, max_text_len: int):
        self.dataset, self.max_text_len = dataset, max_text_len

    def __len__(self) -> int:
        return len(self.dataset)

    def exemplar(self, i: int) -> StoredExemplar:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        return self.exemplar(i).to_item(self.max_text_len)


class CompressedReplay(Replay):
    """Replay of a compressed copy of each sample (MRDC's JPEG, CIM's downsampled background), ranked by herding on
    the features of the compressed samples, as both reference codes herd on what they will replay. A subclass gives
    :meth:`compressed_view`."""

    def compressed_view(self, ctx: PhaseContext, data) -> ExemplarView:
        """``data`` (the phase's new-class training samples, eval transform) as this method stores them."""
        raise NotImplementedError

    def candidates(self, ctx: PhaseContext, data) -> dict:
        """The features of the compressed samples, and the view that makes them (its exemplars are stored)."""
        view = self.compressed_view(ctx, data)
        return {**ctx.predict(view, features=True), "view": view}

    def make_exemplars(self, ctx: PhaseContext, data, out: dict, positions: Iterable[int]) -> Iterator:
        for i in positions:
            yield out["view"].exemplar(int(i))
