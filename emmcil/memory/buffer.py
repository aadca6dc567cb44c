"""A class-balanced memory buffer of exemplars (:mod:`emmcil.memory.exemplar`) under a budget.

The unit of the budget (``memory_unit``: ``tokens``, ``byte_share`` or ``bytes``; a full exemplar costs 1.0 in the
first two), the budget (``memory_per_class``, or ``memory_total`` shared by the seen classes) and how a class's
ranked list fills it (``memory_fill``: ``skip`` or ``stop``; trimming keeps the longest prefix that fits, as PyCIL's
and CIM-CIL's ``_reduce_exemplar``): docs/method.md#the-method-and-what-we-chose-where-the-paper-is-silent. A class
never exceeds its budget and its list stays in rank order.
"""
from __future__ import annotations

import io
from typing import Iterable

import numpy as np
from PIL import Image

from emmcil.data.transforms import pixelbert_resize

from emmcil.settings.checks import BUDGET_MODES, FILL_POLICIES, RENAMED_UNITS, check_memory  # noqa: F401

from .exemplar import UNITS, exemplar_from_state, full_exemplar_nbytes



def mean_full_exemplar_nbytes(dataset, tokenizer, image_size: int, patch_size: int, max_text_len: int) -> dict:
    """Mean bytes of a full exemplar over an ``ArrowDataset`` (its first caption, as the dataset uses).

    Image sizes come from the encoded images' headers (no pixel decoding), resized as ``pixelbert_transform``
    would; token counts from the tokenizer with truncation at ``max_text_len``. Returns a JSON-able dict with
    ``mean_bytes``, ``mean_patches``, ``mean_tokens`` and ``num_samples``.
    """
    resize = pixelbert_resize(image_size, patch_size)
    patches = np.empty(len(dataset), dtype=np.int64)
    for i in range(len(dataset)):
        with Image.open(io.BytesIO(dataset.image_bytes(i))) as im:
            w, h = resize.output_size(*im.size)
        patches[i] = (h // patch_size) * (w // patch_size)
    captions = [dataset.caption(i) for i in range(len(dataset))]
    tokens = np.array([len(ids) for ids in tokenizer(captions, truncation=True, max_length=max_text_len)["input_ids"]],
                      dtype=np.int64)
    nbytes = [full_exemplar_nbytes(1, int(k), int(m), patch_size) for k, m in zip(patches, tokens)]
    return {"mean_bytes": float(np.mean(nbytes)), "mean_patches": float(patches.mean()),
            "mean_tokens": float(tokens.mean()), "num_samples": int(len(dataset)), "image_size": image_size,
            "patch_size": patch_size, "max_text_len": max_text_len}


class MemoryBuffer:
    """Per-class ranked exemplar lists under a budget in ``unit`` (see the module docstring).

    memory_per_class / memory_total: budgets in full exemplars (``mode`` "per_class" / "total");
    unit: one of :data:`~emmcil.memory.exemplar.UNITS` ("tokens", "byte_share", "bytes");
    full_exemplar_bytes: the training set's mean full-exemplar bytes, the size of one full exemplar when
    ``unit="bytes"`` (required then; reported otherwise when given). Raises ValueError for an unknown unit (naming
    the new name of a renamed one), mode or fill policy, a negative memory_per_class, or a "total" mode without a
    positive memory_total.
    """

    def __init__(self, memory_per_class: float = 5, mode: str = "per_class", memory_total: float = 0,
                 fill: str = "skip", unit: str = "tokens", full_exemplar_bytes: float | None = None):
        check_memory(memory_per_class, mode, memory_total, fill, unit)
        if unit == "bytes" and not full_exemplar_bytes:
            raise ValueError("memory_unit='bytes' needs the mean full-exemplar bytes of the training set")
        self.unit, self.fill_policy = unit, fill
        self.memory_per_class, self.mode, self.memory_total = memory_per_class, mode, memory_total
        self.full_exemplar_bytes = None if full_exemplar_bytes is None else float(full_exemplar_bytes)
        self.classes: dict[int, list] = {}

    # -- budget
    def size(self, exemplar) -> float:
        """What ``exemplar`` takes of a budget: its cost in the buffer's unit (bytes for "bytes")."""
        return exemplar.cost(self.unit)

    def class_budget(self, num_seen_classes: int) -> float:
        """What one class may hold when ``num_seen_classes`` classes share the memory, in the buffer's unit."""
        units = self.memory_per_class if self.mode == "per_class" else self.memory_total / max(1, num_seen_classes)
        return float(int(units * self.full_exemplar_bytes)) if self.unit == "bytes" else float(units)

    def _take(self, ranked: Iterable, budget: float, policy: str) -> list:
        kept, used = [], 0.0
        for ex in ranked:
            size = self.size(ex)
            if used + size > budget:
                if policy == "stop":
                    break
                continue
            kept.append(ex)
            used += size
            if used >= budget:  # full: nothing more can fit (every exemplar costs something)
                break
        return kept

    def fill(self, label: int, ranked: Iterable, budget: float) -> list:
        """Replace class ``label``'s list by exemplars of ``ranked``, in rank order, within ``budget``.

        ``fill_policy`` "skip" (default): an exemplar that does not fit in what is left is passed over and the next
        ones are tried, so a costly top-ranked exemplar cannot leave the class empty; "stop": the first exemplar that
        does not fit ends the list (the longest fitting prefix; ``ranked``, possibly lazy, is read no further).
        Either policy stops reading ``ranked`` once the budget is used up exactly (m full exemplars).
        """
        kept = self._take(ranked, budget, self.fill_policy)
        self.classes[int(label)] = kept
        return kept

    def reduce(self, budget: float) -> None:
        """Trim every class to the longest prefix of its ranking that fits in ``budget`` (fixed total memory)."""
        for label, exemplars in list(self.classes.items()):
            self.classes[label] = self._take(exemplars, budget, "stop")

    # -- views
    def exemplars(self) -> list:
        """All exemplars, by class then rank."""
        return [e for label in sorted(self.classes) for e in self.classes[label]]

    def __len__(self) -> int:
        return sum(len(v) for v in self.classes.values())

    def report(self) -> dict:
        """JSON-able summary: the unit and class budget; exemplars, and their cost in the buffer's unit (``cost``)
        and in every unit (``costs``: {unit: total}; ``tokens`` and ``byte_share`` in full exemplars, ``bytes`` in
        bytes, also as ``bytes``), in all and per class; the mean kept shares of patches and of words over the
        stored exemplars (``None`` when no exemplar has words), and their mean stored patches and tokens. Each
        exemplar's own cost in every unit is its ``costs``."""
        ordered = sorted(self.classes.items())
        ex = self.exemplars()
        words = [w for w in (e.word_share for e in ex) if w is not None]
        mean = lambda xs: float(np.mean(xs)) if len(xs) else None  # noqa: E731
        total = lambda items, unit: sum(e.cost(unit) for e in items)  # noqa: E731
        return {"unit": self.unit, "class_budget": self.class_budget(len(self.classes)),
                "exemplars": len(ex), "cost": total(ex, self.unit), "costs": {u: total(ex, u) for u in UNITS},
                "bytes": total(ex, "bytes"),
                "mean_exemplars_per_class": len(ex) / len(ordered) if ordered else 0.0,
                "exemplars_per_class": {str(c): len(v) for c, v in ordered},
                "cost_per_class": {str(c): total(v, self.unit) for c, v in ordered},
                "costs_per_class": {u: {str(c): total(v, u) for c, v in ordered} for u in UNITS},
                "bytes_per_class": {str(c): total(v, "bytes") for c, v in ordered},
                "full_exemplar_bytes": self.full_exemplar_bytes,
                "kept_patch_share": mean([e.patch_share for e in ex]), "kept_word_share": mean(words),
                "mean_patches": mean([e.num_patches for e in ex]), "mean_tokens": mean([e.num_tokens for e in ex])}

    # -- checkpointing
    def state_dict(self) -> dict:
        return {"unit": self.unit, "full_exemplar_bytes": self.full_exemplar_bytes,
                "memory_per_class": self.memory_per_class, "mode": self.mode, "memory_total": self.memory_total,
                "fill": self.fill_policy, "classes": {c: [e.state_dict() for e in v] for c, v in self.classes.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a unit saved under an older name (``"exemplar"``) loads under today's."""
        self.unit = RENAMED_UNITS.get(state["unit"], state["unit"])
        self.full_exemplar_bytes = state["full_exemplar_bytes"]
        self.memory_per_class, self.mode = state["memory_per_class"], state["mode"]
        self.memory_total, self.fill_policy = state["memory_total"], state["fill"]
        self.classes = {int(c): [exemplar_from_state(e) for e in v] for c, v in state["classes"].items()}
