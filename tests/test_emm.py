"""Exemplar masking as a method: stored exemplars, budgets, replay through keep masks, MRDC, end-to-end runs."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from emmcil.data import ensure_demo, get_tokenizer
from emmcil.data.device import model_images
from emmcil.data.transforms import normalize_uint8
from emmcil.engine.driver import run_experiment
from emmcil.engine.rundir import RunDir
from emmcil.memory import snapshot
from emmcil.memory.exemplar import Exemplar, exemplar_from_state
from emmcil.model import ViLT
from run_helpers import demo_config, one_thread

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


def make_item(h=4, w=5, p=16, T=12, label=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = normalize_uint8(torch.randint(0, 256, (3, h * p, w * p), generator=g, dtype=torch.uint8))
    ids = torch.zeros(T, dtype=torch.long)
    ids[:8] = torch.tensor([101, 11, 12, 13, 14, 15, 16, 102])
    masks = (ids > 0).long()
    return {"image": image, "text_ids": ids, "text_masks": masks, "label": label, "index": seed, "image_id": f"s{seed}"}


def test_masked_exemplar_replayed_through_keep_masks_equals_only_those_tokens(tiny_cfg):
    torch.manual_seed(0)
    model = ViLT(dict(tiny_cfg, patch_size=16, image_size=64, max_text_len=12)).eval()
    item = make_item()
    keep = torch.zeros(4, 5, dtype=torch.bool)
    keep[1:3, 1:4] = True
    keep[0, 0] = True
    token_keep = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    ex = Exemplar.from_item(item, 16, patch_keep=keep, token_keep=token_keep)
    assert ex.num_patches == 7 and ex.num_tokens == 5
    assert ex.nbytes == 7 * (3 * 16 * 16 + 2) + 5 * 4
    replay = ex.to_item(12)
    assert replay["image"].dtype == torch.uint8  # normalised with its batch on the device (model_images)
    via_masks = model(replay["text_ids"][None], replay["text_masks"][None], normalize_uint8(replay["image"][None]),
                      torch.ones(1, 64, 80, dtype=torch.bool), patch_keep=replay["patch_keep"][None])
    only = model(replay["text_ids"][None], replay["text_masks"][None],
                 patches=normalize_uint8(ex.pixels)[None], patch_index=ex.coords.long()[None],
                 grid_sizes=ex.grid.long()[None])
    assert torch.allclose(via_masks.pooled, only.pooled, atol=1e-5)
    # and the same as masking the original sample directly
    direct = model(item["text_ids"][None], (item["text_masks"].bool() & token_keep).long()[None], item["image"][None],
                   torch.ones(1, 64, 80, dtype=torch.bool), patch_keep=keep[None])
    assert torch.allclose(direct.pooled, via_masks.pooled, atol=1e-2)  # uint8 rounding of the pixels only


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    logs = tmp_path_factory.mktemp("runs")
    with one_thread():
        runs = {method: run_experiment(demo_config(root, logs, method)) for method in ("replay", "mrdc", "emm")}
        runs["emm black"] = run_experiment(demo_config(root, logs, "emm", masked_replay="black"))
        yield runs


def test_at_equal_budget_replay_holds_m_a_class_and_the_compressed_methods_more(demo_runs):
    res = {m: json.loads((d / "results.json").read_text()) for m, d in demo_runs.items()}
    last = {m: r["memory"][-1] for m, r in res.items()}
    assert set(last["replay"]["exemplars_per_class"].values()) == {5}  # the default: 5 full exemplars a class
    for m in ("emm", "mrdc"):
        assert last[m]["unit"] == "tokens" and last[m]["class_budget"] == 5.0
        assert last[m]["exemplars"] > last["replay"]["exemplars"], m
        # under memory pressure: fewer than the 30 training samples of a demo class
        assert max(last[m]["exemplars_per_class"].values()) < 30, m
    for m, mem in last.items():
        for c, cost in mem["cost_per_class"].items():
            assert cost <= 5.0, (m, c)
    # the default masks keep the top 26 % of the patches and half of the words (Fig. 4's shares)
    for phase in res["emm"]["phases"]:
        assert 0.26 <= phase["kept_patch_share"] < 0.35 and 0.45 <= phase["kept_word_share"] <= 0.6
    assert last["emm"]["mean_patches"] < last["replay"]["mean_patches"]
    assert last["emm"]["mean_tokens"] < last["replay"]["mean_tokens"]
    assert res["emm"]["finished"] and len(res["emm"]["accuracy_per_phase"]) == 2


def test_emm_costs_its_kept_share_of_the_tokens(demo_runs):
    state = torch.load(demo_runs["emm"] / "checkpoints" / "phase_1.pt", weights_only=True)
    stored = [exemplar_from_state(e) for v in state["method"]["memory"]["classes"].values() for e in v]
    assert stored
    for e in stored:
        full_tokens = int(e.grid[0]) * int(e.grid[1]) + e.text_words + 2       # patches + words + [CLS], [SEP]
        assert e.token_share == (e.num_patches + e.num_tokens) / full_tokens and 0 < e.token_share < 1
        assert e.byte_share == e.nbytes / e.full_nbytes < e.token_share        # text is cheap in bytes
    full = max(stored, key=lambda e: e.full_nbytes)
    rows, cols = (int(v) for v in full.grid)
    assert full.full_nbytes == rows * cols * (3 * 16 * 16 + 2) + 4 * (full.text_words + 2)
    res = json.loads((demo_runs["emm"] / "results.json").read_text())
    assert res["memory"][-1]["cost"] == pytest.approx(sum(e.token_share for e in stored))
    assert res["memory"][-1]["costs"]["byte_share"] == pytest.approx(sum(e.byte_share for e in stored))
    assert res["phases"][-1]["memory_cost_tokens"] == res["memory"][-1]["cost"]


def test_black_regions_are_image_not_padding(tiny_cfg):
    """masked_replay=black: the discarded cells are black (-1 after normalisation), the whole grid is fed, and the
    model takes every black patch as an image token (ViLT reads padding off pixels summing to 0, ours off
    pixel_masks; black sums to -3 either way)."""
    torch.manual_seed(0)
    model = ViLT(dict(tiny_cfg, patch_size=16, image_size=64, max_text_len=12)).eval()
    item = make_item()
    keep = torch.zeros(4, 5, dtype=torch.bool)
    keep[1:3, 1:4] = True
    ex = Exemplar.from_item(item, 16, patch_keep=keep)
    black, patches = ex.to_item(12, masked_replay="black"), ex.to_item(12)
    assert black["patch_keep"].all() and patches["patch_keep"].sum() == 6
    cells = keep.repeat_interleave(16, 0).repeat_interleave(16, 1)
    assert black["image"].dtype == torch.uint8 and (black["image"][:, ~cells] == 0).all()     # black pixels
    assert torch.equal(black["image"][:, cells], patches["image"][:, cells])
    pixel_masks = torch.ones(1, 64, 80, dtype=torch.bool)
    # on the device, as every batch: normalised, black is -1 (sums to -3), not the 0 of padding
    black_in, kept_in = (model_images({"images": x["image"][None], "pixel_masks": pixel_masks,
                                       "patch_keep": x["patch_keep"][None]})["images"] for x in (black, patches))
    assert (black_in[0][:, ~cells] == -1).all() and (black_in[0].sum(0)[~cells] == -3).all()
    assert (kept_in[0][:, ~cells] == 0).all()                                 # patches: not fed (and 0)
    out = model(black["text_ids"][None], black["text_masks"][None], black_in, pixel_masks,
                patch_keep=black["patch_keep"][None])
    assert int(out.image_masks.sum()) == 20                                    # every cell an image token
    kept = model(patches["text_ids"][None], patches["text_masks"][None], kept_in, pixel_masks,
                 patch_keep=patches["patch_keep"][None])
    assert int(kept.image_masks.sum()) == 6
    assert not torch.allclose(out.pooled, kept.pooled, atol=1e-4)            # two readings, two inputs
    with pytest.raises(ValueError, match="masked_replay='grey'"):
        ex.to_item(12, masked_replay="grey")


def test_emm_with_black_replay_runs_and_replays_black_filled_exemplars(demo_runs):
    res = json.loads((demo_runs["emm black"] / "results.json").read_text())
    assert res["finished"] and res["memory"][-1]["exemplars"] > 0
    cfg = json.loads((demo_runs["emm black"] / "config.json").read_text())
    assert cfg["masked_replay"] == "black" and "masked_replay=black" in demo_runs["emm black"].name
    # the same masks and costs as the patches reading; its replay items are black-filled whole grids
    from emmcil.memory.augment import AugmentedReplay

    state = torch.load(demo_runs["emm black"] / "checkpoints" / "phase_0.pt", weights_only=False)
    stored = [exemplar_from_state(e) for v in state["method"]["memory"]["classes"].values() for e in v]
    replay = AugmentedReplay(stored, 32, 0.5, 0.5, masked_replay="black")
    torch.manual_seed(0)
    items = [replay[k] for k in range(len(replay))]
    assert all(it["patch_keep"].all() for it in items)
    assert (replay.image_tokens() == [int(e.grid[0]) * int(e.grid[1]) for e in stored]).all()


def test_emm_writes_figure_four(demo_runs):
    for phase in (0, 1):
        png = demo_runs["emm"] / f"fig4_phase{phase}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


def saved_memory(run_dir) -> dict:
    """(label, dataset row) -> (its record in memory/phase_<t>/memory.json, that folder), over every phase."""
    saved = {}
    for manifest in sorted((run_dir / "memory").glob("phase_*/memory.json")):
        for rec in json.loads(manifest.read_text())["exemplars"]:
            saved[rec["label"], rec["index"]] = (rec, manifest.parent)
    return saved


def checkpoint_memory(run_dir, phase: int) -> dict:
    state = RunDir(run_dir).load_checkpoint(phase)
    return {(e.label, e.index): e for v in state["method"]["memory"]["classes"].values()
            for e in map(exemplar_from_state, v)}


def test_each_phase_saves_what_the_memory_browser_shows(demo_runs):
    """memory/phase_<t>/ holds every exemplar the checkpoint holds: its image as stored (MRDC's JPEG byte for byte,
    the kept patches of a masked one), its kept tokens, its cost as the buffer charged it, and for emm the map."""
    tokenizer = get_tokenizer()
    for method, run in demo_runs.items():
        stored, saved = checkpoint_memory(run, 1), saved_memory(run)
        assert saved.keys() == stored.keys(), method
        for key, ex in stored.items():
            rec, folder = saved[key]
            assert (rec["kind"], rec["cost"], rec["nbytes"], rec["patch_share"]) == (
                ex.kind, ex.cost(rec["unit"]), ex.nbytes, ex.patch_share), method
            assert rec["costs"] == ex.costs, method
            kept = [tok for tok, k in zip(rec["tokens"], rec["token_kept"]) if k]
            assert tokenizer.convert_tokens_to_ids(kept) == ex.token_ids.tolist(), method
            data = (folder / rec["stored_image"]).read_bytes()
            if method == "mrdc":
                assert data == ex.jpeg.numpy().tobytes() and rec["input_image"] is None
            else:
                with Image.open(io.BytesIO(data)) as im:
                    shown = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
                image, keep = ex.replay_image()
                cells = keep.repeat_interleave(16, 0).repeat_interleave(16, 1)
                assert image.dtype == torch.uint8, method  # exemplars replay uint8 pixels (the model normalises)
                assert torch.equal(shown[:, cells], image[:, cells]), method
                assert (shown[:, ~cells] == torch.tensor(snapshot.DISCARDED_RGB)[:, None]).all(), method
            if method == "emm":
                assert ex.patch_share < 0.5 and len(rec["attention"]) == int(ex.grid[0])
                assert (folder / rec["input_image"]).is_file()


def test_emm_resumes_with_its_masked_memory(demo_runs, tmp_path_factory):
    root = ensure_demo(tmp_path_factory.mktemp("demo2"))
    logs = tmp_path_factory.mktemp("runs2")
    with one_thread():
        cfg = demo_config(root, logs, "emm", stop_after_phase=0)
        run_dir = run_experiment(cfg)
        assert json.loads((run_dir / "results.json").read_text())["completed_phases"] == 1
        run_experiment(dict(cfg, stop_after_phase=-1))
    resumed = json.loads((run_dir / "results.json").read_text())
    straight = json.loads((demo_runs["emm"] / "results.json").read_text())
    for key in ("accuracy_matrix", "memory", "avg_incremental_accuracy"):
        assert resumed[key] == straight[key], key
