"""Class-incremental metrics, all derived from per-class test counts after each phase.

Notation: L phases done, R[t][j] = accuracy (%) after phase t on the test samples of the classes phase j introduced
(``None`` for j > t); every evaluation is class-incremental (argmax over all classes seen so far, no task id). Each
metric's definition and the code it follows: the functions below, ``emmcil.engine.results.METRIC_NOTES`` (written
into ``results.json``) and docs/experiments.md#resultsjson.
"""
from __future__ import annotations

from typing import Sequence

Matrix = list[list[float | None]]


def _pct(correct: int, total: int) -> float | None:
    return 100.0 * correct / total if total else None


def accuracy_row(correct: Sequence[int], total: Sequence[int], boundaries: Sequence[int], num_phases: int
                 ) -> list[float | None]:
    """One row of R from per-class counts over the seen classes.

    correct, total: (n_seen,) per remapped class; boundaries: [0, n_0, n_0+n_1, ..., num_classes] (phase j owns
    classes [b[j], b[j+1])). Phases not yet seen (b[j] >= n_seen) are None.
    """
    n_seen = len(total)
    row: list[float | None] = []
    for j in range(num_phases):
        lo, hi = boundaries[j], boundaries[j + 1]
        row.append(None if lo >= n_seen else _pct(sum(correct[lo:hi]), sum(total[lo:hi])))
    return row


def forgetting_max(R: Matrix) -> float | None:
    """Mean over old phases j of (best accuracy on j before the last phase) - (accuracy on j after it): FACIL's
    (``src/main_incremental.py``: ``acc[:t, u].max(0) - acc[t, u]``) and Chaudhry et al.'s; negative when accuracy
    on a phase rises at the end."""
    L = len(R)
    if L < 2:
        return None
    drops = [max(R[t][j] for t in range(j, L - 1)) - R[L - 1][j] for j in range(L - 1)]
    return sum(drops) / len(drops)


def forgetting_pycil(R: Matrix) -> float | None:
    """Mean over old phases j of (best accuracy on j at any phase, the last included) - (accuracy on j after the
    last phase): PyCIL's and PILOT's ``trainer.py``, >= 0 (their zero-filled table never raises the max)."""
    L = len(R)
    if L < 2:
        return None
    drops = [max(R[t][j] for t in range(j, L)) - R[L - 1][j] for j in range(L - 1)]
    return sum(drops) / len(drops)


def forgetting_first(R: Matrix) -> float | None:
    """Mean over old phases j of (accuracy on j right after learning it) - (accuracy on j after the last phase):
    first-based, as RebQ and Avalanche."""
    L = len(R)
    if L < 2:
        return None
    drops = [R[j][j] - R[L - 1][j] for j in range(L - 1)]
    return sum(drops) / len(drops)


def summarize(counts: Sequence[tuple[Sequence[int], Sequence[int]]], boundaries: Sequence[int],
              num_phases: int) -> dict:
    """All metrics from ``counts[t] = (correct, total)`` per seen class after phase t (t = 0..L-1, L >= 1)."""
    L = len(counts)
    R = [accuracy_row(c, n, boundaries, num_phases) for c, n in counts]
    per_phase = [_pct(sum(c), sum(n)) for c, n in counts]
    correct, total = counts[-1]
    split = boundaries[L - 1]  # first class of the last phase done
    return {
        "accuracy_matrix": R,
        "accuracy_per_phase": per_phase,
        "avg_incremental_accuracy": sum(per_phase) / L,
        "last_accuracy": per_phase[-1],
        "forgetting": forgetting_max(R),
        "forgetting_pycil": forgetting_pycil(R),
        "forgetting_first": forgetting_first(R),
        "old_accuracy": _pct(sum(correct[:split]), sum(total[:split])) if L > 1 else None,
        "new_accuracy": _pct(sum(correct[split:]), sum(total[split:])),
        "mean_last_row": sum(R[-1][:L]) / L,
        "per_class_accuracy": [_pct(c, n) for c, n in zip(correct, total)],
    }
