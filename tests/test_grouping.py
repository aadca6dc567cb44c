"""Length-grouped batches (length_group_window): every sample once per epoch, deterministic per (seed, epoch), less
padding than random batches, the real token counts of dataset samples and masked exemplars, the same global batches
under DDP, an exact resume of a grouped run, and the resume of a run saved before the key existed."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, TensorDataset

from emmcil.engine.driver import IncrementalRun, run_experiment
from emmcil.memory.augment import AugmentedReplay
from emmcil.memory.exemplar import Exemplar
from emmcil.engine.loaders import PhaseBatches, image_tokens, sequence_lengths
from run_helpers import demo_config, one_thread, settings

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


def replay_mix(n_new=60, n_masked=240, seed=0) -> np.ndarray:
    """Sequence lengths of an emm phase: full new samples (40 text + 1 + 192 patches, as ViLT-B/32 at 384x512) and
    masked exemplars keeping 20-35 % of their patches."""
    rng = np.random.default_rng(seed)
    new = np.full(n_new, 41 + 192)
    masked = 41 + rng.integers(38, 68, size=n_masked)
    return rng.permutation(np.concatenate([new, masked]))


def epoch(sampler, e: int = 0) -> list[list[int]]:
    """Epoch ``e``'s batches as lists of dataset indices (PhaseBatches yields (epoch, index, weight) keys)."""
    sampler.set_epoch(e)
    return [[i for _, i, _ in b] for b in sampler]


def grouped(n, batch, window, seed=1, lengths=None, **kw):
    lengths = replay_mix()[:n] if lengths is None else lengths
    return PhaseBatches(n, batch, seed=seed, lengths=lengths, window=window, world_size=1, rank=0, **kw)


