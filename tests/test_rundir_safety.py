"""A run directory is a safe, self-checking record: no code runs from what it loads, a checkpoint says whose it is,
unreadable files stop the run (or are moved aside) instead of being overwritten, a full disk says so, and a run
directory copied elsewhere resumes while a copy with a foreign checkpoint or changed data is refused."""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emmcil import atomic
from emmcil.data import read_arrow, write_arrow
from emmcil.engine import rundir
from emmcil.engine.driver import run_experiment
from emmcil.engine.evaluate import main as evaluate_main
from emmcil.methods import METHODS
from emmcil.stops import STOPPED_EXIT_CODE
from run_helpers import SMALL, demo_config, one_thread, resolve, settings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
# the two methods whose demo run needs more than the SMALL defaults
METHOD_KEYS = {"dualprompt": dict(num_layers=2, dualprompt_g_layers=[0], dualprompt_e_layers=[1]),
               "rebq": dict(missing_type="both")}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def runs(demo_root, tmp_path_factory):
    """A finished 2-phase run of every method (at the SMALL size, a few seconds each)."""
    logs = tmp_path_factory.mktemp("runs")
    return {m: run_experiment(demo_config(demo_root, logs, m, **METHOD_KEYS.get(m, {}))) for m in sorted(METHODS)}


def copy_run(run_dir: Path, where: Path) -> Path:
    return Path(shutil.copytree(run_dir, where / run_dir.name, ignore=shutil.ignore_patterns(".lock*")))


# ---------------------------------------------------------------- no code runs from a run directory
def test_every_methods_checkpoint_loads_as_tensors_and_plain_containers(runs):
    """Each method's checkpoint loads with torch.load(weights_only=True), and says whose it is."""
    for method, run_dir in runs.items():
        state = torch.load(run_dir / "checkpoints" / "phase_1.pt", map_location="cpu", weights_only=True)
        identity = state["identity"]
        assert state["format"] == rundir.CHECKPOINT_FORMAT and state["phase"] == 1, method
        assert identity["method"] == method and identity["results_config"]["method"] == method
        saved = rundir.saved_settings(rundir.read_json(run_dir / "config.json"))
        assert identity["results_config_hash"] == rundir.config_hash(saved)
        assert identity["data_fingerprint"] == json.loads((run_dir / "results.json").read_text())["data_fingerprint"]


def test_a_crafted_checkpoint_runs_no_code(tmp_path, runs, demo_root):
    """A phase file that pickles an object is refused unloaded (weights_only=True), by resume and by evaluate."""
    marker = tmp_path / "CODE_RAN"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    run_dir = copy_run(runs["finetune"], tmp_path / "copy")
    crafted = run_dir / "checkpoints" / "phase_1.pt"
    torch.save({"phase": 1, "complete": True, "x": Payload()}, crafted)
    with pytest.raises(rundir.UnreadableCheckpointError, match="objects other than tensors"):
        rundir.RunDir(run_dir).load_checkpoint(1)
    assert evaluate_main([str(run_dir)]) == 1
    assert not marker.exists()
    # resuming goes back to the readable phase before, and keeps the crafted file aside instead of overwriting it
    cfg = rundir.read_json(run_dir / "config.json")
    run_experiment({**cfg, "log_dir": str(run_dir.parent), "data_root": str(demo_root)})
    assert not marker.exists() and json.loads((run_dir / "results.json").read_text())["finished"]
    (aside,) = (run_dir / "checkpoints").glob("phase_1.pt.unreadable-*[0-9]")
    assert "objects other than tensors" in Path(f"{aside}.txt").read_text()


