"""A user's own data and experiments, as a newcomer runs them: a folder of images + captions written with our
writer, run by name, re-scored with ``evaluate``, summed up by the report; the run's files, lock and loggers."""
import json
import os
import stat

import pytest

from conftest import require
from data_helpers import mixed_image_folder, write_jsonl
from emmcil.data.write_folder import write_folder
from emmcil.engine.evaluate import evaluate_run, main as evaluate_main
from emmcil.engine import rundir
from emmcil.engine.driver import run_experiment
from emmcil.engine.tracking import tensorboard_available
from emmcil.report import build_report
from run_helpers import SMALL, lock_held_elsewhere, one_thread, resolve

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
CLASSES = ["acoustic_guitar", "cello", "harp", "zither"]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def mydata(tmp_path_factory):
    """``python -m emmcil.data.write_folder --root photos --captions captions.jsonl --out arrow --name mydata``."""
    base = tmp_path_factory.mktemp("user")
    records = mixed_image_folder(base / "photos", CLASSES, per_class=8)
    write_jsonl(base / "captions.jsonl", records)
    write_folder(base / "photos", base / "captions.jsonl", base / "arrow", "mydata", test_fraction=0.25)
    return base / "arrow"


def user_config(data_root, log_dir, *named, **updates) -> dict:
    """``run.py with tiny dataset=mydata data_root=DIR`` at the tests' SMALL size."""
    return resolve("tiny", *named, **{**SMALL, "dataset": "mydata", "data_root": str(data_root),
                                      "log_dir": str(log_dir), "tuning": "full", **updates})


@pytest.fixture(scope="module")
def user_run(mydata, tmp_path_factory):
    """A 2-phase replay run of the folder dataset, made under umask 022."""
    old = os.umask(0o022)
    try:
        return run_experiment(user_config(mydata, tmp_path_factory.mktemp("runs")))
    finally:
        os.umask(old)


def test_a_folder_dataset_runs_by_name_without_code_edits(mydata, user_run):
    cfg = rundir.read_json(user_run / "config.json")
    assert cfg["dataset"] == "mydata" and cfg["num_classes"] == 4  # from mydata_classes.json
    assert user_run.name.startswith("mydata_replay_2phases_mem5_")
    results = json.loads((user_run / "results.json").read_text())
    assert results["finished"] and [len(p) for p in results["phase_classes"]] == [2, 2]
    described = rundir.read_json(user_run / "class_order.json")
    assert described["class_names"] == CLASSES  # names in label order, from the writer
    assert sum(m["exemplars"] > 0 for m in results["memory"]) == 2


def test_evaluate_reproduces_the_recorded_accuracy_of_every_checkpoint(user_run, capsys):
    results = json.loads((user_run / "results.json").read_text())
    for phase in (0, 1):
        state = rundir.RunDir(user_run).load_checkpoint(phase)
        out = evaluate_run(user_run, phase=phase)
        # the same model on the same data in the same batches: the very counts the run recorded
        assert (out["correct"], out["total"]) == tuple(state["counts"][phase])
        assert [t["accuracy"] for t in out["tasks"]] == pytest.approx(results["accuracy_matrix"][phase][:phase + 1],
                                                                      abs=1e-9)
        assert out["accuracy"] == pytest.approx(results["accuracy_per_phase"][phase], abs=1e-9)
        assert out["recorded"]["accuracy"] == pytest.approx(out["accuracy"], abs=1e-9)
    assert evaluate_main([str(user_run), "--phase", "0"]) == 0
    table = capsys.readouterr().out
    assert "| recorded |" in table and any(name in table for name in CLASSES)  # the class names


def test_evaluate_under_missing_modalities_and_bad_input(user_run, tmp_path, capsys):
    out = evaluate_run(user_run, missing={"missing_type": "text", "missing_ratio": 1.0})
    assert out["recorded"] is None and out["missing"]["missing_type"] == "text" and sum(out["total"]) == 8
    assert out["data_changed"] == []
    train = evaluate_run(user_run, split="train")  # other files than the run's test files, not changed ones
    assert train["data_changed"] == [] and train["recorded"] is None and sum(train["total"]) > 8
    assert not list(user_run.rglob("missing_tables"))  # nothing written into the run directory
    assert evaluate_main([str(user_run), "--phase", "5"]) == 1
    assert "phase_5.pt not found; checkpoints of phases [0, 1] exist" in capsys.readouterr().err
    assert evaluate_main([str(tmp_path)]) == 1
    assert "config.json not found" in capsys.readouterr().err
    for option, line in (("--per-gpu-batchsize=0", "per_gpu_batchsize=0: at least 1"),
                         ("--num-workers=-3", "num_workers=-3: at least 0")):  # checked as run.py checks them
        assert evaluate_main([str(user_run), option]) == 1
        err = capsys.readouterr().err
        assert err == f"error: bad config: {line}\n", err


