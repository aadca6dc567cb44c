"""The same command gives the same numbers however the work is spread, or says why not: DataLoader workers (0, 1, 2,
persistent, a resume with another count), the batch layout (micro-batches, accumulation, per-sample dropout; the
two-process case is in test_ddp.py), what still depends on the layout named as a result key, the values a run used
recorded; and a phase whose loss or weights turn non-finite stops, saying where and why."""
import json
import os
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from emmcil.engine import rundir
from emmcil.engine.driver import IncrementalRun, run_experiment
from emmcil.engine.loaders import PhaseBatches, SeededSamples
from emmcil.engine.module import NonFiniteError
from emmcil.model import ViLT, ViLTConfig
from emmcil.model.keyed import sample_keys
from run_helpers import demo_config, one_thread, settings

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


def emm(demo_root, log_dir, **updates) -> dict:
    """emm on the demo, 2 phases of 2 epochs of 3 steps (of 16): exemplar augmentation and dropout in play."""
    return demo_config(demo_root, log_dir, "emm", max_epoch=2, limit_train_batches=3, mask_figure=0, **updates)


def test_num_workers_0_1_2_give_identical_results(demo_root, tmp_path):
    """results.json is the same file for a run with 0 workers and one that ran phase 0 with 2 workers, stopped, and
    was resumed with 1 (workers persistent from each phase's second epoch on). It used to differ with the count
    and the resume was accepted without a word. config.json records the count each process used."""
    whole = run_experiment(emm(demo_root, tmp_path / "w0", num_workers=0))
    stopped = emm(demo_root, tmp_path / "w2w1", num_workers=2, stop_after_phase=0)
    run_experiment(stopped)
    resumed = run_experiment({**stopped, "num_workers": 1, "stop_after_phase": -1})
    assert whole.name == resumed.name and (whole / "results.json").read_text() == (resumed / "results.json").read_text()
    results = json.loads((whole / "results.json").read_text())
    assert results["finished"] and results["memory"][-1]["exemplars"] > 0
    used = [p["resolved"]["num_workers"] for p in rundir.read_json(resumed / "config.json")["provenance"]]
    assert used == [min(2, len(os.sched_getaffinity(0))), 1]


def test_micro_batches_and_accumulation_give_the_same_training(demo_root, tmp_path):
    """per_gpu_batchsize 16 (one micro-batch a step) and 4 (four, accumulated) train on the same global batches
    with the same dropout masks: the same accuracies, weights equal to float rounding (the sums run in another
    order). Measured, largest |difference| of a trainable weight: 1.5e-6 after phase 0, 2e-5 after phase 1 (Adam
    divides by the root of a gradient's second moment, which enlarges the rounding of near-zero gradients); the
    bounds leave a factor of 50."""
    replay = dict(max_epoch=2, limit_train_batches=3)
    one = run_experiment(demo_config(demo_root, tmp_path / "one", "replay", **replay))
    four = run_experiment(demo_config(demo_root, tmp_path / "four", "replay", per_gpu_batchsize=4, **replay))
    assert one.name == four.name  # per_gpu_batchsize does not name the run: it changes nothing but rounding
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, four))
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    for phase, tolerance in ((0, 1e-4), (1, 1e-3)):
        wa, wb = (torch.load(d / "checkpoints" / f"phase_{phase}.pt", weights_only=False)["trainable"]
                  for d in (one, four))
        assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < tolerance, phase
    settings = rundir.read_json(four / "config.json")["provenance"][0]["resolved"]
    assert (settings["accumulation"], settings["micro_batch"], settings["effective_batch"]) == (4, 4, 16)


