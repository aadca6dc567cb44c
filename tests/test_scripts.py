"""scripts/table_*.sh, ablation_*.sh, demo_figures.sh, slurm/table.sbatch: every dry run resolves its configs (sacred
print_config) and prints the right commands; a bad key fails; the run directories of all scripts are distinct; the
SLURM wrapper maps the allocation onto devices / num_nodes / srun and requeues the job on its signal.

The dry runs start Python (torch, Lightning, sacred) once each, so they run side by side in one fixture."""
import fnmatch
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
VARIABLES = {"DATA_ROOT", "CKPT", "GPUS", "PRECISION", "SEEDS", "LOG_DIR", "EXTRA", "TAG", "DRY_RUN", "KEEP_GOING",
             "REPORT", "REPORT_DIR", "VERBOSE", "METHODS", "PHASES", "MEMORY_SIZES", "DATASET", "TAU_IMAGE",
             "TAU_TEXT", "METHOD", "VARIANTS", "SWEEP_METHODS", "SWEEP_SIZES", "DEMO_EPOCHS", "NODES", "LAUNCHER",
             "BROWSER_PNG"}
SLURM = {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_PER_NODE": "h100:4"}

CASES = {
    "table_mm": ("table_mm_imagenet_r.sh", {"SEEDS": "0 1"}),
    "table_food": ("table_food101.sh", {"SEEDS": "0", "TAG": "lr3", "EXTRA": "lr=0.001 per_gpu_batchsize=16"}),
    "memory": ("ablation_memory.sh", {"SEEDS": "0 1"}),
    "thresholds": ("ablation_thresholds.sh", {"SEEDS": "0"}),
    "augmentation": ("ablation_augmentation.sh", {"SEEDS": "0 1", "GPUS": "4"}),
    "demo": ("demo_figures.sh", {}),
    "bad_key": ("table_food101.sh", {"SEEDS": "0", "METHODS": "replay", "PHASES": "5", "EXTRA": "no_such_key=1"}),
    "digit_tag": ("table_food101.sh", {"SEEDS": "0", "METHODS": "replay", "PHASES": "5", "TAG": "2024_01"}),
    # the SLURM wrapper around a table script: 2 nodes x 4 GPUs
    "slurm": ("slurm/table.sbatch", {"SEEDS": "0", "METHODS": "replay emm", "PHASES": "10", **SLURM}),
}
ARGS = {"slurm": [str(SCRIPTS / "table_mm_imagenet_r.sh")]}


def script_env(**env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("SLURM_")}
    return {**base, "PYTHON": sys.executable, **env}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwd")  # not the repository: run.py is then named by its absolute path
    procs = {name: subprocess.Popen(["bash", str(SCRIPTS / script), *ARGS.get(name, [])], cwd=cwd, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=script_env(DRY_RUN="1", **env))
             for name, (script, env) in CASES.items()}
    done = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=240)
        done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return done


def commands(out: str) -> list[list[str]]:
    """The argv of every printed command (dry-run stdout: one shell-quoted command a line, comments start with #)."""
    return [shlex.split(line) for line in out.splitlines() if line.strip() and not line.startswith("#")]


def runs_and_report(result, launcher: tuple[str, ...] = ()) -> tuple[list[dict], list[str]]:
    """(one dict per run command: named configs, key=value updates; the report command's argv). Every run command
    must start with ``launcher`` (LAUNCHER), then ``python run.py with``."""
    assert result.returncode == 0, result.stderr
    *runs, report = commands(result.stdout)
    parsed = []
    for argv in runs:
        assert tuple(argv[:len(launcher)]) == launcher, argv
        argv = argv[len(launcher):]
        assert Path(argv[1]).name == "run.py" and argv[2] == "with", argv
        named = [a for a in argv[3:] if "=" not in a]
        updates = dict(a.split("=", 1) for a in argv[3:] if "=" in a)
        parsed.append({"named": named, **updates})
    assert report[1:3] == ["-m", "emmcil.report"] and "--out" in report, report
    n_resolved = sum(line.startswith("# resolved ") for line in result.stdout.splitlines())
    assert n_resolved == len(parsed), result.stdout  # every command's config was resolved by sacred
    return parsed, report


