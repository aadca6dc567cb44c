"""Class-incremental metrics on hand-made accuracy matrices and counts."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emmcil.engine.metrics import accuracy_row, forgetting_first, forgetting_max, forgetting_pycil, summarize

N = None


def test_forgetting_definitions_differ_when_accuracy_rises_before_falling():
    # phase 0's accuracy rises from 60 to 80 after phase 1, then falls to 50
    R = [[60, N, N],
         [80, 70, N],
         [50, 40, 90]]
    assert forgetting_max(R) == pytest.approx(((80 - 50) + (70 - 40)) / 2)    # 30: best before the end
    assert forgetting_first(R) == pytest.approx(((60 - 50) + (70 - 40)) / 2)  # 20: right after learning


def test_forgetting_of_a_monotone_decline_is_the_same_both_ways():
    R = [[90, N, N],
         [60, 80, N],
         [50, 70, 85]]
    assert forgetting_max(R) == forgetting_first(R) == pytest.approx(25)


def test_forgetting_can_be_negative_and_ignores_the_last_phase():
    R = [[10, N],
         [30, 99]]
    assert forgetting_max(R) == forgetting_first(R) == pytest.approx(-20)  # backward transfer
    assert forgetting_pycil(R) == 0.0  # PyCIL / PILOT: the max includes the last phase, so never negative


def test_pycil_forgetting_takes_the_max_over_every_phase_the_last_included():
    R = [[60, N, N],
         [80, 70, N],
         [90, 40, 85]]  # phase 0 peaks at the end, phase 1 after phase 1
    assert forgetting_max(R) == pytest.approx(((80 - 90) + (70 - 40)) / 2)  # FACIL: 10
    assert forgetting_pycil(R) == pytest.approx(((90 - 90) + (70 - 40)) / 2)  # PyCIL: 15


def test_one_phase_has_no_forgetting():
    assert forgetting_max([[70]]) is None and forgetting_first([[70]]) is None


def test_accuracy_row_marks_unseen_phases():
    # boundaries: phase 0 = classes 0-1, phase 1 = 2-3, phase 2 = 4
    row = accuracy_row(correct=[5, 3, 1, 0], total=[10, 10, 4, 6], boundaries=[0, 2, 4, 5], num_phases=3)
    assert row == [pytest.approx(40.0), pytest.approx(10.0), None]


def test_summarize_from_counts():
    boundaries, L = [0, 2, 4], 2
    counts = [
        ([9, 7], [10, 10]),                # after phase 0: 16/20
        ([5, 3, 10, 8], [10, 10, 10, 20]),  # after phase 1: old 8/20, new 18/30
    ]
    s = summarize(counts, boundaries, L)
    assert s["accuracy_matrix"] == [[pytest.approx(80.0), None], [pytest.approx(40.0), pytest.approx(60.0)]]
    assert s["accuracy_per_phase"] == [pytest.approx(80.0), pytest.approx(100 * 26 / 50)]  # sample-weighted
    assert s["avg_incremental_accuracy"] == pytest.approx((80.0 + 52.0) / 2)
    assert s["last_accuracy"] == pytest.approx(52.0)
    assert s["forgetting"] == s["forgetting_pycil"] == pytest.approx(40.0) and s["forgetting_first"] == 40.0
    assert s["old_accuracy"] == pytest.approx(40.0) and s["new_accuracy"] == pytest.approx(60.0)
    assert s["mean_last_row"] == pytest.approx(50.0)  # phases weighted equally (RebQ's AP)
    assert s["per_class_accuracy"] == [50.0, 30.0, 100.0, 40.0]


def test_summarize_partial_run():
    s = summarize([([1, 1], [2, 2])], [0, 2, 4, 6], num_phases=3)
    assert s["accuracy_matrix"] == [[50.0, None, None]]
    assert s["forgetting"] is None and s["old_accuracy"] is None and s["new_accuracy"] == 50.0


@st.composite
def lower_triangular(draw):
    L = draw(st.integers(2, 6))
    acc = st.floats(0, 100, allow_nan=False)
    return [[draw(acc) if j <= t else None for j in range(L)] for t in range(L)]


@settings(max_examples=60, deadline=None)
@given(lower_triangular())
def test_forgetting_definitions_order_each_other(R):
    fmax, ffirst = forgetting_max(R), forgetting_first(R)
    assert fmax >= ffirst - 1e-9
    assert math.isfinite(fmax) and -100 <= ffirst <= fmax <= 100
    fpycil = forgetting_pycil(R)
    assert 0 <= fpycil <= 100 and fpycil >= fmax - 1e-9
