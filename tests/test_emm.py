"""Exemplar masking as a method: stored exemplars, budgets, replay through keep masks, MRDC, end-to-end runs."""
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from emmcil.data import ensure_demo
from emmcil.data.transforms import normalize_uint8
from emmcil.incremental.driver import run_experiment
from emmcil.incremental.exemplar import Exemplar, JpegExemplar, exemplar_from_state
from emmcil.incremental.memory import MemoryBuffer
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
    via_masks = model(replay["text_ids"][None], replay["text_masks"][None], replay["image"][None],
                      torch.ones(1, 64, 80, dtype=torch.bool), patch_keep=replay["patch_keep"][None])
    only = model(replay["text_ids"][None], replay["text_masks"][None],
                 patches=normalize_uint8(ex.pixels)[None], patch_index=ex.coords.long()[None],
                 grid_sizes=ex.grid.long()[None])
    assert torch.allclose(via_masks.pooled, only.pooled, atol=1e-5)
    # and the same as masking the original sample directly
    direct = model(item["text_ids"][None], (item["text_masks"].bool() & token_keep).long()[None], item["image"][None],
                   torch.ones(1, 64, 80, dtype=torch.bool), patch_keep=keep[None])
    assert torch.allclose(direct.pooled, via_masks.pooled, atol=1e-2)  # uint8 rounding of the pixels only


def _exemplar_of_size(nbytes_patches: int, label: int = 0) -> Exemplar:
    return Exemplar(pixels=torch.zeros(nbytes_patches, 3, 2, 2, dtype=torch.uint8),
                    coords=torch.zeros(nbytes_patches, 2, dtype=torch.uint8), grid=torch.tensor([8, 8]),
                    token_ids=torch.zeros(1, dtype=torch.int16), token_pos=torch.zeros(1, dtype=torch.int16),
                    label=label)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.lists(st.integers(1, 40), min_size=0, max_size=12), min_size=1, max_size=6),
       full=st.floats(20, 600), per_class=st.floats(0.5, 10), total=st.floats(1, 40))
def test_budget_is_never_exceeded(sizes, full, per_class, total):
    for mode, fill in [("per_class", "skip"), ("per_class", "stop"), ("total", "skip"), ("total", "stop")]:
        mem = MemoryBuffer(full, memory_per_class=per_class, mode=mode, memory_total=total, fill=fill)
        for c, class_sizes in enumerate(sizes):
            budget = mem.class_budget(c + 1)
            if mode == "total":
                mem.reduce(budget)
            ranked = [_exemplar_of_size(s, c) for s in class_sizes]
            kept = mem.fill(c, iter(ranked), budget)
            if fill == "stop":
                assert kept == ranked[:len(kept)]  # a prefix of the ranking
            else:  # in rank order, and every exemplar passed over did not fit at its turn
                positions = [next(i for i, r in enumerate(ranked) if r is k) for k in kept]
                assert positions == sorted(positions)
                used = 0
                for i, candidate in enumerate(ranked):
                    if i in positions:
                        used += candidate.nbytes
                    else:
                        assert used + candidate.nbytes > budget
            for label, exemplars in mem.classes.items():
                assert sum(e.nbytes for e in exemplars) <= budget
        if mode == "total":
            assert mem.nbytes <= total * full + 1e-6


def test_skip_policy_does_not_leave_a_class_empty_behind_a_large_exemplar():
    big, small = _exemplar_of_size(30), _exemplar_of_size(5)
    budget = big.nbytes - 1
    assert MemoryBuffer(1.0, fill="stop").fill(0, [big, small], budget) == []
    assert MemoryBuffer(1.0, fill="skip").fill(0, [big, small], budget) == [small]
    with pytest.raises(ValueError, match="memory_fill"):
        MemoryBuffer(1.0, fill="greedy")


def test_buffer_round_trip_with_masked_and_jpeg_exemplars(tmp_path):
    mem = MemoryBuffer(full_exemplar_bytes=20_000, memory_per_class=5)
    keep = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) > 0.5
    mem.fill(0, [Exemplar.from_item(make_item(seed=k), 16, patch_keep=keep) for k in range(3)], 100_000)
    mem.fill(1, [JpegExemplar.from_item(make_item(label=1, seed=9), 16, quality=50)], 100_000)
    torch.save(mem.state_dict(), tmp_path / "mem.pt")
    other = MemoryBuffer(1.0)
    other.load_state_dict(torch.load(tmp_path / "mem.pt", weights_only=True))
    assert other.report() == mem.report()
    for a, b in zip(mem.exemplars(), other.exemplars()):
        ia, ib = a.to_item(12), b.to_item(12)
        assert torch.equal(ia["image"], ib["image"]) and torch.equal(ia["patch_keep"], ib["patch_keep"])
        assert torch.equal(ia["text_ids"], ib["text_ids"]) and ia["label"] == ib["label"]
    with pytest.raises(ValueError, match="unknown exemplar kind"):
        exemplar_from_state({"kind": "png"})


def test_jpeg_exemplar_counts_jpeg_bytes_and_decodes_close():
    item = make_item()
    item["image"] = torch.zeros_like(item["image"])  # smooth image: JPEG compresses it well
    ex = JpegExemplar.from_item(item, 16, quality=50)
    assert ex.nbytes == ex.jpeg.numel() + 8 * 4 and ex.nbytes < Exemplar.from_item(item, 16).nbytes / 10
    back = ex.to_item(12)
    assert back["image"].shape == item["image"].shape and back["patch_keep"].all()
    assert (back["image"] - item["image"]).abs().max() < 0.05
    assert torch.equal(back["text_ids"], item["text_ids"])
    with pytest.raises(ValueError, match="jpeg_quality"):
        JpegExemplar.from_item(item, 16, quality=0)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    logs = tmp_path_factory.mktemp("runs")
    with one_thread():
        yield {method: run_experiment(demo_config(root, logs, method)) for method in ("replay", "mrdc", "emm")}


def test_emm_stores_more_exemplars_than_replay_at_equal_budget(demo_runs):
    res = {m: json.loads((d / "results.json").read_text()) for m, d in demo_runs.items()}
    last = {m: r["memory"][-1] for m, r in res.items()}
    assert last["emm"]["class_budget_bytes"] == last["replay"]["class_budget_bytes"]
    for m in ("emm", "mrdc"):
        assert last[m]["exemplars"] > last["replay"]["exemplars"], m
    for m, mem in last.items():
        for c, n in mem["bytes_per_class"].items():
            assert n <= mem["class_budget_bytes"], (m, c)
    # masked exemplars keep fewer patches and tokens than the full ones
    assert last["emm"]["mean_patches"] < last["replay"]["mean_patches"]
    assert last["emm"]["mean_tokens"] < last["replay"]["mean_tokens"]
    assert res["emm"]["finished"] and len(res["emm"]["accuracy_per_phase"]) == 2


def test_emm_writes_figure_four(demo_runs):
    for phase in (0, 1):
        png = demo_runs["emm"] / f"fig4_phase{phase}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


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