CRAFTED = {
    "json_reduce": ("c.json", '{"seed": {"py/reduce": [{"py/function": "builtins.exec"}, '
                              '{"py/tuple": ["open(%(marker)r, \'w\')"]}]}}'),
    "json_object_in_a_list": ("c.json", '{"train_splits": ["train", {"py/object": "pathlib.Path"}]}'),
    "json_function": ("c.json", '{"lr": {"py/function": "os.system"}}'),
    "yaml_python_tag": ("c.yaml", "seed: !!python/object/apply:builtins.exec [\"open(%(marker)r, 'w')\"]\n"),
    "yml_python_name": ("c.yml", "seed: !!python/name:os.system\n"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_config_file_is_refused_before_it_runs_code(tmp_path, case):
    """``run.py with FILE``: JSON and YAML are read as plain data; what would build a Python object is refused."""
    from sacred.utils import ConfigError

    from emmcil.config import ex
    from sacred.initialize import create_run

    marker = tmp_path / "CODE_RAN"
    name, text = CRAFTED[case]
    path = tmp_path / name
    path.write_text(text % {"marker": str(marker)})
    with pytest.raises(ConfigError, match=str(path)):
        create_run(ex, "print_config", named_configs=["demo", str(path)])
    assert not marker.exists()


def test_a_pickle_config_file_is_refused_and_plain_files_are_read(tmp_path):
    import pickle

    from sacred.utils import ConfigError


    marker = tmp_path / "CODE_RAN"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w')",)

    (tmp_path / "c.pickle").write_bytes(pickle.dumps({"seed": Payload()}))
    with pytest.raises(ConfigError, match="pickle format are refused"):
        resolve("demo", str(tmp_path / "c.pickle"))
    assert not marker.exists()
    (tmp_path / "ok.json").write_text('{"lr": 0.05, "train_splits": ["train"]}')
    (tmp_path / "ok.yaml").write_text("seed: 3\nmax_epoch: 2\n")
    cfg = resolve("demo", str(tmp_path / "ok.json"), str(tmp_path / "ok.yaml"))
    assert (cfg["lr"], cfg["seed"], cfg["max_epoch"]) == (0.05, 3, 2)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="one object of key: value entries"):
        resolve("demo", str(tmp_path / "list.json"))


# ---------------------------------------------------------------- every checkpoint says whose it is
def identity(**changes) -> dict:
    cfg = {**resolve("demo", changes.get("method", "replay")), "lr": 0.01, "hidden_size": 32, "seed": 0, **changes}
    return rundir.checkpoint_identity(settings(cfg), {"train": "a" * 32, "test": "b" * 32})


@pytest.mark.parametrize("changed, expected", [
    (dict(method="emm"), "method: 'replay' (checkpoint) != 'emm' (this run)"),
    (dict(lr=0.05), "lr: 0.01 (checkpoint) != 0.05 (this run)"),
    (dict(hidden_size=768), "hidden_size: 32 (checkpoint) != 768 (this run)"),  # another model size
])
def test_a_checkpoint_of_another_run_is_refused_naming_the_file_and_what_differs(tmp_path, changed, expected):
    run = rundir.RunDir(tmp_path / "r").open(settings(resolve("demo", "replay")))
    run.save_checkpoint(0, {"x": 1}, identity())
    assert run.load_checkpoint(0, identity())["x"] == 1
    with pytest.raises(rundir.CheckpointMismatchError) as err:
        run.latest_checkpoint(identity(**changed))
    assert str(run.checkpoint_path(0)) in str(err.value) and expected in str(err.value)
    assert run.finished_phases() == [0]  # refused, not moved or overwritten


def test_a_checkpoint_of_other_data_or_of_an_older_format_is_refused(tmp_path):
    run = rundir.RunDir(tmp_path / "r").open(settings())
    run.save_checkpoint(0, {}, identity())
    other = {**identity(), "data_fingerprint": {"train": "a" * 32, "test": "c" * 32}}
    with pytest.raises(rundir.CheckpointMismatchError, match="the test files' fingerprint b+ \\(checkpoint\\)"):
        run.load_checkpoint(0, other)
    torch.save({"phase": 1, "complete": True}, run.checkpoint_path(1))  # as an older emmcil wrote them
    with pytest.raises(rundir.CheckpointMismatchError, match="format 1, written by an older emmcil"):
        run.load_checkpoint(1, identity())


def test_a_model_of_another_size_is_named_not_a_size_mismatch_traceback(runs, demo_root, tmp_path):
    """Even where the config cannot tell (the same keys), restore() names the file and the shapes."""
    from emmcil.engine.driver import IncrementalRun

    state = rundir.RunDir(runs["finetune"]).load_checkpoint(1)
    cfg = {**rundir.read_json(runs["finetune"] / "config.json"), "log_dir": str(tmp_path), "hidden_size": 64,
           "data_root": str(demo_root)}
    run = IncrementalRun(cfg, read_only=True)
    with pytest.raises(rundir.CheckpointMismatchError, match=r"phase_1.pt holds weights of another model size:\n  "):
        run.restore(state)


# ---------------------------------------------------------------- never start over on top of earlier work
def test_unreadable_checkpoints_stop_the_run_and_are_left_as_they_are(tmp_path):
    run = rundir.RunDir(tmp_path / "r").open(settings())
    for phase in (0, 1):
        run.save_checkpoint(phase, {}, identity())
        data = run.checkpoint_path(phase).read_bytes()
        run.checkpoint_path(phase).write_bytes(data[: len(data) // 2])  # a copy cut short
    before = {p: p.read_bytes() for p in run.checkpoint_dir.iterdir()}
    with pytest.raises(rundir.UnreadableCheckpointError) as err:
        run.latest_checkpoint(identity())
    message = str(err.value)
    assert "no checkpoint of this run can be read" in message and "restart=True" in message
    assert all(str(p) in message for p in before) and err.value.paths == [run.checkpoint_path(0),
                                                                         run.checkpoint_path(1)]
    assert {p: p.read_bytes() for p in run.checkpoint_dir.iterdir()} == before


def test_unreadable_run_files_are_moved_aside_and_named(tmp_path, capsys):
    run = rundir.RunDir(tmp_path / "r").open(settings(lr=0.1), data_fingerprint={"train": "a" * 32})
    run.save_checkpoint(0, {}, identity())
    for name in ("config.json", "class_order.json", "results.json"):
        (run.path / name).write_text('{"lr": 0.1, "broken')
    with pytest.raises(rundir.UnreadableFileError, match=r"config.json cannot be read: it is not valid JSON"):
        run.config()
    run.open(settings(lr=0.1), data_fingerprint={"train": "a" * 32})
    out = capsys.readouterr().out
    for name in ("config.json", "class_order.json", "results.json"):
        assert f"{run.path / name} cannot be read" in out
        (aside,) = run.path.glob(f"{name}.unreadable-*[0-9]")
        assert aside.read_text() == '{"lr": 0.1, "broken'  # kept as it was, with a note beside it
    assert run.config() == settings(lr=0.1).to_config()


def test_a_full_disk_says_so_on_the_last_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    run = rundir.RunDir(tmp_path / "r").open(settings())
    run.save_checkpoint(0, {"w": torch.zeros(4)})
    before = run.checkpoint_path(0).read_bytes()
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    with pytest.raises(atomic.DiskFullError) as err:  # torch's zip writer fails with an error of its own
        run.save_checkpoint(0, {"w": torch.randn(1000)})
    assert str(err.value).startswith(f"No space left on device: {run.checkpoint_path(0)}")
    monkeypatch.undo()
    assert run.checkpoint_path(0).read_bytes() == before and [p.name for p in run.checkpoint_dir.iterdir()] == [
        "phase_0.pt"]


# ---------------------------------------------------------------- evaluate
def test_evaluate_names_a_truncated_or_foreign_checkpoint(runs, tmp_path, capsys):
    run_dir = copy_run(runs["replay"], tmp_path / "cut")
    last = run_dir / "checkpoints" / "phase_1.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert evaluate_main([str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert f"error: {last} cannot be read" in err and "--phase 0" in err and "Traceback" not in err
    foreign = copy_run(runs["emm"], tmp_path / "foreign")
    shutil.copy(runs["replay"] / "checkpoints" / "phase_1.pt", foreign / "checkpoints" / "phase_1.pt")
    assert evaluate_main([str(foreign)]) == 1
    assert "method: 'replay' (checkpoint) != 'emm' (this run)" in capsys.readouterr().err


# ---------------------------------------------------------------- a run directory moved, shared, tampered with
def test_a_copied_run_resumes_elsewhere_with_other_cores_and_a_tampered_copy_is_refused(demo_root, tmp_path):
    """The acceptance case: a run stopped after phase 0, its directory copied to another path and resumed there by a
    process with another core count (one core; two threads and two loader workers asked for): it resumes. A copy
    holding another run's checkpoint, or resumed on changed data, is refused with the reason."""
    log = tmp_path / "machine_a"
    cfg = demo_config(demo_root, log, "replay", num_phases=3, stop_after_phase=0, num_threads=1)
    run_dir = run_experiment(cfg)
    other = run_experiment(demo_config(demo_root, tmp_path / "other", "finetune", num_phases=3, stop_after_phase=0))

    moved = copy_run(run_dir, tmp_path / "machine_b")
    args = [f"{k}={v}" for k, v in dict(SMALL, num_phases=3, data_root=demo_root, log_dir=moved.parent,
                                         num_threads=2, num_workers=2).items()]
    code = (f"import os, runpy, sys; os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}}); "  # one core
            f"sys.argv = ['run.py', 'with', 'demo', 'replay', *{args!r}]; "
            f"runpy.run_path('run.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming {moved} after phase 0 (1/3 phases done)" in proc.stdout
    results = json.loads((moved / "results.json").read_text())
    assert results["finished"] and results["accuracy_matrix"][0] == json.loads(
        (run_dir / "results.json").read_text())["accuracy_matrix"][0]

    foreign = copy_run(run_dir, tmp_path / "foreign")
    shutil.copy(other / "checkpoints" / "phase_0.pt", foreign / "checkpoints" / "phase_0.pt")
    with pytest.raises(rundir.CheckpointMismatchError, match="method: 'finetune' \\(checkpoint\\) != 'replay'"):
        run_experiment({**cfg, "log_dir": str(foreign.parent), "stop_after_phase": -1})

    changed = tmp_path / "changed_data"
    shutil.copytree(demo_root, changed)
    path = changed / "demo_train.arrow"
    table = read_arrow(path)
    rows = table.to_pylist()
    rows[0]["image"] = rows[1]["image"]  # one picture changed
    write_arrow(rows, path, metadata={k.decode(): v.decode() for k, v in table.schema.metadata.items()},
                extra_fields=[table.schema.field("box")])
    tampered = copy_run(run_dir, tmp_path / "tampered")
    for name in ("class_order.json", "results.json"):  # the check does not rest on one file
        (tampered / name).unlink()
    with pytest.raises(rundir.ConfigMismatchError, match=r"other data.*\n  train: .* \(saved\) != "):
        run_experiment({**cfg, "log_dir": str(tampered.parent), "data_root": str(changed), "stop_after_phase": -1})
    (tampered / "config.json").unlink()  # the checkpoint alone still knows its data
    with pytest.raises(rundir.CheckpointMismatchError, match="data: the train files' fingerprint"):
        run_experiment({**cfg, "log_dir": str(tampered.parent), "data_root": str(changed), "stop_after_phase": -1})
    assert rundir.RunDir(tampered).finished_phases() == [0]


# ---------------------------------------------------------------- stops are stops
def test_a_signal_in_any_pass_is_a_stop_and_a_deferred_block_finishes_first():
    """Inside stoppable(), SIGTERM / SIGINT raise Stopped (no `except Exception` swallows it) wherever the main
    thread is; inside deferred() the stop waits for the block's end; the previous handlers come back."""
    import signal

    from emmcil import stops

    before = signal.getsignal(signal.SIGTERM)
    for signum in (signal.SIGTERM, signal.SIGINT):
        with stops.stoppable():
            with pytest.raises(stops.Stopped) as err:
                try:
                    os.kill(os.getpid(), signum)
                    for _ in range(10**7):  # a herding or writer loop: the handler runs between bytecodes
                        pass
                except Exception:  # noqa: BLE001 - what a stop must pass through
                    pytest.fail("Stopped was caught as an Exception")
            assert err.value.signum == signum
        with stops.stoppable():
            saved = []
            with pytest.raises(stops.Stopped):
                with stops.deferred():
                    os.kill(os.getpid(), signum)
                    for _ in range(10**5):
                        pass
                    saved.append("checkpoint")  # the block ran to its end
            assert saved == ["checkpoint"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_after_a_stop_the_errors_it_causes_are_the_stop():
    """A DataLoader worker killed by the same signal (the whole process group got it) is the stop, not a crash."""
    import signal

    from emmcil import stops

    worker = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")
    assert stops.stop_of(worker).signum == signal.SIGTERM
    wrapped = RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")
    wrapped.__context__ = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Interrupt. ")
    assert stops.stop_of(wrapped).signum == signal.SIGINT
    with stops.stoppable():
        assert stops.stop_of(ValueError("a bug")) is None
        with pytest.raises(stops.Stopped):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**7):
                pass
        assert stops.stop_of(RuntimeError("DataLoader worker (pid(s) 1) exited unexpectedly")).signum == \
            signal.SIGTERM


def test_a_stop_in_an_evaluation_pass_stops_the_run(demo_root, tmp_path):
    """Lightning's own SIGTERM handling only sets a flag that its predict loop never reads: the stop is ours."""
    import signal

    from emmcil import stops
    from emmcil.engine.driver import IncrementalRun

    run = IncrementalRun(demo_config(demo_root, tmp_path, "finetune"))
    run.module.add_classes(5)
    run.trainer = run.make_trainer(0)

    def step(backbone, batch):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the pass runs
        return {"n": batch["labels"]}

    with stops.stoppable(), pytest.raises(stops.Stopped):
        run.predict(run.data.scenario.test_dataset(0), step=step)


def test_the_commands_exit_with_the_stopped_status(monkeypatch, tmp_path, capsys):
    """evaluate, the writers and the captioner: a signal ends them with STOPPED_EXIT_CODE and a word on what was
    kept, not with a traceback or the status of a failure."""
    import signal

    from emmcil.data import captions, write_folder
    from emmcil.engine import evaluate

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**7):
            pass

    monkeypatch.setattr(evaluate, "evaluate_run", stopped)
    assert evaluate.main([str(tmp_path)]) == STOPPED_EXIT_CODE
    assert "nothing was written" in capsys.readouterr().err
    monkeypatch.setattr(write_folder, "write_folder", stopped)
    with pytest.raises(SystemExit) as e:
        write_folder.main(["--root", "r", "--captions", "c", "--out", str(tmp_path), "--name", "x"])
    assert e.value.code == STOPPED_EXIT_CODE and "nothing of this write was kept" in capsys.readouterr().err
    monkeypatch.setattr(captions, "caption_folder", stopped)
    with pytest.raises(SystemExit) as e:
        captions.main(["--images", "i", "--model", "m", "--out", str(tmp_path / "c.jsonl"), "--device", "cpu"])
    assert e.value.code == STOPPED_EXIT_CODE and "0 captions are in" in capsys.readouterr().err


def test_sigterm_to_the_process_group_with_loader_workers_is_a_clean_stop(demo_root, tmp_path):
    """`kill -TERM -<pgid>` (a scheduler stopping the job) reaches the DataLoader workers too: the run still stops
    cleanly, says where re-running resumes, and exits with STOPPED_EXIT_CODE."""
    import signal
    import time

    args = [f"{k}={v}" for k, v in dict(SMALL, data_root=demo_root, log_dir=tmp_path, exp_name="stopped",
                                         num_workers=2, max_epoch=100000, limit_train_batches=1.0).items()]
    proc = subprocess.Popen([sys.executable, "run.py", "with", "demo", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("phase 0 of 2"):  # training, with its workers
                break
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == STOPPED_EXIT_CODE, err[-3000:]
    assert f"stopped: re-run the same command to resume from its start; run directory {tmp_path / 'stopped'}" in err
    assert "Traceback" not in err


def test_restart_deletes_a_run_directory_only(tmp_path):
    """restart=True with an exp_name or log_dir that points at another folder (exp_name=., a folder of runs, a
    folder of one's own files) deletes nothing and says why; a run directory is cleared as before."""
    runs = tmp_path / "runs"
    (runs / "precious_run").mkdir(parents=True)
    (runs / "precious_run" / "config.json").write_text("{}")
    (runs / "notes.txt").write_text("mine")
    with pytest.raises(rundir.NotARunDirectoryError, match="holds other runs \\(precious_run\\)"):
        rundir.RunDir(runs).open(settings(), restart=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    with pytest.raises(rundir.NotARunDirectoryError, match="holds no config.json or checkpoints/"):
        rundir.RunDir(mine).open(settings(), restart=True)
    assert (runs / "notes.txt").is_file() and (runs / "precious_run" / "config.json").is_file()
    assert (mine / "thesis.tex").is_file()
    run = rundir.RunDir(tmp_path / "r").open(settings())
    run.save_checkpoint(0, {})
    (run.path / "fig4_phase0.png").write_bytes(b"png")
    run.open(settings(lr=0.5), restart=True)
    assert run.finished_phases() == [] and not (run.path / "fig4_phase0.png").exists()


def test_a_saved_config_of_a_method_this_version_lacks_is_named(tmp_path, capsys):
    run = rundir.RunDir(tmp_path / "r").open(settings())
    run.save_checkpoint(0, {})
    rundir.write_json(run.config_path, {**rundir.read_json(run.config_path), "method": "oldmethod"})
    with pytest.raises(rundir.ConfigMismatchError, match=r"method: 'oldmethod' \(saved\) != 'finetune' \(now\)"):
        run.open(settings())
    assert evaluate_main([str(run.path)]) == 1  # a message naming config.json, not a KeyError traceback
    err = capsys.readouterr().err
    assert f"{run.config_path}: method 'oldmethod' is not registered" in err and "Traceback" not in err
