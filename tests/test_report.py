"""python -m emmcil.report: tables (mean ± std over seeds, the paper's numbers beside ours), ablation tables, both
figures, and clear errors, on fake but well-formed run directories with known numbers (their results.json written
by the driver's own build_results); the report reads runs without torch or the method registry."""
import functools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import assert_print_figure
from emmcil.engine.results import METRIC_NOTES, build_results
from emmcil.methods import method_config_defaults
from emmcil.report import (GENERAL_DEFAULTS, MISSING_DEFAULTS, PAPER_MEMORY, PAPER_TABLE, ReportError, build_report,
                           collect, find_results, summarize_groups)
from emmcil.report.__main__ import main
from emmcil.methods.recipes import method_recipe
from run_helpers import report_in_a_fresh_process, resolve, settings

CLASSES_PER_PHASE, TEST_PER_CLASS = 2, 10

# config.json keys a run directory holds (the subset the report reads, with config.py's defaults)
BASE_CONFIG = dict(memory_per_class=5, memory_unit="tokens", memory_budget_mode="per_class", memory_total=0,
                   exp_tag="", replay_ratio=0.0, tau_image=0.74, tau_text=0.5, aug_text_swap=0.5,
                   aug_patch_merge=0.5, jpeg_quality=50, mask_layers=[-1], mask_layer_reduce="mean",
                   mask_head_reduce="mean", mask_norm="ratio",
                   exemplar_selection="class_mean", class_mean_from="full", mask_figure=4, model_size="vilt_b32",
                   tuning="ssf", max_epoch=20, batch_size=256, lr=0.01, precision="16-mixed", log_dir="runs",
                   devices=1, strategy="auto")


def counts_for(accuracy: float, seen: int) -> tuple[list[int], list[int]]:
    """Per-class (correct, total) over ``seen`` classes with ``accuracy`` % overall (must be exact)."""
    total = seen * TEST_PER_CLASS
    correct = accuracy * total / 100
    assert abs(correct - round(correct)) < 1e-9, (accuracy, total)
    left, per_class = round(correct), []
    for _ in range(seen):
        per_class.append(min(TEST_PER_CLASS, left))
        left -= per_class[-1]
    return per_class, [TEST_PER_CLASS] * seen


@functools.lru_cache(maxsize=None)
def method_base_config(method: str) -> dict:
    """A whole resolved config of ``method`` (the demo's, deep enough for DualPrompt's default layers), which
    write_run's keys then set."""
    return resolve("demo", method, num_layers=5)


def write_run(root: Path, name: str, *, dataset="mm_imagenet_r", method="replay", L=5, seed=0, curve=None,
              last=None, exemplars_per_class=None, phases_done=None, config=None, with_config=True) -> Path:
    """A run directory whose results.json comes from the driver's own build_results (accuracies in %).

    curve: accuracy after each phase (default: 100 down to ``last``); exemplars_per_class: memory per seen class at
    every phase (None: no memory, as finetune/joint); phases_done < L: an unfinished run."""
    curve = list(curve) if curve is not None else [100.0] * (L - 1) + [last]
    done = phases_done or L
    cfg = {**method_base_config(method), **method_recipe(method).values(dataset), **BASE_CONFIG, **(config or {}),
           "dataset": dataset, "method": method, "num_phases": L, "seed": seed, "exp_name": name}
    order = list(range(L * CLASSES_PER_PHASE))
    phases = [order[t * CLASSES_PER_PHASE:(t + 1) * CLASSES_PER_PHASE] for t in range(L)]
    counts = [counts_for(curve[t], (t + 1) * CLASSES_PER_PHASE) for t in range(done)]
    memory = []
    for t in range(done):
        if exemplars_per_class is None:
            memory.append(None)
            continue
        seen = (t + 1) * CLASSES_PER_PHASE
        memory.append({"unit": "tokens", "class_budget": float(cfg["memory_per_class"]),
                       "exemplars": exemplars_per_class * seen, "cost": 2.5 * seen, "bytes": 1000 * seen,
                       "mean_exemplars_per_class": float(exemplars_per_class), "full_exemplar_bytes": None,
                       "kept_patch_share": 0.3, "kept_word_share": 0.5, "mean_patches": 10.0, "mean_tokens": 5.0,
                       "exemplars_per_class": {str(c): exemplars_per_class for c in range(seen)},
                       "cost_per_class": {str(c): 2.5 for c in range(seen)},
                       "bytes_per_class": {str(c): 1000 for c in range(seen)}})
    results = build_results(settings(cfg), order, phases, counts, memory)
    run = root / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(results))
    if with_config:
        (run / "config.json").write_text(json.dumps(cfg))
    return run


