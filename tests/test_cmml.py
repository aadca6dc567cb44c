"""Continual missing-modality learning (CMML): seeded per-split missing tables, what reaches the model, config
keys and run names, a tiny end-to-end run with both metric sets, and scripts/table_cmml.sh's dry run."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sacred.utils import ConfigError
import torch
from emmcil.config import NAMED_CONFIGS
from emmcil.data.missing import IMAGE_MISSING, NONE, TEXT_MISSING, MissingTable
from emmcil.data.tokenizer import CLS_ID, SEP_ID
from emmcil.engine.loaders import KeepCollate
from emmcil.engine.loaders import build_data, split_seed
from emmcil.engine.driver import run_experiment
from run_helpers import SMALL, one_thread, resolve, settings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


def data(demo_root, *named, **updates):
    return build_data(settings(resolve("demo", *named, data_root=str(demo_root), **updates)))


def test_missing_tables_are_seeded_per_split(demo_root):
    a = data(demo_root, "missing_both_70")
    b = data(demo_root, "missing_both_70")
    other_seed = data(demo_root, "missing_both_70", missing_seed=1)
    for split in ("train", "test"):
        assert np.array_equal(a.missing[split].codes, b.missing[split].codes)        # reproducible
        assert not np.array_equal(a.missing[split].codes, other_seed.missing[split].codes)  # seed-dependent
        assert a.missing[split].seed == split_seed(0, split)
    assert a.missing["train"].seed != a.missing["test"].seed                          # a table per split
    assert not np.array_equal(a.missing["train"].codes[:100], a.missing["test"].codes)
    train = a.missing["train"].codes
    assert len(train) == 300 and (train != NONE).sum() == 210                         # int(0.7 * 300)
    assert (train == IMAGE_MISSING).sum() == 105 and (train == TEXT_MISSING).sum() == 105
    # the datasets carry them: the training and evaluation views share the train table
    assert a.train.missing is a.train_eval.missing and np.array_equal(a.train.missing.codes, train)
    assert np.array_equal(a.test.missing.codes, a.missing["test"].codes)
    assert (data(demo_root, "missing_text_70", missing_ratio=0.3).missing["train"].codes == TEXT_MISSING).sum() == 90
    assert data(demo_root).missing == {} and data(demo_root).train.missing is None   # missing_type="none"
    described = a.describe()["missing"]
    assert described["missing_type"] == "both" and described["ratio"] == 0.7 and described["both_ratio"] == 0.5
    assert described["splits"]["test"]["text_missing"] == 35 and len(described["splits"]["train"]["sha1"]) == 40
    with pytest.raises(ConfigError, match=r"missing_type='audio': one of \('none', 'text', 'image', 'both'\)"):
        data(demo_root, missing_type="audio")  # refused when the config is made


@pytest.mark.parametrize("kind", ["text", "image", "both"])
def test_each_missing_type_reaches_the_model_as_specified(demo_root, kind):
    d = data(demo_root, f"missing_{kind}_70")
    for dataset in (d.train, d.test):
        codes = dataset.missing.codes
        expected = {"text": {TEXT_MISSING}, "image": {IMAGE_MISSING}, "both": {TEXT_MISSING, IMAGE_MISSING}}[kind]
        assert set(np.unique(codes)) == expected | {NONE}
        for code in expected | {NONE}:
            i = int(np.flatnonzero(codes == code)[0])
            item = dataset[i]
            assert item["missing_type"] == code
            if code == TEXT_MISSING:
                assert item["text_ids"][:2].tolist() == [CLS_ID, SEP_ID] and item["text_masks"].sum() == 2
                assert item["raw_text"] == "" and not item["image"].eq(255).all()
            elif code == IMAGE_MISSING:  # a white image (uint8 255, 1.0 once normalised), text kept
                assert item["image"].dtype == torch.uint8 and item["image"].eq(255).all()
                assert item["text_masks"].sum() > 2
            else:
                assert item["text_masks"].sum() > 2 and not item["image"].eq(255).all()
    # through the scenario (remapped labels) and the collate, as the model gets them
    phase0 = d.scenario.train_dataset(0)
    batch = KeepCollate(16)([phase0[i] for i in range(8)])
    assert batch["missing_types"].tolist() == [int(d.train.missing.codes[j]) for j in phase0.indices[:8]]


def test_missing_named_configs_and_run_names():
    assert resolve("demo", "finetune")["exp_name"] == "demo_finetune_5phases_seed0"  # unchanged without missing
    assert resolve("demo", "finetune", "missing_both_70")["exp_name"] == "demo_finetune_5phases_missboth0.7_seed0"
    assert resolve("demo", "emm", "missing_text_70")["exp_name"] == "demo_emm_5phases_mem5_misstext0.7_seed0"
    assert resolve("demo", "replay", "missing_image_70", missing_ratio=0.5)["exp_name"] == \
        "demo_replay_5phases_mem5_missimage0.5_seed0"
    assert resolve("demo", "rebq", "missing_both_70", missing_both_ratio=0.3, missing_seed=2)["exp_name"] == \
        "demo_rebq_5phases_missboth0.7b0.3ms2_seed0"
    names = set()
    for missing in NAMED_CONFIGS["missing"]:
        cfg = resolve("food101", missing)
        assert {k: v for k, v in cfg.items() if k.startswith("missing_")} == {
            "missing_type": missing.split("_")[1], "missing_ratio": 0.7, "missing_both_ratio": 0.5, "missing_seed": 0}
        assert cfg["dataset"] == "food101" and cfg["num_phases"] == 5  # only the missing keys
    for method in ("finetune", "replay", "emm", "rebq"):
        cfg = resolve("cmml_food101", method)
        assert (cfg["dataset"], cfg["num_phases"], cfg["missing_type"], cfg["missing_ratio"]) == ("food101", 10,
                                                                                                    "both", 0.7)
        names.add(cfg["exp_name"])
    assert len(names) == 4
    rebq = resolve("cmml_food101", "rebq")
    assert (rebq["tuning"], rebq["ssf"], rebq["drop_rate"], rebq["lr"], rebq["rebq_alpha"], rebq["rebq_reinit"]) == \
        ("frozen", False, 0.0, 1e-4, 0.01, False)


def test_tiny_cmml_run_reports_both_metric_sets(demo_root, tmp_path):
    cfg = resolve("demo", "rebq", "missing_both_70", data_root=str(demo_root), log_dir=str(tmp_path), **SMALL,
                  rebq_layers=1, rebq_pool_size=8, rebq_prompt_length=4, rebq_reinit=True)
    run_dir = run_experiment(cfg)
    assert run_dir.name.startswith("demo_rebq_2phases_missboth0.7_") and run_dir.name.endswith("_seed0")
    res = json.loads((run_dir / "results.json").read_text())
    assert res["finished"] and res["completed_phases"] == 2
    R, rebq = res["accuracy_matrix"], res["rebq_metrics"]
    assert rebq["AP"] == pytest.approx(res["mean_last_row"]) == pytest.approx((R[1][0] + R[1][1]) / 2)
    assert rebq["forgetting"] == pytest.approx(res["forgetting_first"]) == pytest.approx(R[0][0] - R[1][0])
    assert rebq["last"] == pytest.approx(R[1][1])
    assert isinstance(res["avg_incremental_accuracy"], float) and isinstance(res["forgetting"], float)
    assert "RebQ AP" in (run_dir / "results.md").read_text()
    described = json.loads((run_dir / "class_order.json").read_text())["missing"]
    assert described["missing_type"] == "both" and set(described["splits"]) == {"train", "test"}
    saved = sorted((run_dir / "missing_tables").iterdir())
    assert [p.name.split("_missing")[0] for p in saved] == ["demo_test", "demo_train"]
    train = MissingTable.load(next(p for p in saved if p.name.startswith("demo_train")))
    assert train.seed == split_seed(0, "train") and (train.codes != NONE).sum() == 210
    state = torch.load(run_dir / "checkpoints" / "phase_1.pt", weights_only=True)
    assert any(k.startswith("method_net.memory.tasks.1.") for k in state["trainable"])


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_table_cmml_dry_run_resolves_every_config(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"METHODS", "MISSING", "RATIO", "DATASET", "PHASES"}}
    env.update(DRY_RUN="1", SEEDS="0 1", DATA_ROOT="", CKPT="", METHODS="emm rebq", MISSING="none both",
               RATIO="0.5", LOG_DIR=str(tmp_path / "runs"), PYTHON=sys.executable)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "table_cmml.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cmds = [shlex.split(line) for line in out.stdout.splitlines() if line.strip() and not line.startswith("#")]
    runs = [c for c in cmds if "with" in c]
    assert len(runs) == 8 and "4 of 8 configs resolved" not in out.stdout and "8 of 8 configs resolved" in out.stdout
    names = [next(a.split("=", 1)[1] for a in c if a.startswith("exp_name=")) for c in runs]
    assert len(set(names)) == 8
    assert "table_cmml_food101_L10_both_r0.5_rebq_seed1" in names and "table_cmml_food101_L10_none_emm_seed0" in names
    both = [c for c in runs if "missing_both_70" in c]
    assert len(both) == 4 and all("missing_ratio=0.5" in c for c in both)
    assert not any(a.startswith("missing") for c in runs if "_none_" in " ".join(c) for a in c)