def test_table_mm_imagenet_r(dry_runs):
    runs, report = runs_and_report(dry_runs["table_mm"])
    methods = ("finetune", "joint", "l2p", "dualprompt", "ease", "replay", "mrdc", "cim", "emm")
    assert len(runs) == len(methods) * 3 * 2  # methods x L x seeds
    expected = {(m, L, s) for m in methods for L in (5, 10, 20) for s in (0, 1)}
    assert {(r["named"][2], int(r["named"][1].split("_")[1]), int(r["seed"])) for r in runs} == expected
    for r in runs:
        method, L = r["named"][2], r["named"][1].split("_")[1]
        assert r["named"][0] == "mm_imagenet_r" and r["named"][1] == f"phases_{L}"
        assert r["exp_name"] == f"table_mm_imagenet_r_L{L}_{method}_seed{r['seed']}"
        assert "exp_tag" not in r  # the main table's runs are untagged
        assert r["data_root"] == "data/arrow" and r["load_path"] == "checkpoints/vilt_200k_mlm_itm.ckpt"
        assert (r["accelerator"], r["devices"], r["precision"], r["log_dir"]) == ("gpu", "1", "16-mixed", "runs")
        assert "strategy" not in r
    assert report[3:] == ["runs/table_mm_imagenet_r_*", "--out", "reports/table_mm_imagenet_r"]
    assert all(fnmatch.fnmatch(r["exp_name"], "table_mm_imagenet_r_*") for r in runs)
    assert "not found (fine for a dry run)" in dry_runs["table_mm"].stderr


def test_table_food101_with_tag_and_extra(dry_runs):
    runs, report = runs_and_report(dry_runs["table_food"])
    assert len(runs) == 9 * 3
    for r in runs:
        assert r["named"][0] == "food101"
        assert r["exp_name"].startswith("table_food101_L") and r["exp_name"].endswith("_seed0_lr3")
        assert r["exp_tag"] == "lr3" and r["lr"] == "0.001" and r["per_gpu_batchsize"] == "16"
    assert "# resolved runs/table_food101_L20_emm_seed0_lr3:" in dry_runs["table_food"].stdout


def test_a_tag_of_digits_stays_text(dry_runs):
    """TAG=2024_01 is the tag "2024_01" in the run's exp_tag and name (sacred alone reads it as the int 202401)."""
    runs, _ = runs_and_report(dry_runs["digit_tag"])
    assert [(r["exp_name"], r["exp_tag"]) for r in runs] == [("table_food101_L5_replay_seed0_2024_01", "2024_01")]
    assert "exp_tag=2024_01 " in dry_runs["digit_tag"].stdout  # as resolved by sacred, through run.py's own rule


def test_ablation_memory(dry_runs):
    runs, report = runs_and_report(dry_runs["memory"])
    assert len(runs) == 4 * 5 * 2
    got = {(r["named"][2], int(r["memory_per_class"]), int(r["seed"])) for r in runs}
    assert got == {(m, k, s) for m in ("replay", "mrdc", "cim", "emm") for k in (1, 3, 5, 7, 10) for s in (0, 1)}
    for r in runs:
        assert r["named"][:2] == ["mm_imagenet_r", "phases_10"] and r["exp_tag"] == "abl_mem"
        assert r["exp_name"] == f"abl_mem_mm_imagenet_r_L10_{r['named'][2]}_m{r['memory_per_class']}_seed{r['seed']}"
    assert report[3] == "runs/abl_mem_mm_imagenet_r_*"


def test_ablation_thresholds(dry_runs):
    runs, _ = runs_and_report(dry_runs["thresholds"])
    grid = {(float(r["tau_image"]), float(r["tau_text"])) for r in runs}
    assert grid == {(a, b) for a in (0.64, 0.74, 0.84) for b in (0.3, 0.5, 0.7)} and len(runs) == 9
    for r in runs:
        assert r["named"] == ["mm_imagenet_r", "phases_10", "emm"] and r["exp_tag"] == "abl_tau"
        assert r["exp_name"] == f"abl_tau_mm_imagenet_r_L10_emm_tauI{r['tau_image']}_tauT{r['tau_text']}_seed0"


