"""One run, one experiment in every logger: TensorBoard's event files and W&B's records of a run stopped after a
phase and resumed read as one run, with a global step that never goes back, the config as hyper-parameters and the
final metrics."""
import json
import struct

import pytest
import yaml

from conftest import require
from emmcil.engine.driver import run_experiment
from emmcil.engine.tracking import FINAL_METRICS, StepClock
from emmcil.engine.rundir import DATA_ENTRY, PROVENANCE
from run_helpers import demo_config, one_thread

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


def read_events(folder) -> list:
    """Every event of TensorBoard's event files in ``folder``, in the order TensorBoard reads them (files by name,
    records in file order); the files are TFRecords of ``Event`` protos (length, its CRC, data, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            events.append(Event.FromString(data[at + 12: at + 12 + length]))
            at += 12 + length + 4
    return events


def scalars(events) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar, in reading order."""
    return [(e.step, v.tag, v.simple_value) for e in events if e.HasField("summary") for v in e.summary.value
            if v.HasField("simple_value")]


def hparams(events) -> dict:
    """The hyper-parameters of the HParams plugin's session-start record."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    for e in events:
        for v in e.summary.value if e.HasField("summary") else []:
            if v.metadata.plugin_data.plugin_name == "hparams":
                data = HParamsPluginData.FromString(v.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    return {k: getattr(x, x.WhichOneof("kind")) for k, x in data.session_start_info.hparams.items()}
    return {}


@pytest.fixture(scope="module")
def runs(demo_root, tmp_path_factory):
    """A 3-phase replay run uninterrupted, and the same run stopped after phase 1 and resumed."""
    require("tensorboardX")
    logs = tmp_path_factory.mktemp("runs")
    with one_thread():
        whole = run_experiment(demo_config(demo_root, logs / "whole", num_phases=3))
        run_experiment(demo_config(demo_root, logs / "resumed", num_phases=3, stop_after_phase=1))
        resumed = run_experiment(demo_config(demo_root, logs / "resumed", num_phases=3))
    return whole, resumed


def test_a_resumed_run_is_one_tensorboard_run_whose_step_never_goes_back(runs):
    whole, resumed = runs
    board = resumed / "logs" / "tensorboard"
    assert len(list(board.glob("events.out.tfevents.*"))) == 2  # one file per process, one folder: one run
    assert not [p for p in board.rglob("events.out.tfevents.*") if p.parent != board]
    events = read_events(board)
    steps = [e.step for e in events if e.HasField("summary") and any(v.HasField("simple_value")
                                                                      for v in e.summary.value)]
    assert steps == sorted(steps) and len(set(steps)) > 6  # a global step over the phases, never going back
    got = scalars(events)
    # the same records at the same global steps as the run that was not interrupted
    assert sorted((s, t) for s, t, _ in got) == sorted((s, t) for s, t, _ in scalars(read_events(
        whole / "logs" / "tensorboard")))
    results = json.loads((resumed / "results.json").read_text())
    evals = [(s, v) for s, t, v in got if t == "eval/accuracy"]
    assert [v for _, v in evals] == pytest.approx(results["accuracy_per_phase"], abs=1e-4)
    assert [s for s, _ in evals] == sorted({s for s, _ in evals})  # a step per phase, each later than the last
    phases = [v for _, t, v in got if t == "phase"]
    assert phases == sorted(phases) and set(phases) == {0, 1, 2}
    train = [(s, v) for s, t, v in got if t == "train/loss"]
    assert train and min(s for s, _ in train) < evals[0][0] < max(s for s, _ in train)
    final = {t: v for _, t, v in got if t.startswith("final/")}
    assert final == pytest.approx({f"final/{k}": results[k] for k in FINAL_METRICS}, abs=1e-4)


def test_the_config_is_the_runs_hyperparameters(runs):
    _, resumed = runs
    config = json.loads((resumed / "config.json").read_text())
    params = hparams(read_events(resumed / "logs" / "tensorboard"))
    assert params["method"] == "replay" and params["num_phases"] == 3 and params["exp_name"] == resumed.name
    assert params["lr"] == pytest.approx(config["lr"]) and params["betas"] == json.dumps(config["betas"])
    assert set(params) == {k for k in config if k not in (PROVENANCE, DATA_ENTRY)}  # the keys, not the records
    saved = yaml.safe_load((resumed / "logs" / "tensorboard" / "hparams.yaml").read_text())
    assert saved["method"] == "replay" and saved["seed"] == 0 and saved["num_phases"] == 3


def test_the_global_step_of_a_phase_follows_the_last():
    clock = StepClock()
    assert [clock.to_global(s) for s in (0, 1, 2)] == [0, 1, 2]
    assert clock.end_phase(trained_steps=2) == 2 and clock.offset == 3  # the evaluation at the last step
    assert clock.to_global(0) == 3 and clock.end_phase(trained_steps=0) == 3 and clock.offset == 4
    resumed = StepClock(4)  # what the checkpoint kept
    assert resumed.to_global(1) == 5 and resumed.to_global(None) == 5


def test_weights_and_biases_offline_resume_is_one_run_with_increasing_steps(demo_root, tmp_path, monkeypatch):
    wandb = require("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged = []  # (step, record) of what reached W&B's Run.log, which writes the offline run's .wandb file
    real_log = wandb.Run.log
    monkeypatch.setattr(wandb.Run, "log", lambda self, data, step=None, **kw: (
        logged.append((step, dict(data), self.id)), real_log(self, data, step=step, **kw))[1])
    with one_thread():
        cfg = dict(num_phases=3, wandb=True, wandb_mode="offline")
        run_experiment(demo_config(demo_root, tmp_path, **cfg, stop_after_phase=0))
        run_dir = run_experiment(demo_config(demo_root, tmp_path, **cfg))
    run_id = (run_dir / "logs" / "wandb_id").read_text().strip()
    assert {i for _, _, i in logged} == {run_id}
    steps = [s for s, _, _ in logged]
    assert None not in steps and steps == sorted(steps)  # W&B keeps only records whose step does not go back
    assert [d["phase"] for _, d, _ in logged if "eval/accuracy" in d] == [0, 1, 2]
    assert all(d["trainer/global_step"] == s for s, d, _ in logged)
    # one folder per process, both of the one run: `wandb sync` uploads them in order as that run
    folders = sorted((run_dir / "logs" / "wandb").glob("offline-run-*"))
    assert [f.name.rsplit("-", 1)[1] for f in folders] == [run_id, run_id]


def test_enforce_clean_checks_the_checkout_that_observers_record(monkeypatch, capsys):
    """``run.py -e`` (sacred's ``--enforce_clean``, listed in ``--help``) refuses a checkout with changes and runs
    from a clean one; the repository is in sacred's experiment info, which observers record."""
    from emmcil import config
    from emmcil.provenance import git_repository

    found = git_repository()
    assert config.ex.get_experiment_info()["repositories"] == ([found] if found else [])
    if found:
        assert len(found["commit"]) == 40 and isinstance(found["dirty"], bool)
    for dirty in (False, True):
        monkeypatch.setattr(config, "git_repository", lambda: {"url": "git:/repo", "commit": "c0ffee", "dirty": dirty})
        run = lambda: config.ex.run("print_config", named_configs=["demo"], options={"--enforce_clean": True})  # noqa
        if dirty:
            with pytest.raises(RuntimeError, match="EnforceClean: Uncommited changes"):
                run()
        else:
            run()
            assert "dataset = 'demo'" in capsys.readouterr().out
    monkeypatch.setattr(config, "git_repository", lambda: None)  # an installed package: no checkout
    with pytest.raises(RuntimeError, match="No version control detected"):
        config.ex.run("print_config", named_configs=["demo"], options={"--enforce_clean": True})