def test_general_defaults_match_config_py():
    from sacred.initialize import create_run

    from emmcil.config import ex
    cfg = create_run(ex, "print_config", config_updates={}, named_configs=["replay"]).config
    assert {k: cfg[k] for k in GENERAL_DEFAULTS} == GENERAL_DEFAULTS
    if "missing_type" in cfg:  # the missing-modality protocol's keys
        assert {k: cfg[k] for k in MISSING_DEFAULTS} == MISSING_DEFAULTS
    defaults = {**cfg, **method_config_defaults()}  # a run's config holds its own method's keys
    for key, value in BASE_CONFIG.items():
        if key not in ("model_size", "tuning", "max_epoch", "batch_size", "lr", "precision", "log_dir", "devices",
                       "strategy"):
            assert defaults[key] == value, key


@pytest.fixture(scope="module")
def table_report(tmp_path_factory):
    """MM-ImageNet-R: replay (3 seeds: 70/75/80 at L=5, 60/62/64 at L=10), emm (3 seeds), finetune (2 seeds),
    an emm_no_aug ablation (1 seed), an unfinished run, a memory sweep and a threshold grid."""
    root = tmp_path_factory.mktemp("runs")
    for seed, (a5, a10) in enumerate([(70, 60), (75, 62), (80, 64)]):
        write_run(root, f"t_L5_replay_s{seed}", method="replay", L=5, seed=seed, last=a5, exemplars_per_class=5)
        write_run(root, f"t_L10_replay_s{seed}", method="replay", L=10, seed=seed, last=a10, exemplars_per_class=5)
        write_run(root, f"t_L5_emm_s{seed}", method="emm", L=5, seed=seed, last=a5 + 10, exemplars_per_class=14)
    for seed, a in enumerate([40, 50]):
        write_run(root, f"t_L5_finetune_s{seed}", method="finetune", L=5, seed=seed, last=a)
    write_run(root, "t_L5_emm_noaug_s0", method="emm", L=5, last=77, exemplars_per_class=14,
              config=dict(aug_text_swap=0.0, aug_patch_merge=0.0, exp_tag="noaug"))
    write_run(root, "t_L5_mrdc_unfinished", method="mrdc", L=5, last=90, phases_done=3, exemplars_per_class=8)
    # memory sweep on L=10 (exp_tag abl_mem; m=5 must stay apart from the main table's L=10 replay runs)
    for m, epc_r, epc_e, acc_r, acc_e in [(1, 1, 3, 50, 55), (3, 3, 8, 55, 60), (5, 5, 14, 60, 65)]:
        for seed in (0, 1):
            write_run(root, f"mem_replay_m{m}_s{seed}", method="replay", L=10, seed=seed, last=acc_r + 2 * seed,
                      exemplars_per_class=epc_r, config=dict(memory_per_class=m, exp_tag="abl_mem"))
            write_run(root, f"mem_emm_m{m}_s{seed}", method="emm", L=10, seed=seed, last=acc_e + 2 * seed,
                      exemplars_per_class=epc_e, config=dict(memory_per_class=m, exp_tag="abl_mem"))
    for ti in (0.3, 0.5):
        for tt in (0.3, 0.7):
            write_run(root, f"tau_{ti}_{tt}", method="emm", L=10, last=50 + 10 * ti + 10 * tt, exemplars_per_class=9,
                      config=dict(tau_image=ti, tau_text=tt, exp_tag="abl_tau"))
    out = root / "report"
    logs = []
    written = build_report([str(root / "t_*"), str(root / "mem_*"), str(root / "tau_*")], out, log=logs.append)
    return root, out, written, logs