def test_ablation_augmentation_on_four_gpus(dry_runs):
    runs, _ = runs_and_report(dry_runs["augmentation"])
    assert sorted((r["named"][2], r["seed"]) for r in runs) == [("emm", "0"), ("emm", "1"), ("emm_no_aug", "0"),
                                                               ("emm_no_aug", "1")]
    for r in runs:
        assert r["exp_tag"] == "abl_aug"
        assert r["exp_name"] == f"abl_aug_mm_imagenet_r_L10_{r['named'][2]}_seed{r['seed']}"
        assert (r["devices"], r["strategy"]) == ("4", "ddp")
    # the resolved config shows what the named config did
    assert "method=emm num_phases=10 seed=0 memory_per_class=5 tau_image=0.74 tau_text=0.5 aug_text_swap=0.0" in \
        dry_runs["augmentation"].stdout


def test_demo_figures(dry_runs):
    runs, report = runs_and_report(dry_runs["demo"])
    assert [(r["named"], r.get("memory_per_class")) for r in runs] == [
        (["demo", m], None) for m in ("finetune", "replay", "mrdc", "cim", "emm")] + [
        (["demo", m], k) for m in ("replay", "mrdc", "cim", "emm") for k in ("1", "3")]
    for r in runs:
        assert (r["accelerator"], r["seed"]) == ("cpu", "0")
        # each method's own recipe: a shortened schedule would label every row of the report [max_epoch=k]
        assert "data_root" not in r and "load_path" not in r and "max_epoch" not in r
    assert report[3].endswith("/demo_*") and report[4:6] == ["--out", "fig"]
    assert report[6] == "--note" and "20 epochs a phase" in report[7]
    assert len({r["exp_name"] for r in runs}) == len(runs)
    # then the memory browser of emm beside replay at the default memory, and its screenshot into fig/
    then = [shlex.split(line.removeprefix("# then: ")) for line in dry_runs["demo"].stdout.splitlines()
            if line.startswith("# then: ")]
    log_dir = report[3].rsplit("/", 1)[0]
    assert then[0][1:3] == ["-m", "emmcil.report.memory"] and then[0][3:5] == [
        f"{log_dir}/demo_emm_seed0", f"{log_dir}/demo_replay_seed0"] and then[0][5] == "--out"
    assert then[1][1].endswith("scripts/screenshot.sh") and then[1][2] == f"{then[0][6]}/phase_4.html"
    assert then[1][3] == "fig/memory_browser.png"


def test_bad_key_fails_the_dry_run(dry_runs):
    result = dry_runs["bad_key"]
    assert result.returncode == 1
    assert "no_such_key" in result.stderr and "does not resolve" in result.stderr
    assert not commands(result.stdout)  # nothing printed to run


def test_no_two_runs_share_a_run_directory(dry_runs):
    names = [r["exp_name"] for case in ("table_mm", "memory", "thresholds", "augmentation")
             for r in runs_and_report(dry_runs[case])[0]]
    assert len(names) == len(set(names))


def test_a_real_run_stops_before_training_without_data(tmp_path):
    result = subprocess.run(["bash", str(SCRIPTS / "ablation_augmentation.sh")], cwd=tmp_path, text=True,
                            capture_output=True, env=script_env(DATA_ROOT=str(tmp_path / "none"), SEEDS="0"),
                            timeout=60)
    assert result.returncode == 1
    assert "error: not found:" in result.stderr and "mm_imagenet_r_train.arrow" in result.stderr
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- SLURM (scripts/slurm/table.sbatch)
def test_slurm_runs_each_table_run_on_all_nodes_through_srun(dry_runs):
    result = dry_runs["slurm"]
    runs, report = runs_and_report(result, launcher=("srun", "--kill-on-bad-exit=1"))
    assert sorted((r["named"][2], r["seed"]) for r in runs) == [("emm", "0"), ("replay", "0")]
    for r in runs:  # G = --ntasks-per-node GPUs per node, N = the job's nodes: Lightning's devices / num_nodes
        assert (r["devices"], r["num_nodes"], r["strategy"], r["accelerator"]) == ("4", "2", "ddp", "gpu")
        assert r["named"][:2] == ["mm_imagenet_r", "phases_10"]
        assert r["exp_name"] == f"table_mm_imagenet_r_L10_{r['named'][2]}_seed0"  # the table's own run directories
    assert report[:3] == [sys.executable, "-m", "emmcil.report"]  # resolution and report: once, without srun
    assert "on 2 node(s) x 4 GPU(s)" in result.stdout and "num_nodes=2" in result.stdout