def test_the_report_of_the_folder_run(user_run, tmp_path):
    written = build_report([str(user_run)], tmp_path / "report", log=lambda m: None)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## mydata: methods x phases L" in text and (tmp_path / "report" / "table_mydata.csv") in written["csv"]


def test_run_files_follow_the_umask(user_run):
    """0644 files and 0755 folders under umask 022, checkpoints included (mkstemp would make them 0600)."""
    modes = {p.relative_to(user_run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in user_run.rglob("*")}
    files = {p: m for p, m in modes.items() if (user_run / p).is_file()}
    assert "checkpoints/phase_1.pt" in files and "config.json" in files and "logs/phases/metrics.csv" in files
    assert {p: oct(m) for p, m in files.items() if m != 0o644} == {}
    assert {p: oct(m) for p, m in modes.items() if p not in files and m != 0o755} == {}


def test_a_second_process_on_a_run_in_use_is_refused_naming_the_holder(mydata, tmp_path):
    cfg = user_config(mydata, tmp_path, num_phases=2)
    path = tmp_path / cfg["exp_name"]
    with lock_held_elsewhere(path) as holder:  # killed afterwards, as a crash: the OS releases the lock
        with pytest.raises(rundir.RunInUseError, match=rf"is in use by process {holder.pid} of .* on "):
            run_experiment(cfg)
    with rundir.locked(path):  # free again
        assert not (path / "checkpoints").exists()  # the refused process changed nothing


def test_tensorboard_gets_the_training_and_evaluation_logs_as_one_run(user_run):
    require("tensorboardX")
    assert tensorboard_available()
    board = user_run / "logs" / "tensorboard"
    assert len(list(board.glob("events.out.tfevents.*"))) == 1  # one process, one run (tests/test_tracking.py)
    assert not [p for p in board.iterdir() if p.is_dir()]


def test_weights_and_biases_offline(mydata, tmp_path, monkeypatch):
    wandb = require("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged = []  # what reached W&B's own Run.log, which the offline run writes to its .wandb file
    real_log = wandb.Run.log
    monkeypatch.setattr(wandb.Run, "log", lambda self, data, *a, **kw: (logged.append(dict(data)),
                                                                          real_log(self, data, *a, **kw))[1])
    run_dir = run_experiment(user_config(mydata, tmp_path, "finetune", wandb=True, wandb_mode="offline"))
    results = json.loads((run_dir / "results.json").read_text())
    evals = [d for d in logged if "eval/accuracy" in d]
    assert [d["phase"] for d in evals] == [0, 1]
    assert [d["eval/accuracy"] for d in evals] == pytest.approx(results["accuracy_per_phase"], abs=1e-9)
    assert evals[1]["eval/task_0_accuracy"] == pytest.approx(results["accuracy_matrix"][1][0], abs=1e-9)
    assert any("train/loss" in d for d in logged) and any("lr-AdamW/pg1" in d for d in logged)
    # one offline W&B run, named by the id the run directory keeps (a resumed run continues it)
    run_id = (run_dir / "logs" / "wandb_id").read_text().strip()
    (offline,) = (run_dir / "logs" / "wandb").glob(f"offline-run-*-{run_id}")
    records = (offline / f"run-{run_id}.wandb").read_bytes()
    assert b"eval/task_0_accuracy" in records and b"train/loss" in records


def test_evaluate_finds_a_relative_data_root_from_another_folder(mydata, user_run, tmp_path, monkeypatch):
    """``data_root=arrow`` as typed in the folder the run was made in; ``evaluate`` run from elsewhere reads the data
    from there (provenance ``cwd``), and gives the recorded accuracy."""
    import shutil

    copy = tmp_path / "runs" / user_run.name
    shutil.copytree(user_run, copy, ignore=shutil.ignore_patterns(".lock*"))
    cfg = rundir.read_json(copy / "config.json")
    cfg["data_root"] = mydata.name                                       # relative, as typed in mydata.parent
    cfg[rundir.PROVENANCE][-1]["cwd"] = str(mydata.parent)
    rundir.write_json(copy / "config.json", cfg)
    monkeypatch.chdir(tmp_path)                                          # no ./arrow here
    out = evaluate_run(copy)
    assert out["accuracy"] == pytest.approx(out["recorded"]["accuracy"], abs=1e-9)
    moved = tmp_path / "moved"
    shutil.copytree(mydata, moved)
    assert evaluate_run(copy, overrides={"data_root": str(moved)})["accuracy"] == pytest.approx(out["accuracy"])


def rewrite_captions(arrow_dir, suffix: str) -> None:
    """The user fixes the captions of ``arrow_dir``'s dataset and writes it again (same images, same ids)."""
    from emmcil.data import read_arrow, write_arrow

    for path in sorted(arrow_dir.glob("mydata_*.arrow")):
        table = read_arrow(path)
        rows = [{**row, "text": [t + suffix for t in row["text"]]} for row in table.to_pylist()]
        metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        write_arrow(rows, path, metadata=metadata)


def test_a_run_refuses_to_resume_on_rewritten_data_and_evaluate_says_so(mydata, tmp_path):
    """No config key names the data (data_root is a path): the files' fingerprint does. The same files copied
    elsewhere resume; re-written captions stop the resume with a message naming the split, and evaluate shows no
    recorded accuracy for data the run was not made on."""
    import shutil

    copy = tmp_path / "arrow"
    shutil.copytree(mydata, copy)
    cfg = user_config(copy, tmp_path / "runs", stop_after_phase=0)
    run_dir = run_experiment(cfg)
    saved = rundir.read_json(run_dir / "class_order.json")["data_fingerprint"]
    moved = tmp_path / "moved"
    shutil.copytree(copy, moved)
    assert run_experiment({**cfg, "data_root": str(moved)}) == run_dir  # the same data elsewhere: resumes
    rewrite_captions(moved, " (fixed)")
    with pytest.raises(rundir.ConfigMismatchError, match=r"other data.*\n  train: .* \(saved\) != .*\n  test: "):
        run_experiment({**cfg, "data_root": str(moved), "stop_after_phase": -1})
    assert rundir.read_json(run_dir / "class_order.json")["data_fingerprint"] == saved  # nothing overwritten
    out = evaluate_run(run_dir, overrides={"data_root": str(moved)})
    assert out["recorded"] is None and out["data_changed"] == ["test", "train"]
    assert evaluate_run(run_dir, overrides={"data_root": str(copy)})["recorded"] is not None  # its own data


def test_the_report_keeps_runs_on_different_data_apart(tmp_path):
    """Two seeds of one config on the same data are one group; a run on re-written data is a row of its own."""
    from emmcil.report.collect import collect, summarize_groups
    from test_report import write_run

    for name, seed, fingerprint in [("a", 0, "1"), ("b", 1, "1"), ("c", 0, "2")]:
        path = write_run(tmp_path, name, seed=seed, last=50 + seed)
        results = json.loads((path / "results.json").read_text())
        results["data_fingerprint"] = {"train": fingerprint, "test": fingerprint}
        (path / "results.json").write_text(json.dumps(results))
    groups = summarize_groups(collect([str(tmp_path / "*")], log=lambda m: None))
    assert sorted(groups["n"]) == [1, 2] and all(label.startswith("replay [data=") for label in groups["label"])


def test_a_class_without_test_sample_stops_the_run_before_it_trains(tmp_path):
    """Classes of 2 and 1 images get no test sample (round(0.5) = round(0.25) = 0): written with
    --allow-incomplete-classes, a run refuses at its start, naming both classes and their phases. It used to train
    every phase and then crash building results.json (a None accuracy), on every re-run."""
    from emmcil.data.scenario import IncompleteClassesError

    records = mixed_image_folder(tmp_path / "photos", CLASSES, per_class=8)
    for cls, keep in (("harp", 2), ("zither", 1)):
        for f in sorted(os.listdir(tmp_path / "photos" / cls))[keep:]:
            (tmp_path / "photos" / cls / f).unlink()
    write_jsonl(tmp_path / "captions.jsonl", [r for r in records if (tmp_path / "photos" / r["path"]).exists()])
    write_folder(tmp_path / "photos", tmp_path / "captions.jsonl", tmp_path / "arrow", "mydata", test_fraction=0.25,
                 allow_incomplete_classes=True)
    cfg = user_config(tmp_path / "arrow", tmp_path / "runs", num_phases=4, class_order_seed=None)
    with pytest.raises(IncompleteClassesError) as err:
        run_experiment(cfg)
    message = str(err.value)
    assert "2 classes cannot be trained and scored:" in message
    assert "class 'harp' (label 2) of phase 2: no test sample (2 training, 0 test)" in message
    assert "class 'zither' (label 3) of phase 3: no test sample (1 training, 0 test)" in message
    assert "mydata_test.arrow" in message and "cello" not in message
    run_dir = tmp_path / "runs" / cfg["exp_name"]
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()