def test_main_table_mean_std_and_paper_numbers(table_report):
    root, out, written, logs = table_report
    num = pd.read_csv(out / "table_mm_imagenet_r.csv").set_index("label")
    assert num.loc["replay", "L5_mean"] == pytest.approx(75.0)
    assert num.loc["replay", "L5_std"] == pytest.approx(5.0)          # sample std of 70, 75, 80
    assert num.loc["replay", "L5_n"] == 3
    assert num.loc["replay", "L10_mean"] == pytest.approx(62.0)
    assert num.loc["replay", "L10_std"] == pytest.approx(2.0)
    assert num.loc["emm", "L5_mean"] == pytest.approx(85.0)
    assert num.loc["finetune", "L5_mean"] == pytest.approx(45.0)
    assert num.loc["finetune", "L5_std"] == pytest.approx(math.sqrt(50))
    assert num.loc["replay", "L5_paper"] == PAPER_TABLE["mm_imagenet_r"]["replay"][5] == 80.58
    assert num.loc["emm", "L20_paper"] == 78.64
    assert num.loc["replay", "paper_row"] == "SSF" and num.loc["emm", "paper_row"] == "SSF + Ours"
    md = (out / "table_mm_imagenet_r.md").read_text()
    assert "75.00 ± 5.00" in md and "62.00 ± 2.00" in md and "85.00 ± 5.00" in md and "45.00 ± 7.07 (n=2)" in md
    # runs with an exp_tag (ablations) are not in the main table but in the variants table, without paper numbers
    assert "noaug" not in md and "abl_mem" not in md
    variants = pd.read_csv(out / "variants_mm_imagenet_r.csv").set_index("label")
    noaug = "emm [noaug, p_merge=0, p_swap=0]"
    assert variants.loc[noaug, "L5_mean"] == pytest.approx(77.0) and "L5_paper" not in variants.columns
    assert variants.loc["replay [abl_mem, m=3]", "L10_mean"] == pytest.approx(56.0)
    assert "77.00 (n=1)" in (out / "variants_mm_imagenet_r.md").read_text()
    for paper_name in ("L2P", "DualPrompt", "EASE", "SSF + MRDC", "SSF + CIM"):
        assert paper_name in md
    assert "l2p (not run)" in md and "80.58" in md and "68.17" in md
    report = (out / "report.md").read_text()
    assert "`last_accuracy`" in report and "does not state which accuracy" in report
    # the unfinished run is left out, and said so
    assert "t_L5_mrdc_unfinished" not in (out / "runs.csv").read_text()
    assert any("unfinished" in m and "t_L5_mrdc_unfinished" in m for m in logs)


def test_an_unfinished_run_kept_is_labelled_with_its_phases(table_report, tmp_path):
    """--include-unfinished put a run stopped after 3 of 5 phases in the L=5 column unmarked."""
    root, *_ = table_report
    build_report([str(root / "t_L5_*")], tmp_path / "r", include_unfinished=True, log=lambda m: None)
    num = pd.read_csv(tmp_path / "r" / "table_mm_imagenet_r.csv").set_index("label")
    assert num.loc["mrdc [phases=3/5]", "L5_mean"] == pytest.approx(100.0)  # after phase 3 (the 90 is phase 5)
    assert "mrdc [phases=3/5]" in (tmp_path / "r" / "table_mm_imagenet_r.md").read_text()
    assert math.isnan(num.loc["mrdc", "L5_mean"])  # the paper's mrdc row holds no finished run


