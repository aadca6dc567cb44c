"""The phase driver end to end on the demo set with a very small model: results, resume, interrupted writes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from pytorch_lightning.plugins.environments import SLURMEnvironment

from emmcil.engine import rundir
from emmcil.engine.driver import IncrementalRun, cluster_plugins, resume_note, run_experiment
from emmcil.engine.rundir import ConfigMismatchError
from emmcil.stops import STOPPED_EXIT_CODE
from run_helpers import SMALL, demo_config, lock_held_elsewhere, one_thread

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")  # inside Lightning, harmless

# hidden 32, 1 layer, 64 px images (4x4 to 4x5 patches), 2 steps a phase: a 3-phase run takes a few seconds


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def config(demo_root, log_dir, *named, **updates) -> dict:
    """``run.py with demo <named> key=value`` at the SMALL size, 3 phases unless told otherwise."""
    return demo_config(demo_root, log_dir, *named, **{"num_phases": 3, **updates})


def results_text(run_dir: Path) -> str:
    return (run_dir / "results.json").read_text()


@pytest.fixture(scope="module")
def reference(demo_root, runs):
    """An uninterrupted 3-phase replay run."""
    return run_experiment(config(demo_root, runs / "uninterrupted", "replay"))


def test_run_directory_and_results(reference):
    assert reference.name.startswith("demo_replay_3phases_mem5_") and reference.name.endswith("_seed0")
    res = json.loads(results_text(reference))
    assert res["finished"] and res["completed_phases"] == 3 and res["num_phases"] == 3
    R = res["accuracy_matrix"]
    assert [[v is None for v in row] for row in R] == [[False, True, True], [False, False, True], [False] * 3]
    assert len(res["accuracy_per_phase"]) == 3
    assert res["avg_incremental_accuracy"] == pytest.approx(sum(res["accuracy_per_phase"]) / 3)
    assert res["last_accuracy"] == res["accuracy_per_phase"][-1] and res["new_accuracy"] == R[2][2]
    for key in ("forgetting", "forgetting_pycil", "forgetting_first", "old_accuracy"):
        assert isinstance(res[key], float)
    assert sorted(res["class_order"]) == list(range(10)) and [len(p) for p in res["phase_classes"]] == [4, 3, 3]
    mem = res["memory"]
    assert [len(m["exemplars_per_class"]) for m in mem] == [4, 7, 10]  # every seen class has exemplars
    assert all(m["class_budget"] == 5.0 and set(m["cost_per_class"].values()) == {5.0} for m in mem)
    assert [p["memory_exemplars_per_class"] for p in res["phases"]] == [5.0, 5.0, 5.0]
    assert [p["memory_exemplars"] for p in res["phases"]] == [m["exemplars"] for m in mem]

    saved = rundir.read_json(reference / "config.json")
    assert saved["method"] == "replay" and "tau_image" not in saved  # the keys of replay only
    (record,) = saved["provenance"]  # one process ran it
    assert {"git_commit", "git_dirty", "host", "command", "versions"} <= set(record)
    assert {"python", "torch", "cuda", "transformers", "pytorch-lightning"} <= set(record["versions"])
    assert rundir.read_json(reference / "class_order.json")["class_order"] == res["class_order"]
    assert not (reference / "exemplar_cost.json").exists()  # the mean full-exemplar bytes: memory_unit=bytes only
    train_log = (reference / "logs" / "phase_0" / "metrics.csv").read_text().splitlines()
    assert {"train/loss", "lr-AdamW/pg1"} <= set(train_log[0].split(","))  # loss and the learning-rate monitor
    evals = pd.read_csv(reference / "logs" / "phases" / "metrics.csv")
    assert evals["step"].tolist() == [0, 1, 2]
    assert evals["eval/accuracy"].tolist() == pytest.approx(res["accuracy_per_phase"], abs=1e-9)
    assert evals["eval/task_0_accuracy"].tolist() == pytest.approx([row[0] for row in R], abs=1e-9)
    assert evals["memory/exemplars"].tolist() == [m["exemplars"] for m in mem]
    md = (reference / "results.md").read_text()
    assert "| phase |" in md and "Accuracy matrix" in md and "forgetting_first" in md

    state = torch.load(reference / "checkpoints" / "phase_2.pt", weights_only=True)
    assert state["phase"] == 2 and state["num_classes"] == 10 and state["accuracy_matrix"] == R
    assert "classifier.weight" in state["trainable"] and state["trainable"]["classifier.weight"].shape[0] == 10
    assert sum(len(v) for v in state["method"]["memory"]["classes"].values()) == mem[2]["exemplars"]
    assert "rng" not in state  # every phase seeds its RNGs from (seed, phase): a resume needs no saved state
    # the demo tunes everything (tuning="full"): frozen part is empty, trainable holds the backbone too
    assert any(k.startswith("backbone.transformer.blocks.0.attn.qkv") for k in state["trainable"])


def test_stopped_and_resumed_run_equals_uninterrupted(demo_root, runs, reference, capsys):
    log_dir = runs / "stopped"
    first = run_experiment(config(demo_root, log_dir, "replay", stop_after_phase=0))
    partial = json.loads(results_text(first))
    assert partial["completed_phases"] == 1 and not partial["finished"]
    assert partial["accuracy_matrix"][0] == json.loads(results_text(reference))["accuracy_matrix"][0]
    again = run_experiment(config(demo_root, log_dir, "replay"))  # the same command: resumes
    assert "resuming" in capsys.readouterr().out
    assert again == first and results_text(again) == results_text(reference)
    # the evaluation log holds every phase, the ones before the interruption too; config.json both processes
    assert pd.read_csv(again / "logs" / "phases" / "metrics.csv")["step"].tolist() == [0, 1, 2]
    assert len(rundir.read_json(again / "config.json")["provenance"]) == 2


def test_kill_during_checkpoint_write_leaves_a_resumable_run(demo_root, runs, reference, monkeypatch):
    log_dir = runs / "killed"
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if obj.get("phase") == 1:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt("killed while writing the phase-1 checkpoint")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)  # what rundir saves checkpoints with
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config(demo_root, log_dir, "replay"))
    monkeypatch.setattr(torch, "save", real_save)
    run_dir = log_dir / reference.name
    assert rundir.RunDir(run_dir).finished_phases() == [0]
    # a SIGKILL would also leave the temporary file behind
    (run_dir / "checkpoints" / ".tmp-phase_1.pt.x1y2").write_bytes(b"PK\x03\x04 half a checkpoint")
    resumed = run_experiment(config(demo_root, log_dir, "replay"))
    assert results_text(resumed) == results_text(reference)
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


ONE_TASK_SLURM_JOB = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0",
                      "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "emmcil",
                      "SLURM_NODELIST": "localhost"}


def test_a_run_under_slurm_uses_lightnings_environment_without_auto_requeue(demo_root, runs, reference, monkeypatch):
    """Inside an `srun` task Lightning's SLURMEnvironment sets the run up (here one task), with its auto-requeue off
    (no mid-phase hpc checkpoint for the next phase's Trainer to restore): the same numbers as outside SLURM."""
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert cluster_plugins() == []  # outside SLURM: Lightning's own choice
    for key, value in ONE_TASK_SLURM_JOB.items():
        monkeypatch.setenv(key, value)
    (plugin,) = cluster_plugins()
    assert isinstance(plugin, SLURMEnvironment) and not plugin.auto_requeue
    run_ = IncrementalRun(config(demo_root, runs / "slurm", "replay"))
    run_.run()
    environment = run_.trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and not environment.auto_requeue
    assert results_text(run_.run_dir.path) == results_text(reference)
    assert not list(run_.run_dir.path.rglob("hpc_ckpt*"))


def test_a_changed_config_is_another_run_or_refused_under_a_set_name(demo_root, runs):
    log_dir = runs / "changed"
    run_dir = run_experiment(config(demo_root, log_dir, "finetune", num_phases=2, stop_after_phase=0))
    other = config(demo_root, log_dir, "finetune", num_phases=2, lr=0.05)
    assert other["exp_name"] != run_dir.name and "_lr=0.05_" in other["exp_name"]  # a new run directory
    # under one explicit name, a changed config cannot resume the run
    named = dict(num_phases=2, exp_name=run_dir.name)
    with pytest.raises(ConfigMismatchError) as err:
        run_experiment(config(demo_root, log_dir, "finetune", lr=0.05, max_epoch=2, **named))
    assert "lr: 0.01 (saved) != 0.05 (now)" in str(err.value) and "max_epoch" in str(err.value)
    assert "restart=True" in str(err.value)
    restarted = run_experiment(config(demo_root, log_dir, "finetune", lr=0.05, restart=True, **named))
    assert restarted == run_dir and json.loads(results_text(run_dir))["finished"]
    assert rundir.read_json(run_dir / "config.json")["lr"] == 0.05


@pytest.mark.parametrize("method", ["finetune", "joint"])
def test_bounds_without_memory(demo_root, runs, method, capsys):
    run_dir = run_experiment(config(demo_root, runs / method, method, num_phases=2))
    res = json.loads(results_text(run_dir))
    assert res["finished"] and res["memory"] == [None, None] and run_dir.name.startswith(f"demo_{method}_2phases_")
    out = capsys.readouterr().out
    replayed = 150 if method == "joint" else 0  # joint replays all of phase 0's training data
    assert f"phase 1 of 2: 150 new-class samples + {replayed} replayed" in out


def test_demo_command_end_to_end_with_a_sacred_observer(demo_root, tmp_path):
    """``python run.py -F DIR with demo`` (smaller): the last line printed is the run directory; sacred's file
    observer gets the config, the provenance, every phase's metrics, the run's files and its result."""
    args = [f"{k}={v}" for k, v in dict(SMALL, data_root=demo_root, log_dir=tmp_path / "runs").items()]
    proc = subprocess.run([sys.executable, "run.py", "-F", str(tmp_path / "sacred"), "with", "demo", "emm", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    run_dir = Path(lines[-1])
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("demo_emm_2phases_mem5_")
    results = json.loads(results_text(run_dir))
    assert results["finished"]
    assert any(line.startswith("| phase |") for line in lines)
    assert any(line.startswith("[phase 1 of 2]") for line in lines)

    observed = tmp_path / "sacred" / "1"
    record = json.loads((observed / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    assert record["result"]["run_dir"] == str(run_dir)
    assert record["result"]["last_accuracy"] == pytest.approx(results["last_accuracy"], abs=1e-9)
    assert {"results.json", "results.md", "class_order.json", "fig4_phase0.png"} <= set(record["artifacts"])
    assert json.loads((observed / "results.json").read_text()) == results
    metrics = json.loads((observed / "metrics.json").read_text())
    assert metrics["eval/accuracy"]["steps"] == [0, 1]
    assert metrics["eval/accuracy"]["values"] == pytest.approx(results["accuracy_per_phase"], abs=1e-9)
    assert metrics["memory/exemplars"]["values"] == [m["exemplars"] for m in results["memory"]]
    info = json.loads((observed / "info.json").read_text())
    assert info["provenance"]["versions"]["torch"] and "run.py" in info["provenance"]["command"]
    assert json.loads((observed / "config.json").read_text())["exp_name"] == run_dir.name




def test_ctrl_c_in_a_phase_says_how_to_resume(demo_root, tmp_path):
    """Ctrl-C inside a phase: the run says where re-running resumes (with a phase saved, after that phase) and exits
    with the documented status of a stopped run."""
    args = [f"{k}={v}" for k, v in dict(SMALL, data_root=demo_root, log_dir=tmp_path, exp_name="stopped",
                                         num_phases=3, max_epoch=100000).items()]
    proc = subprocess.Popen([sys.executable, "run.py", "with", "demo", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            # a shell that starts a job in the background (`cmd &`, as a CI runner may) gives it
                            # SIGINT ignored, which Python then keeps: give the run Ctrl-C as a terminal would
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:
            if line.startswith("phase 0 of 3"):  # phase 0 starts training
                break
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == STOPPED_EXIT_CODE  # stopped, resumable: neither finished (0) nor failed (1)
    run_dir = tmp_path / "stopped"
    assert f"stopped: re-run the same command to resume from its start; run directory {run_dir}" in err
    cfg = json.loads((run_dir / "config.json").read_text())
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    rundir.RunDir(run_dir).checkpoint_path(0).write_bytes(b"")  # as if phase 0 had been saved
    assert resume_note(cfg) == (f"stopped: re-run the same command to resume after phase 0 of 3 (phases count from "
                                f"0); run directory {run_dir}")


def test_a_refused_run_prints_its_reason_without_a_traceback(demo_root, tmp_path):
    """``python run.py`` on a run directory another process holds: exit 1, the reason (naming the holder) alone on
    stderr, no traceback (``--debug`` still gives one), and sacred's observer records the run as failed."""
    path = tmp_path / "runs" / "held"
    args = [f"{k}={v}" for k, v in dict(SMALL, data_root=demo_root, log_dir=tmp_path / "runs", exp_name="held").items()]
    with lock_held_elsewhere(path) as holder:
        runs = [subprocess.run([sys.executable, "run.py", *debug, "-F", str(tmp_path / "sacred"), "with", "demo",
                                *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
                for debug in ([], ["--debug"])]
    plain, debug = runs
    assert plain.returncode == 1
    assert f"RunInUseError: {path} is in use by process {holder.pid}" in plain.stderr
    assert "Traceback" not in plain.stderr and "pkg_resources" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "RunInUseError" in debug.stderr
    assert json.loads((tmp_path / "sacred" / "1" / "run.json").read_text())["status"] == "FAILED"
    assert not (path / "checkpoints").exists()

def test_predict_returns_dataset_order_and_custom_steps(demo_root, runs):
    """ctx.predict: per-sample results in dataset order; a custom step (e.g. a masking pass) replaces preds."""
    run_ = IncrementalRun(config(demo_root, runs / "predict", "finetune", num_phases=2, per_gpu_batchsize=7))
    run_.module.add_classes(5)
    run_.trainer = run_.make_trainer(0)
    data = run_.data.scenario.test_dataset(1)
    out = run_.predict(data, features=True)
    assert out["labels"].tolist() == data.labels.tolist() and out["indices"].tolist() == data.indices.tolist()
    assert out["features"].shape == (len(data), 32) and out["preds"].max() < 5

    def step(backbone, batch):
        return {"first_tokens": batch["text_ids"][:, :3], "grid": batch["images"].new_ones(len(batch["labels"]), 2, 2)}

    out = run_.predict(data, step=step)
    assert set(out) == {"first_tokens", "grid", "labels", "indices"}
    assert torch.equal(out["first_tokens"][5], data[5]["text_ids"][:3]) and out["grid"].shape == (len(data), 2, 2)
    # the step is the pass's argument (a PredictPass handed to Trainer.predict), not state left on the module
    assert not {"predict_fn", "return_features"} & set(vars(run_.module))
    with pytest.raises(ValueError, match="features=True is for the plain pass"):
        run_.predict(data, features=True, step=step)
    assert set(run_.predict(data)) == {"preds", "labels", "indices"}


def test_a_phase_shorter_than_the_logging_interval_still_logs_its_training(demo_root, runs):
    """2 optimiser steps a phase and log_every_n_steps=50: the epoch's mean loss and accuracy are still written."""
    run_dir = run_experiment(config(demo_root, runs / "short", "finetune", num_phases=2, log_every_n_steps=50))
    for phase in (0, 1):
        log = pd.read_csv(run_dir / "logs" / f"phase_{phase}" / "metrics.csv")
        assert log["train/loss_epoch"].notna().sum() == 1 and log["train/acc_epoch"].between(0, 1).any()
