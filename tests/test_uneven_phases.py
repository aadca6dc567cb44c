"""PyCIL's uneven protocol (``init_classes`` / ``increment``, PyCIL's ``init_cls`` / ``increment``): the split, the
config, and ``with demo init_classes=4 increment=2`` run through every memory method, then reported as B4-Inc2."""
import json

import pandas as pd
import pytest
import torch
from sacred.utils import ConfigError

from emmcil.data import ensure_demo, split_phases
from emmcil.settings.protocol import phase_sizes, protocol_label
from emmcil.engine.driver import run_experiment
from emmcil.engine.evaluate import evaluate_run
from emmcil.report import build_report
from run_helpers import SMALL, one_thread, resolve

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
MEMORY_METHODS = ("replay", "mrdc", "cim", "emm")
# methods whose parameters follow the phases: EASE's adapter set and proxy head per phase (a head as wide as the
# phase's classes), RebQ's prompt components per task
PER_PHASE_METHODS = ("ease", "rebq")


def pycil_increments(num_classes: int, init_cls: int, increment: int) -> list[int]:
    """PyCIL's ``DataManager.__init__`` (utils/data_manager.py), as written there."""
    increments = [init_cls]
    while sum(increments) + increment < num_classes:
        increments.append(increment)
    offset = num_classes - sum(increments)
    if offset > 0:
        increments.append(offset)
    return increments


@pytest.mark.parametrize("num_classes, init, inc", [(10, 4, 2), (100, 50, 10), (100, 10, 10), (101, 50, 10),
                                                    (10, 4, 3), (10, 5, 4), (10, 9, 5), (10, 10, 5), (200, 100, 20)])
def test_the_split_is_pycils(num_classes, init, inc):
    sizes = phase_sizes(num_classes, None, init, inc)
    assert sizes == pycil_increments(num_classes, init, inc)
    assert sum(sizes) == num_classes and min(sizes) >= 1
    assert [c for p in split_phases(num_classes, None, init, inc) for c in p] == list(range(num_classes))
    assert phase_sizes(num_classes, len(sizes), init, inc) == sizes  # a num_phases that agrees is accepted


def test_b0_is_a_first_phase_like_the_others_and_labels_name_the_protocol():
    assert phase_sizes(100, None, 0, 10) == [10] * 10 == phase_sizes(100, 10)
    assert phase_sizes(10, None, 4, 2) == [4, 2, 2, 2]
    assert protocol_label(4, 4, 2) == "B4-Inc2" and protocol_label(10, 0, 10) == "B0-Inc10"
    assert protocol_label(10, 10, 10) == "B0-Inc10" and protocol_label(5) == "L=5"


@pytest.mark.parametrize("args, message", [((10, 3, 4, 2), "num_phases=3 disagrees with B4-Inc2"),
                                            ((10, None, 4, 0), "init_classes=4 needs increment > 0"),
                                            ((10, None, 11, 2), "exceeds the dataset's 10 classes"),
                                            ((10, None, -1, 2), "must be >= 0")])
def test_a_split_that_does_not_fit_is_an_error_naming_the_keys(args, message):
    with pytest.raises(ValueError, match=message):
        phase_sizes(*args)


def test_the_config_derives_num_phases_and_names_the_run():
    cfg = resolve("demo", init_classes=4, increment=2)
    assert (cfg["num_phases"], cfg["init_classes"], cfg["increment"]) == (4, 4, 2)
    assert cfg["exp_name"] == "demo_replay_B4-Inc2_4phases_mem5_seed0"
    assert resolve("demo", "emm", increment=5)["exp_name"] == "demo_emm_B0-Inc5_2phases_mem5_seed0"
    # init_classes=5 splits as init_classes=0 (both B0-Inc5 to the report), but is another config: another name
    assert resolve("demo", "emm", init_classes=5, increment=5)["exp_name"] == "demo_emm_B5-Inc5_2phases_mem5_seed0"
    assert resolve("demo")["exp_name"] == "demo_replay_5phases_mem5_seed0"  # equal phases: named as before
    assert resolve("demo", init_classes=4, increment=2, num_phases=4)["num_phases"] == 4
    for named, updates in [(("phases_10",), {}), ((), {"num_phases": 5})]:  # a num_phases that disagrees
        with pytest.raises(ConfigError, match="disagrees with B4-Inc2"):
            resolve("demo", *named, init_classes=4, increment=2, **updates)
    with pytest.raises(ConfigError, match="needs increment"):
        resolve("demo", init_classes=4)