def test_ablation_runs_stay_apart_from_the_main_table(table_report):
    root, out, written, logs = table_report
    groups = pd.read_csv(out / "groups.csv")
    main = groups[(groups["label"] == "replay") & (groups["num_phases"] == 10)]
    sweep = groups[(groups["label"] == "replay [abl_mem]") & (groups["num_phases"] == 10)]
    assert len(main) == 1 and main["n"].iloc[0] == 3 and main["metric_mean"].iloc[0] == pytest.approx(62.0)
    assert len(sweep) == 1 and sweep["memory_per_class"].iloc[0] == 5 and sweep["n"].iloc[0] == 2


def test_memory_table_and_both_figures(table_report):
    root, out, written, logs = table_report
    mem = pd.read_csv(out / "memory_mm_imagenet_r_L10.csv")
    emm = mem[mem["label"] == "emm [abl_mem]"].set_index("memory_per_class")
    assert emm.loc[3, "accuracy_mean"] == pytest.approx(61.0) and emm.loc[3, "accuracy_std"] == pytest.approx(
        math.sqrt(2))
    assert emm.loc[3, "exemplars_per_class_mean"] == pytest.approx(8.0)
    assert emm.loc[10, "paper_accuracy"] == PAPER_MEMORY[("mm_imagenet_r", 10)]["emm"][10][1]  # paper only
    assert emm.loc[10, "n"] == 0
    replay = mem[mem["label"] == "replay [abl_mem]"].set_index("memory_per_class")
    assert replay.loc[1, "accuracy_mean"] == pytest.approx(51.0) and replay.loc[1, "paper_exemplars_per_class"] == 1
    md = (out / "memory_mm_imagenet_r_L10.md").read_text()
    assert "61.00 ± 1.41" in md and "76.6" in md
    for png in ("memory.png", "accuracy_per_phase.png"):
        assert (out / png).is_file() and (out / png).stat().st_size > 10_000
        assert_print_figure(out / png)
    assert {p.name for p in written["figures"]} == {"memory.png", "memory.pdf", "accuracy_per_phase.png",
                                                    "accuracy_per_phase.pdf"}



def test_threshold_table(table_report):
    root, out, written, logs = table_report
    (csv,) = out.glob("thresholds_mm_imagenet_r_L10_*.csv")
    t = pd.read_csv(csv).set_index(["tau_image", "tau_text"])
    assert t.loc[(0.3, 0.7), "accuracy_mean"] == pytest.approx(60.0)
    md = csv.with_suffix(".md").read_text()
    assert "τ_I=0.3" in md and "τ_T=0.7" in md and "60.00 [9.0]" in md
    assert csv.name == "thresholds_mm_imagenet_r_L10_emm_abl_tau.csv"


def test_avg_incremental_accuracy_metric(tmp_path):
    for seed, curve in enumerate([[100, 80, 60], [90, 70, 50]]):
        write_run(tmp_path, f"r{seed}", method="finetune", L=3, seed=seed, curve=curve)
    out = tmp_path / "out"
    assert main([str(tmp_path / "r*"), "--out", str(out), "--metric", "avg_incremental_accuracy"]) == 0
    num = pd.read_csv(out / "table_mm_imagenet_r.csv").set_index("label")
    assert num.loc["finetune", "L3_mean"] == pytest.approx(75.0)    # means 80 and 70
    assert num.loc["finetune", "L3_std"] == pytest.approx(math.sqrt(50))
    assert "`avg_incremental_accuracy`" in (out / "report.md").read_text()


def test_inputs_run_dirs_log_dirs_and_results_files(tmp_path):
    a = write_run(tmp_path / "logs", "a", last=50)
    b = write_run(tmp_path / "logs", "b", seed=1, last=60)
    assert find_results([str(tmp_path / "logs")]) == [a / "results.json", b / "results.json"]
    assert find_results([str(a), str(a / "results.json"), str(tmp_path / "logs" / "*")]) == [
        a / "results.json", b / "results.json"]
    with pytest.raises(ReportError, match="no_such_dir"):
        find_results([str(tmp_path / "no_such_dir")])
    (tmp_path / "logs" / "c").mkdir()  # a run that has not finished its first phase: named, not silently dropped
    notes = []
    assert find_results([str(tmp_path / "logs" / "*")], notes.append) == [a / "results.json", b / "results.json"]
    assert notes == [f"note: no results.json in 1 folder(s) matched (a run writes it after its first phase): "
                     f"{tmp_path / 'logs' / 'c'}"]