class Draws(Dataset):
    """Items made of draws from torch's, NumPy's and Python's global RNGs (as RandAugment and emm's augmentation)."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return {"x": torch.rand(()).item() + np.random.rand() + random.random(), "i": i}


@pytest.mark.parametrize("workers", [1, 2])
def test_every_sample_draws_the_same_in_any_worker(workers):
    """What a sample draws is a function of (seed, epoch, index): the same with 0 workers, or 1 or 2 persistent
    ones, over two epochs; different between epochs."""
    def epochs(num_workers):
        batches = PhaseBatches(12, 4, seed=5, world_size=1, rank=0)
        loader = DataLoader(SeededSamples(Draws(), 5), batch_sampler=batches, num_workers=num_workers,
                            persistent_workers=num_workers > 0, collate_fn=lambda items: items)
        out = []
        for e in range(2):
            batches.set_epoch(e)
            out.append({item["i"]: (item["x"], item["sample_seed"]) for b in loader for item in b})
        return out

    main, pool = epochs(0), epochs(workers)
    assert main == pool and main[0] != main[1] and sorted(main[0]) == list(range(12))


def test_loss_weights_make_every_layout_a_global_mean():
    """Sum over ranks and micro-batches of (micro-batch mean x its weights' sum), divided by accumulation x world
    (Lightning, DDP), is the global batch's mean: also for a last batch smaller than the micro-batch count, whose
    empty slots are padded with weight 0."""
    loss = torch.rand(23, dtype=torch.float64)
    for world, accumulation in ((1, 1), (1, 3), (2, 2), (4, 2)):
        ranks = [list(PhaseBatches(23, 10, accumulation, seed=0, world_size=world, rank=r)) for r in range(world)]
        steps = len(ranks[0]) // accumulation
        single = [[i for _, i, _ in b] for b in PhaseBatches(23, 10, seed=0, world_size=1, rank=0)]
        for s in range(steps):
            total = sum(loss[[i for _, i, _ in m]].mean() * sum(w for _, _, w in m)
                        for r in range(world) for m in ranks[r][s * accumulation:(s + 1) * accumulation])
            assert torch.isclose(total / (accumulation * world), loss[single[s]].mean()), (world, accumulation, s)


def test_dropout_is_the_same_in_any_batch_layout():
    """Per-sample keys: a batch of 4, or its halves with their own (narrower) padding, get the same dropout,
    attention dropout, stochastic depth and patch sampling; one sample's new key changes its output alone."""
    torch.manual_seed(0)
    model = ViLT(ViLTConfig(hidden_size=32, num_layers=2, num_heads=2, patch_size=16, image_size=64, vocab_size=100,
                            attn_drop_rate=0.1, drop_path_rate=0.1, max_image_len=10)).train()
    ids, masks = torch.randint(1, 100, (4, 12)), torch.ones(4, 12, dtype=torch.long)
    images, pixels = torch.randn(4, 3, 64, 96), torch.ones(4, 64, 96, dtype=torch.bool)
    images[2:, :, :, 64:], pixels[2:, :, 64:] = 0, False  # the last two are 64 px wide, padded
    keys = torch.tensor([11, 22, 33, 44])
    with sample_keys(model, keys):
        whole = model(ids, masks, images, pixels).pooled
    with sample_keys(model, keys[:2]):
        first = model(ids[:2], masks[:2], images[:2], pixels[:2]).pooled
    with sample_keys(model, keys[2:]):
        second = model(ids[2:], masks[2:], images[2:, :, :, :64], pixels[2:, :, :64]).pooled
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-6)  # float rounding of other shapes only
    with sample_keys(model, torch.tensor([11, 22, 33, 45])):
        other = model(ids, masks, images, pixels).pooled
    changed = (other - whole).abs().amax(1)
    assert changed[:3].max() == 0 and changed[3] > 1e-3
    with torch.no_grad():  # outside sample_keys: torch's RNG, as nn.Dropout
        assert not torch.equal(model(ids, masks, images, pixels).pooled, model(ids, masks, images, pixels).pooled)


