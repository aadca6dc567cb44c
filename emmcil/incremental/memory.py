"""A byte-budgeted, class-balanced memory buffer of :class:`~emmcil.incremental.exemplar.Exemplar` records.

Budget (DESIGN §2): per class, in *full-exemplar equivalents* ``memory_per_class`` (m = 5 by default), converted
to bytes with the training set's mean full-exemplar cost (:func:`mean_full_exemplar_nbytes`). With
``memory_budget_mode="total"`` a fixed total of ``memory_total`` full-exemplar equivalents is shared equally by
the classes seen so far (PyCIL's fixed memory), and old classes are trimmed as new ones arrive.

Each class holds a *ranked* list (e.g. herding order). Exemplars are taken in rank order while they fit in the
class's byte budget, passing over one that does not fit (``memory_fill="skip"``, default) or stopping at it
(``"stop"``); the budget is never exceeded and a (trimmed) list keeps the ranking's order.
"""
from __future__ import annotations

import io
from typing import Iterable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from emmcil.data.transforms import MinMaxResize

from .exemplar import Exemplar, exemplar_from_state, full_exemplar_nbytes

BUDGET_MODES = ("per_class", "total")
FILL_POLICIES = ("skip", "stop")


def mean_full_exemplar_nbytes(dataset, tokenizer, image_size: int, patch_size: int, max_text_len: int) -> dict:
    """Mean bytes of a full exemplar over an ``ArrowDataset`` (its first caption, as the dataset uses).

    Image sizes come from the encoded images' headers (no pixel decoding), resized as ``pixelbert_transform``
    would; token counts from the tokenizer with truncation at ``max_text_len``. Returns a JSON-able dict with
    ``mean_bytes``, ``mean_patches``, ``mean_tokens`` and ``num_samples``.
    """
    resize = MinMaxResize(image_size, int(1333 / 800 * image_size), patch_size)
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


class ExemplarDataset(Dataset):
    """Replay items (dataset item format plus ``patch_keep``) of a list of exemplars."""

    def __init__(self, exemplars: list[Exemplar], max_text_len: int):
        self.exemplars, self.max_text_len = exemplars, max_text_len
        self.labels = np.array([e.label for e in exemplars], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.exemplars)

    def __getitem__(self, i: int) -> dict:
        return self.exemplars[i].to_item(self.max_text_len)


class MemoryBuffer:
    """Per-class ranked exemplar lists under a byte budget.

    full_exemplar_bytes: the dataset's mean full-exemplar cost; memory_per_class / memory_total: budgets in
    full-exemplar equivalents (``mode`` "per_class" / "total").
    """

    def __init__(self, full_exemplar_bytes: float, memory_per_class: float = 5, mode: str = "per_class",
                 memory_total: float = 0, fill: str = "skip"):
        if fill not in FILL_POLICIES:
            raise ValueError(f"memory_fill={fill!r}: expected one of {FILL_POLICIES}")
        if mode not in BUDGET_MODES:
            raise ValueError(f"memory_budget_mode={mode!r}: expected one of {BUDGET_MODES}")
        if mode == "total" and memory_total <= 0:
            raise ValueError("memory_budget_mode='total' needs memory_total > 0 (full-exemplar equivalents)")
        self.full_exemplar_bytes = float(full_exemplar_bytes)
        self.memory_per_class, self.mode, self.memory_total = memory_per_class, mode, memory_total
        self.fill_policy = fill
        self.classes: dict[int, list[Exemplar]] = {}

    # -- budget
    def class_budget(self, num_seen_classes: int) -> int:
        """Bytes one class may use when ``num_seen_classes`` classes share the memory."""
        units = self.memory_per_class if self.mode == "per_class" else self.memory_total / max(1, num_seen_classes)
        return int(units * self.full_exemplar_bytes)

    def fill(self, label: int, ranked: Iterable[Exemplar], budget: int) -> list[Exemplar]:
        """Replace class ``label``'s list by exemplars of ``ranked``, in rank order, within ``budget`` bytes.

        ``fill_policy`` "skip" (default): an exemplar that does not fit in what is left is passed over and the next
        ones are tried, so a large top-ranked image cannot leave the class empty; "stop": the first exemplar that
        does not fit ends the list (the longest fitting prefix; ``ranked``, possibly lazy, is read no further).
        Either way the list keeps the ranking's order and never exceeds the budget.
        """
        kept, used = [], 0
        for ex in ranked:
            if used + ex.nbytes > budget:
                if self.fill_policy == "stop":
                    break
                continue
            kept.append(ex)
            used += ex.nbytes
        self.classes[int(label)] = kept
        return kept

    def reduce(self, budget: int) -> None:
        """Trim every class to the prefix of its ranking that fits in ``budget`` bytes (fixed total memory)."""
        for label, exemplars in list(self.classes.items()):
            self.fill(label, list(exemplars), budget)

    # -- views
    def exemplars(self) -> list[Exemplar]:
        """All exemplars, by class then rank."""
        return [e for label in sorted(self.classes) for e in self.classes[label]]

    def __len__(self) -> int:
        return sum(len(v) for v in self.classes.values())

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.exemplars())

    def as_dataset(self, max_text_len: int) -> ExemplarDataset | None:
        """A torch Dataset of the replay items, or None when the buffer is empty."""
        return ExemplarDataset(self.exemplars(), max_text_len) if len(self) else None

    def report(self) -> dict:
        """JSON-able summary: exemplars and bytes in all and per class, the budget, the mean patch/token shares."""
        per_class = {str(c): len(v) for c, v in sorted(self.classes.items())}
        bytes_per_class = {str(c): sum(e.nbytes for e in v) for c, v in sorted(self.classes.items())}
        ex = self.exemplars()
        return {"exemplars": len(ex), "bytes": sum(bytes_per_class.values()),
                "full_exemplar_bytes": self.full_exemplar_bytes,
                "full_exemplar_equivalents": sum(bytes_per_class.values()) / self.full_exemplar_bytes,
                "class_budget_bytes": self.class_budget(len(self.classes)),
                "mean_patches": float(np.mean([e.num_patches for e in ex])) if ex else 0.0,
                "mean_tokens": float(np.mean([e.num_tokens for e in ex])) if ex else 0.0,
                "exemplars_per_class": per_class, "bytes_per_class": bytes_per_class}

    # -- checkpointing
    def state_dict(self) -> dict:
        return {"full_exemplar_bytes": self.full_exemplar_bytes, "memory_per_class": self.memory_per_class,
                "mode": self.mode, "memory_total": self.memory_total, "fill": self.fill_policy,
                "classes": {c: [e.state_dict() for e in v] for c, v in self.classes.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.full_exemplar_bytes = float(state["full_exemplar_bytes"])
        self.memory_per_class, self.mode = state["memory_per_class"], state["mode"]
        self.fill_policy = state.get("fill", "skip")
        self.memory_total = state["memory_total"]
        self.classes = {int(c): [exemplar_from_state(e) for e in v] for c, v in state["classes"].items()}