def test_a_repeated_seed_is_dropped_with_a_warning(tmp_path):
    write_run(tmp_path, "a", last=50)
    write_run(tmp_path, "a_copy", last=60)
    logs = []
    runs = collect([str(tmp_path / "*")], log=logs.append)
    assert len(runs) == 1 and runs["last_accuracy"].iloc[0] == 50
    assert any("repeats seed 0" in m for m in logs)


def test_runs_differing_in_a_key_that_changes_results_are_kept_apart(tmp_path):
    """Their run names differ in that key, and so do their rows; keys that do not change results do not split."""
    write_run(tmp_path, "a", last=50, config=dict(lr=0.01, num_workers=2, devices=1))
    write_run(tmp_path, "a1", seed=1, last=52, config=dict(lr=0.01, num_workers=8, devices=4))
    write_run(tmp_path, "b", seed=1, last=60, config=dict(lr=0.001))
    groups = summarize_groups(collect([str(tmp_path / "*")], log=lambda m: None))
    # 0.01 is replay's recipe, so those runs are plain "replay"
    assert dict(zip(groups["label"], groups["n"])) == {"replay [lr=0.001]": 1, "replay": 2}


def test_runs_of_one_table_made_with_different_versions_are_flagged(tmp_path):
    def made_with(torch, commit):
        return {"provenance": [{"git_commit": commit, "git_dirty": False,
                                "versions": {"python": "3.11.7", "torch": torch, "cuda": None}}]}

    write_run(tmp_path, "a", last=50, config=made_with("2.4.0", "abc"))
    write_run(tmp_path, "b", seed=1, last=60, config=made_with("2.4.0", "abc"))
    write_run(tmp_path, "other", dataset="food101", last=60, config=made_with("2.5.1", "abc"))
    logs = []
    build_report([str(tmp_path / "*")], tmp_path / "out", log=logs.append)
    assert not [m for m in logs if "versions" in m]  # food101's table has one torch, MM-ImageNet-R's another
    write_run(tmp_path, "c", seed=2, last=55, config=made_with("2.5.1", "def"))
    build_report([str(tmp_path / "*")], tmp_path / "out", log=logs.append)
    (warning,) = [m for m in logs if "versions" in m]
    assert warning == ("warning: the runs of table mm_imagenet_r were made with different versions: torch 2.4.0 (2 "
                       "runs), 2.5.1 (1 run); git_commit abc (2 runs), def (1 run)")
    assert "**Warning**: the runs of table mm_imagenet_r" in (tmp_path / "out" / "report.md").read_text()


def test_without_config_json_a_run_is_read_from_its_results_json(tmp_path):
    """config.json gives only the versions: the variant comes from results.json's own results_config."""
    write_run(tmp_path, "m3", last=50, exemplars_per_class=3, config=dict(memory_per_class=3, tau_image=0.3),
              with_config=False)
    write_run(tmp_path, "e3", method="emm", last=50, exemplars_per_class=3, config=dict(tau_image=0.3, exp_tag="t"),
              with_config=False)
    runs = collect([str(tmp_path / "*")], log=lambda m: None)
    assert sorted(runs["label"]) == ["emm [t, τ_I=0.3]", "replay [m=3]"]  # tau_image is not a key of replay's
    assert runs.set_index("method").loc["replay", "memory_per_class"] == 3


