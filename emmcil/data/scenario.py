"""Class-incremental scenario: a class order, its phases, and per-phase datasets with remapped labels.

Classes are renumbered by their position in the order ("remapped" ids), so phase t's classes form a contiguous
block and a growing classifier head only appends outputs. Items of scenario datasets carry the remapped ``label``
and the dataset's own label as ``orig_label``.
"""
from __future__ import annotations


import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from emmcil.settings.protocol import phase_sizes

DEFAULT_CLASS_ORDER_SEED = 1993  # PyCIL / PILOT: np.random.seed(1993); np.random.permutation(num_classes)


def class_order(num_classes: int, seed: int | None = DEFAULT_CLASS_ORDER_SEED) -> list[int]:
    """A permutation of the original class ids; ``seed=None`` is the identity. Equal to PyCIL's order for a seed
    (same legacy-NumPy generator), without touching NumPy's global state."""
    if seed is None:
        return list(range(num_classes))
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def phase_boundaries(num_classes: int, num_phases: int | None, init_classes: int = 0, increment: int = 0) -> list[int]:
    """[0, n_0, n_0 + n_1, ..., num_classes]: phase t owns positions [b[t], b[t + 1]) (:func:`phase_sizes`)."""
    return np.cumsum([0] + phase_sizes(num_classes, num_phases, init_classes, increment)).tolist()


def split_phases(num_classes: int, num_phases: int | None, init_classes: int = 0, increment: int = 0
                 ) -> list[list[int]]:
    """Positions 0..num_classes-1 cut into contiguous blocks, one a phase (:func:`phase_sizes`)."""
    bounds = phase_boundaries(num_classes, num_phases, init_classes, increment)
    return [list(range(bounds[t], bounds[t + 1])) for t in range(len(bounds) - 1)]


class IncompleteClassesError(ValueError):
    """A phase's class has no training or no test sample (the run could train it but not score it, or neither)."""


class RemappedSubset(Dataset):
    """Rows ``indices`` of ``dataset`` with ``label`` replaced by its position in the class order.

    ``.labels`` (remapped) and ``.orig_labels`` are numpy arrays aligned with the subset's items.
    """

    def __init__(self, dataset, indices: np.ndarray, position: np.ndarray):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.orig_labels = np.asarray(dataset.labels)[self.indices]
        self.labels = position[self.orig_labels]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[int(self.indices[i])])
        item["orig_label"], item["label"] = item["label"], int(self.labels[i])
        return item


class IncrementalScenario:
    """Phases of a class-incremental run over ``train`` and ``test`` (``ArrowDataset``-like: ``.labels``, items
    with ``label``). ``order[p]`` is the original class at position p. Class ids in this API are positions. The
    phases: ``num_phases`` equal ones, or PyCIL's ``init_classes`` / ``increment`` (:func:`phase_sizes`)."""

    def __init__(self, train, test, order: list[int], num_phases: int | None, init_classes: int = 0,
                 increment: int = 0):
        order = [int(c) for c in order]
        if len(set(order)) != len(order) or min(order, default=0) < 0:
            raise ValueError(f"class order must list distinct non-negative class ids, got {order}")
        self.train, self.test, self.order = train, test, order
        self.num_classes = len(order)
        self.phases = split_phases(self.num_classes, num_phases, init_classes, increment)
        # original label -> position; -1 marks labels outside the order
        size = max(order + [int(np.max(d.labels, initial=0)) for d in (train, test)]) + 1
        self.position = np.full(size, -1, dtype=np.int64)
        self.position[order] = np.arange(self.num_classes)
        for d in (train, test):
            self._check_labels(d)

    def _check_labels(self, dataset) -> None:
        labels = np.asarray(dataset.labels)
        bad = np.flatnonzero((labels < 0) | (self.position[np.clip(labels, 0, None)] < 0))
        if len(bad):
            i = int(bad[0])
            name = dataset.image_ids[i] if hasattr(dataset, "image_ids") else f"index {i}"
            where = dataset.file_of(i) if hasattr(dataset, "file_of") else type(dataset).__name__
            raise ValueError(f"label {int(labels[i])} of sample '{name}' (index {i}) in {where} is not in the "
                             f"class order of {self.num_classes} classes ({len(bad)} such samples)")

    def check_complete(self, class_names: list[str] | None = None) -> None:
        """IncompleteClassesError listing every class of a phase without a training or a test sample (original
        label, name, phase, files), so that a run stops before it trains instead of crashing when it scores the
        phase (a class without test sample has no accuracy) or herds its exemplars (no sample to choose)."""
        counts = {split: np.bincount(self.position[np.asarray(d.labels)], minlength=self.num_classes)
                  for split, d in (("training", self.train), ("test", self.test))}
        lines = []
        for t, phase in enumerate(self.phases):
            for c in phase:
                empty = [split for split, n in counts.items() if n[c] == 0]
                if empty:
                    label = self.order[c]
                    name = f"'{class_names[label]}' " if class_names else ""
                    lines.append(f"  class {name}(label {label}) of phase {t}: no {' and no '.join(empty)} sample "
                                 f"({counts['training'][c]} training, {counts['test'][c]} test)")
        if lines:
            files = lambda d: ", ".join(str(p) for p in getattr(d, "paths", [])) or type(d).__name__  # noqa: E731
            raise IncompleteClassesError(
                f"{len(lines)} classes cannot be trained and scored:\n" + "\n".join(lines) + f"\ntraining data: "
                f"{files(self.train)}; test data: {files(self.test)}. Give them samples in both splits (the writers "
                f"report such classes), or leave them out of the dataset.")

    @property
    def num_phases(self) -> int:
        return len(self.phases)

    def phase_classes(self, t: int) -> list[int]:
        """Remapped ids of the classes that phase ``t`` introduces."""
        return list(self.phases[t])

    def classes_upto(self, t: int) -> list[int]:
        """Remapped ids of all classes seen in phases 0..t: ``range(n_t)``."""
        return list(range(self.phases[t][-1] + 1))

    def _subset(self, dataset, lo: int, hi: int) -> RemappedSubset:
        pos = self.position[np.asarray(dataset.labels)]
        return RemappedSubset(dataset, np.flatnonzero((pos >= lo) & (pos < hi)), self.position)

    def train_dataset(self, t: int, extra: Dataset | None = None) -> Dataset:
        """Phase ``t``'s new-class training samples, plus ``extra`` (memory exemplars whose items already carry
        remapped labels and ``orig_label``, e.g. items drawn from an earlier ``train_dataset``)."""
        classes = self.phases[t]
        new = self._subset(self.train, classes[0], classes[-1] + 1)
        return new if extra is None or len(extra) == 0 else ConcatDataset([new, extra])

    def test_dataset(self, t: int) -> RemappedSubset:
        """Test samples of every class seen up to phase ``t``."""
        return self._subset(self.test, 0, self.phases[t][-1] + 1)

    def phase_boundaries(self) -> list[int]:
        """[0, n_0, n_0 + n_1, ..., num_classes]: phase t owns remapped classes [b[t], b[t+1])."""
        return [0] + [p[-1] + 1 for p in self.phases]

    def __repr__(self):
        return (f"IncrementalScenario({self.num_classes} classes, {self.num_phases} phases of "
                f"{[len(p) for p in self.phases]}, {len(self.train)} train / {len(self.test)} test)")