def test_what_still_depends_on_the_layout_names_the_run():
    """per_gpu_batchsize, devices and num_nodes change only rounding, so they do not name the run, except where the
    numbers depend on the layout: l2p's batchwise prompts, rebq's reconstruction loss, model_rng="torch" with
    dropout."""
    def differ(*named, **updates):
        base = demo_config("", "runs", *named, **updates)
        return base["exp_name"] != demo_config("", "runs", *named, per_gpu_batchsize=8, **updates)["exp_name"]

    assert not differ("emm") and not differ("l2p", l2p_batchwise=False)
    assert differ("l2p") and differ("rebq") and differ("emm", model_rng="torch")
    assert not differ("emm", model_rng="torch", drop_rate=0.0)
    assert rundir.layout_dependence(settings(demo_config("", "runs", "l2p"))).startswith("l2p_batchwise")


@pytest.mark.parametrize("what", ["loss", "weights"])
def test_a_non_finite_loss_or_weight_stops_the_phase_naming_it(demo_root, tmp_path, what, monkeypatch):
    """At the 3rd training batch of phase 0 the loss turns NaN (or a weight does): the phase stops with an error
    naming phase, step and likely cause; no checkpoint and no results.json marked finished (the fault of
    precision=16-true, which ran to a 'finished' run of NaN weights at chance accuracy)."""
    run = IncrementalRun(demo_config(demo_root, tmp_path, "finetune", max_epoch=2, limit_train_batches=3,
                                     log_every_n_steps=1))
    original, calls = run.method.training_loss, []

    def poisoned(module, batch, output, logits):
        calls.append(1)
        loss = original(module, batch, output, logits)
        if len(calls) == 3 and what == "loss":
            return loss * float("nan")
        if len(calls) == 3:  # a finite loss whose gradient overflows: the optimiser step makes the weight NaN
            next(module.classifier.parameters()).register_hook(lambda grad: torch.full_like(grad, float("inf")))
        return loss

    monkeypatch.setattr(run.method, "training_loss", poisoned)
    with pytest.raises(NonFiniteError) as err:
        run.run()
    message = str(err.value)
    word = "loss" if what == "loss" else "trainable weights"
    assert f"phase 0: the training {word} became NaN or infinite at optimiser step 2 (batch 2 of the phase, " \
           f"epoch 0)" in message
    assert "nothing of it is saved" in message and "lr=0.01" in message
    assert len(calls) == 3  # stopped at once (log_every_n_steps=1): no further step ran on NaN weights
    assert not (run.run_dir.path / "checkpoints").exists() and not (run.run_dir.path / "results.json").exists()


def test_limit_train_batches_counts_optimiser_steps_in_any_layout():
    """limit_train_batches=3 (or 0.25 of 12 steps) keeps the epoch's first 3 global batches, the same samples
    whether one process takes them whole or two ranks with 2 accumulation steps take a quarter each."""
    single = [[i for _, i, _ in b] for b in PhaseBatches(120, 10, seed=3, world_size=1, rank=0, limit=3)]
    assert single == [[i for _, i, _ in b] for b in PhaseBatches(120, 10, seed=3, world_size=1, rank=0, limit=0.25)]
    ranks = [list(PhaseBatches(120, 10, 2, seed=3, world_size=2, rank=r, limit=3)) for r in range(2)]
    assert len(single) == 3 and all(len(r) == 6 for r in ranks)
    for step, batch in enumerate(single):
        got = [i for r in ranks for m in r[2 * step:2 * step + 2] for _, i, _ in m]
        assert sorted(got) == sorted(batch)


def test_lightning_tells_the_batches_each_epoch(demo_root, tmp_path, monkeypatch):
    """The epoch a batch belongs to (its order, and every sample's draws) reaches PhaseBatches through Lightning's
    set_epoch at each epoch's start, in every phase: a new order each epoch, persistent workers or not."""
    from emmcil.engine import loaders

    seen, original = [], loaders.PhaseBatches.set_epoch
    monkeypatch.setattr(loaders.PhaseBatches, "set_epoch", lambda self, e: (seen.append(e), original(self, e)))
    IncrementalRun(demo_config(demo_root, tmp_path, "finetune", max_epoch=3, limit_train_batches=1)).run()
    assert seen == [0, 1, 2, 0, 1, 2]