def test_the_run_says_what_the_report_needs(tmp_path):
    """results.json carries the method's defaults, whether it keeps exemplars and the keys that change results, so
    that the report needs no method registry; a method's defaults come from the run, not from the code reading it."""
    run = write_run(tmp_path, "e", method="emm", last=50, exemplars_per_class=3)
    results = json.loads((run / "results.json").read_text())
    assert results["uses_memory"] is True and results["method_defaults"]["tau_image"] == 0.74
    assert results["results_config"]["tau_image"] == 0.74 and "log_dir" not in results["results_config"]
    assert "jpeg_quality" not in results["results_config"]  # mrdc's key: emm does not read it
    results["method_defaults"]["tau_image"] = 0.5  # a run made when the default was another one
    (run / "results.json").write_text(json.dumps(results))
    assert list(collect([str(run)], log=lambda m: None)["label"]) == ["emm [τ_I=0.74]"]


def test_a_run_off_its_method_recipe_is_a_variant_without_the_paper_number(tmp_path):
    """The paper's number sits only beside a run trained as its method's reference trains it: a lone l2p run with
    a shortened schedule or an unfrozen backbone is ``l2p [...]``, not "l2p" (the run records its recipe)."""
    from emmcil.methods.recipes import method_recipe

    own = {**method_recipe("l2p").values("mm_imagenet_r"), "tuning": "frozen"}
    write_run(tmp_path, "l2p_recipe", method="l2p", last=60, config=own)
    write_run(tmp_path, "l2p_short", method="dualprompt", last=50,
              config={**method_recipe("dualprompt").values("mm_imagenet_r"), "tuning": "full", "max_epoch": 5})
    out = tmp_path / "report"
    build_report([str(tmp_path / "l2p_*")], out, log=lambda m: None)
    num = pd.read_csv(out / "table_mm_imagenet_r.csv").set_index("label")
    assert num.loc["l2p", "L5_paper"] == PAPER_TABLE["mm_imagenet_r"]["l2p"][5]
    short = "dualprompt [max_epoch=5, tuning=full]"
    assert num.loc[short, "L5_mean"] == pytest.approx(50.0) and math.isnan(num.loc[short, "L5_paper"])
    results = json.loads((tmp_path / "l2p_recipe" / "results.json").read_text())
    assert results["method_defaults"]["lr"] == 1.875e-3 and results["method_defaults"]["tuning"] == "frozen"


@pytest.mark.parametrize("key", ["results_config", "method_defaults", "uses_memory", "exp_tag"])
def test_a_run_older_than_the_report_keys_is_a_clear_error(tmp_path, key):
    run = write_run(tmp_path, "old", last=50)
    results = json.loads((run / "results.json").read_text())
    del results[key]
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(ReportError, match=rf"old/results.json: missing key '{key}'.*run the run's command again"):
        collect([str(run)], log=lambda m: None)


def test_the_caption_gives_the_runs_definition_of_the_metric(table_report):
    root, out, written, logs = table_report
    assert f"`last_accuracy` ({METRIC_NOTES['last_accuracy']})" in (out / "report.md").read_text()