@pytest.mark.parametrize("env,message", [
    ({}, "not inside a SLURM job"),
    ({"SLURM_JOB_NUM_NODES": "1"}, "no --ntasks-per-node"),
    ({**SLURM, "SLURM_GPUS_PER_NODE": "8"}, "--ntasks-per-node=4 but --gpus-per-node=8: one task per GPU"),
])
def test_slurm_refuses_an_allocation_without_one_task_per_gpu(tmp_path, env, message):
    result = subprocess.run(["bash", str(SCRIPTS / "slurm" / "table.sbatch"), str(SCRIPTS / "table_food101.sh")],
                            cwd=tmp_path, text=True, capture_output=True, env=script_env(DRY_RUN="1", **env),
                            timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert not commands(result.stdout)


def test_slurm_requeues_the_job_on_its_signal_and_keeps_waiting(tmp_path):
    """USR1 (--signal=B:USR1@300) makes the batch shell call `scontrol requeue <job>` while the experiment script
    runs on; SLURM then stops the job and starts it again, and the runs resume (run.py's run directories)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    experiment = tmp_path / "experiment.sh"  # stands in for a table script: records what the wrapper set, then runs
    experiment.write_text('echo "GPUS=$GPUS NODES=$NODES LAUNCHER=$LAUNCHER SRUN_CPUS_PER_TASK=$SRUN_CPUS_PER_TASK"\n'
                          'echo started > started\nsleep 60\n')
    env = script_env(**SLURM, SLURM_JOB_ID="4242", SLURM_CPUS_PER_TASK="10", PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = subprocess.Popen(["bash", str(SCRIPTS / "slurm" / "table.sbatch"), str(experiment)], cwd=tmp_path,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "started").exists()
        proc.send_signal(signal.SIGUSR1)
        while not (tmp_path / "scontrol.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
        assert proc.poll() is None  # still waiting for the experiment script: SLURM, not the trap, ends the job
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert "GPUS=4 NODES=2 LAUNCHER=srun --kill-on-bad-exit=1 SRUN_CPUS_PER_TASK=10" in out
    assert "requeueing job 4242" in err


def test_a_stopped_run_stops_the_script_with_the_stopped_status(tmp_path):
    """run.py exits with 75 (emmcil.stops.STOPPED_EXIT_CODE) when a signal stopped it: the experiment script stops
    there with 75 too, even with KEEP_GOING=1 (neither "done" nor "failed": running it again resumes), and runs no
    later run and no report. A run killed by SIGTERM before it could say so (143) counts as stopped as well."""
    launcher = tmp_path / "launcher.sh"  # stands in for srun: records the run, which then "is stopped"
    launcher.write_text(f'echo "$@" >> {tmp_path / "launched.log"}\nexit "$STATUS"\n')
    for status in ("75", "143"):
        (tmp_path / "launched.log").unlink(missing_ok=True)
        result = subprocess.run(["bash", str(SCRIPTS / "demo_figures.sh")], cwd=tmp_path, text=True,
                                capture_output=True, timeout=240,
                                env=script_env(LAUNCHER=f"bash {launcher}", STATUS=status, KEEP_GOING="1",
                                               METHODS="finetune", SWEEP_METHODS="replay", SWEEP_SIZES="1",
                                               SEEDS="0",
                                               LOG_DIR=str(tmp_path / "runs"), REPORT_DIR=str(tmp_path / "rep")))
        assert result.returncode == 75, result.stderr[-2000:]
        assert len((tmp_path / "launched.log").read_text().splitlines()) == 1  # the second run never started
        assert f"stopped: run 1 of 2 was stopped (exit status {status}); run this script again" in result.stderr
        assert not (tmp_path / "rep").exists()