@pytest.fixture(scope="module")
def uneven_runs(tmp_path_factory):
    """``with demo <method> init_classes=4 increment=2`` at the tests' small size, one step a phase."""
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    logs = tmp_path_factory.mktemp("runs")
    small = {k: v for k, v in SMALL.items() if k != "num_phases"}  # num_phases follows from the protocol
    runs = {}
    with one_thread():
        for method in MEMORY_METHODS + PER_PHASE_METHODS:
            cfg = resolve("demo", method, **{**small, "data_root": str(root), "log_dir": str(logs),
                                             "init_classes": 4, "increment": 2, "limit_train_batches": 1})
            runs[method] = run_experiment(cfg)
    return runs


@pytest.mark.parametrize("method", MEMORY_METHODS)
def test_every_memory_method_runs_4_2_2_2(uneven_runs, method):
    run_dir = uneven_runs[method]
    res = json.loads((run_dir / "results.json").read_text())
    assert run_dir.name.startswith(f"demo_{method}_B4-Inc2_4phases_mem5_")
    assert res["finished"] and (res["num_phases"], res["protocol"]) == (4, "B4-Inc2")
    assert [p["new_classes"] for p in res["phases"]] == [4, 2, 2, 2]
    assert [p["seen_classes"] for p in res["phases"]] == [4, 6, 8, 10]
    order = json.loads((run_dir / "class_order.json").read_text())
    assert [len(p) for p in order["phase_classes"]] == [4, 2, 2, 2]
    assert order["phase_classes"][0] == order["class_order"][:4]  # the class order's first four
    # the accuracy matrix: one column a phase, lower-triangular
    R = res["accuracy_matrix"]
    assert [[v is not None for v in row] for row in R] == [[j <= t for j in range(4)] for t in range(4)]
    # memory: every seen class has exemplars, none over its budget of 5 full exemplars
    for t, memory in enumerate(res["memory"]):
        assert len(memory["cost_per_class"]) == [4, 6, 8, 10][t]
        assert all(0 < cost <= 5.0 + 1e-9 for cost in memory["cost_per_class"].values())
    state = torch.load(run_dir / "checkpoints" / "phase_3.pt", weights_only=False)
    assert state["num_classes"] == 10


def test_methods_with_parameters_per_phase_follow_the_uneven_phases(uneven_runs):
    for method in PER_PHASE_METHODS:
        res = json.loads((uneven_runs[method] / "results.json").read_text())
        assert res["finished"] and [p["new_classes"] for p in res["phases"]] == [4, 2, 2, 2], method
    state = torch.load(uneven_runs["ease"] / "checkpoints" / "phase_3.pt", weights_only=False)["trainable"]
    heads = [state[f"method_net.proxy_weights.{t}"].shape[0] for t in range(4)]
    assert heads == [4, 2, 2, 2] and state["method_net.prototypes"].shape[:2] == (10, 4)


def test_a_run_of_uneven_phases_is_rescored_as_recorded(uneven_runs):
    out = evaluate_run(uneven_runs["emm"])
    assert out["accuracy"] == pytest.approx(out["recorded"]["accuracy"], abs=1e-9)


def test_the_report_labels_the_runs_b4_inc2(uneven_runs, tmp_path):
    out = tmp_path / "report"
    build_report([str(uneven_runs[m]) for m in MEMORY_METHODS], out, log=lambda m: None)
    header = [c.strip() for c in (out / "table_demo.md").read_text().splitlines()[0].strip("|").split("|")]
    assert header == ["method", "paper row", "B4-Inc2"]  # not "L=4": four equal phases would be another protocol
    numbers = (out / "table_demo.csv").read_text().splitlines()[0].split(",")
    assert "B4-Inc2_mean" in numbers and "L4_mean" not in numbers
    groups = pd.read_csv(out / "groups.csv")
    assert sorted(groups["method"]) == sorted(MEMORY_METHODS)
    assert set(groups["protocol"]) == {"B4-Inc2"} and set(groups["num_phases"]) == {4}