@pytest.mark.parametrize("n,batch,window", [(300, 32, 50), (300, 32, 3), (37, 8, 2), (5, 8, 1), (64, 8, 8)])
def test_every_sample_exactly_once_per_epoch(n, batch, window):
    sampler = grouped(n, batch, window)
    for e in range(3):
        batches = epoch(sampler, e)
        assert len(batches) == len(sampler) == -(-n // batch)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert sum(len(b) < batch for b in batches) == (n % batch != 0)  # at most one short batch


def test_deterministic_per_seed_and_epoch():
    a, b, c = grouped(300, 32, 4, seed=7), grouped(300, 32, 4, seed=7), grouped(300, 32, 4, seed=8)
    first, second = epoch(a, 0), epoch(a, 1)
    assert first == epoch(b, 0) and second == epoch(b, 1)  # same (seed, epoch): the same batches, so resume is exact
    assert first != second and first != epoch(c, 0)  # a new order every epoch and every seed
    assert epoch(a, 1) == second  # set_epoch, not how often the sampler was iterated, decides


def padded_tokens(batches, lengths: np.ndarray) -> int:
    """Tokens a model computes for ``batches`` (lists of indices) when each batch is padded to its longest."""
    return int(sum(len(b) * int(lengths[b].max()) for b in map(np.asarray, batches) if len(b)))


def test_grouping_cuts_the_padding_of_mixed_batches():
    """With masked exemplars among full samples nearly every random batch is padded to a full image; grouped batches
    are padded to their own longest, close to the tokens the samples really have."""
    lengths = replay_mix()
    real = int(lengths.sum())
    random_batches = epoch(PhaseBatches(len(lengths), 32, seed=0, world_size=1, rank=0))
    random_cost = padded_tokens(random_batches, lengths)
    grouped_cost = padded_tokens(epoch(grouped(len(lengths), 32, 50, lengths=lengths)), lengths)
    assert random_cost > 1.8 * real  # 60 full + 240 masked: random batches cost 1.9x the real tokens
    assert grouped_cost < 1.1 * real and grouped_cost < 0.6 * random_cost  # grouped: 1.07x
    # a small window groups less: still better than random, worse than the whole epoch
    small = epoch(grouped(len(lengths), 32, 2, lengths=lengths))
    assert grouped_cost <= padded_tokens(small, lengths) < random_cost


def test_ddp_ranks_split_the_same_global_batches():
    """Under DDP (and with accumulation) each global batch is split into sorted micro-batches across the ranks: the
    ranks together see exactly the single process's batches, step by step, each micro-batch of similar lengths."""
    lengths = replay_mix(n_new=50, n_masked=251)  # 301 samples
    single = epoch(grouped(301, 32, 5, lengths=lengths))
    for world, accumulation in ((2, 1), (2, 2), (3, 1)):
        ranks = [epoch(PhaseBatches(301, 32, accumulation, seed=1, lengths=lengths, window=5, world_size=world,
                                    rank=r)) for r in range(world)]
        assert all(len(r) == accumulation * len(single) for r in ranks)
        for step, batch in enumerate(single):
            micro = [m for a in range(accumulation) for m in (ranks[r][step * accumulation + a] for r in range(world))]
            assert sorted(i for m in micro for i in m) == sorted(batch), (world, accumulation, step)


def test_bad_window_and_unknown_dataset_are_errors():
    with pytest.raises(ValueError, match="length_group_window=2: >= 0, and > 0 needs the length of every sample"):
        PhaseBatches(4, 2, lengths=[1] * 3, window=2)
    with pytest.raises(TypeError, match="TensorDataset"):
        image_tokens(TensorDataset(torch.zeros(3)), 64, 16)


def test_token_counts_are_what_the_backbone_gets(demo_root, tmp_path):
    """image_tokens of a phase's training set (new samples + masked exemplars) equals the patches the collated items
    really feed the model: the resized image's grid for a sample, the kept patches for an exemplar."""
    run_ = IncrementalRun(demo_config(demo_root, tmp_path, "replay", image_size=64))
    new = run_.data.scenario.train_dataset(0)
    rng = np.random.default_rng(0)
    exemplars = []
    for i in range(6):
        item = new[i]
        rows, cols = item["image"].shape[-2] // 16, item["image"].shape[-1] // 16
        keep = torch.from_numpy(rng.random((rows, cols)) < 0.3)
        exemplars.append(Exemplar.from_item(item, 16, patch_keep=keep))
    mixed = ConcatDataset([new, AugmentedReplay(exemplars, 32)])
    counts = image_tokens(mixed, 64, 16)
    assert len(counts) == len(mixed)
    for i in list(range(5)) + list(range(len(new), len(mixed))):
        item = mixed[i]
        h, w = item["image"].shape[-2:]
        expected = int(item["patch_keep"].sum()) if "patch_keep" in item else (h // 16) * (w // 16)
        assert counts[i] == expected, i
    assert counts[len(new):].max() < counts[:len(new)].min()  # the masked exemplars are the short ones
    assert (sequence_lengths(mixed, 64, 16, 32) == counts + 33).all()


def test_grouped_run_resumes_exactly(demo_root, tmp_path, capsys):
    """emm with length_group_window: a run stopped after phase 0 and resumed equals an uninterrupted one; the run
    name says the batches were grouped (a key that changes results)."""
    with one_thread():
        whole = run_experiment(demo_config(demo_root, tmp_path / "whole", "emm", length_group_window=2,
                                           mask_figure=0))
        stopped = demo_config(demo_root, tmp_path / "stopped", "emm", length_group_window=2, mask_figure=0,
                                   stop_after_phase=0)
        run_experiment(stopped)
        resumed = run_experiment({**stopped, "stop_after_phase": -1})
    assert whole.name == resumed.name != demo_config(demo_root, tmp_path, "emm", mask_figure=0)["exp_name"]
    assert "resuming" in capsys.readouterr().out
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, resumed))
    assert a == b and a["finished"] and a["memory"][0]["exemplars"] > 0


def test_a_run_saved_before_the_key_existed_resumes(demo_root, tmp_path):
    """config.json of a run made before length_group_window existed lacks it: at its default the run resumes."""
    cfg = demo_config(demo_root, tmp_path, "finetune", stop_after_phase=0)
    with one_thread():
        run_dir = run_experiment(cfg)
        saved = json.loads((run_dir / "config.json").read_text())
        del saved["length_group_window"]
        (run_dir / "config.json").write_text(json.dumps(saved))
        assert run_experiment({**cfg, "stop_after_phase": -1}) == run_dir
    assert json.loads((run_dir / "results.json").read_text())["finished"]


def test_loader_workers_never_exceed_the_cores_this_process_may_use():
    """The datasets' default of 8 workers on a 2-core machine: as many workers as cores, and torch does not warn."""
    import os
    import warnings

    from emmcil.engine.loaders import loader_workers, make_loader

    cores = len(os.sched_getaffinity(0))
    assert loader_workers(0) == 0 and loader_workers(10_000) == cores and loader_workers(1) == min(1, cores)
    s = settings(num_workers=10_000, patch_size=16, per_gpu_batchsize=2, length_group_window=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "suggested max number of worker" is a UserWarning
        loader = make_loader(TensorDataset(torch.zeros(4, 1)), s, train=False)
    assert loader.num_workers == cores