def test_the_report_imports_neither_torch_nor_the_method_registry(table_report, tmp_path):
    """``--help``, and a report with every table and figure, in a new interpreter as ``python -m`` runs them."""
    root, out, written, logs = table_report
    code, imported, output = report_in_a_fresh_process("--help")
    assert code == 0 and "--metric" in output and imported == []
    code, imported, output = report_in_a_fresh_process(str(root / "t_*"), str(root / "mem_*"), str(root / "tau_*"),
                                                       "--out", str(tmp_path / "out"))
    assert code == 0 and imported == []
    for name in ("table_mm_imagenet_r.md", "memory.png", "accuracy_per_phase.png", "groups.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (out / name).read_bytes(), name  # the same report


def test_missing_modality_runs_are_a_variant(tmp_path):
    write_run(tmp_path, "full", last=50)
    write_run(tmp_path, "miss", last=40, config=dict(missing_type="both", missing_ratio=0.7, missing_both_ratio=0.5,
                                                     missing_seed=0))
    runs = collect([str(tmp_path / "*")], log=lambda m: None)
    assert sorted(runs["label"]) == ["replay", "replay [missing=both]"]


def test_missing_key_is_a_clear_error(tmp_path, capsys):
    run = write_run(tmp_path, "broken", last=50)
    results = json.loads((run / "results.json").read_text())
    del results["last_accuracy"]
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(ReportError, match=r"broken/results.json: missing key 'last_accuracy'"):
        build_report([str(run)], tmp_path / "out", log=lambda m: None)
    assert main([str(run), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "broken/results.json" in err and "'last_accuracy'" in err


def test_an_unreadable_config_json_is_a_clear_error(tmp_path):
    run = write_run(tmp_path, "cut", last=50, exemplars_per_class=5)
    (run / "config.json").write_text('{"broken')
    with pytest.raises(ReportError, match=r"cut/config.json: cannot read it as JSON"):
        build_report([str(run)], tmp_path / "out", log=lambda m: None)
    from emmcil.report.memory import MemoryBrowserError, load_memory_run

    with pytest.raises(MemoryBrowserError, match=r"cut/config.json: cannot read it as JSON"):
        load_memory_run(run)


def test_missing_memory_key_is_a_clear_error(tmp_path):
    run = write_run(tmp_path, "mem", last=50, exemplars_per_class=5)
    results = json.loads((run / "results.json").read_text())
    for report in results["memory"]:
        del report["exemplars"], report["exemplars_per_class"]
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(ReportError, match=r"mem/results.json: missing key 'exemplars' in 'memory'\[4\]"):
        collect([str(run)], log=lambda m: None)


def test_not_json_is_a_clear_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(ReportError, match="bad/results.json: cannot read it as JSON"):
        collect([str(tmp_path / "bad")], log=lambda m: None)


def test_long_legends_of_many_groups_are_not_cut_off(tmp_path):
    """24 variants with long labels: the legend ran off both sides of the figure and squeezed the plot; now the
    figure grows to hold it, so the image's outer columns are blank."""
    from PIL import Image

    for k, (method, lr) in enumerate((m, lr) for m in ("replay", "emm", "cim", "mrdc", "finetune", "l2p")
                                     for lr in (0.1, 0.01, 0.001, 0.0001)):
        write_run(tmp_path / "runs", f"r{k}", dataset="shapes", method=method, L=2, last=50 + 2.5 * (k % 10),
                  config=dict(lr=lr, max_epoch=2, batch_size=8, model_size="tiny"))
    build_report([str(tmp_path / "runs" / "r*")], tmp_path / "out", log=lambda m: None)
    image = np.asarray(Image.open(tmp_path / "out" / "accuracy_per_phase.png").convert("L"))
    assert image[:, :3].min() > 200 and image[:, -3:].min() > 200
    assert image.shape[0] > 2 * image.shape[1] * 0.6  # taller than wide: the 24 legend lines below the plot

def test_every_series_of_a_panel_has_a_style_of_its_own():
    """The demo's panel has 13 series (5 methods, 8 memory variants): tab10 alone gave mrdc and emm [m=3] one colour.
    A method keeps its colour over its variants, which differ by line style and marker."""
    from emmcil.report.plots import METHOD_COLOURS, series_styles

    methods = ["finetune", "replay", "mrdc", "cim", "emm"] + ["replay", "mrdc", "cim", "emm"] * 2 + ["mystery"]
    styles = series_styles(methods)
    looks = [(s["color"], str(s["ls"]), s["marker"]) for s in styles]
    assert len(set(looks)) == len(methods)
    assert all(s["color"] == METHOD_COLOURS[m] for m, s in zip(methods, styles) if m in METHOD_COLOURS)
    assert styles[-1]["color"] not in {METHOD_COLOURS[m] for m in methods[:-1]}  # an unknown method: a free colour
    assert all(s["ls"] != "--" for s in styles)  # dashed is the paper's
