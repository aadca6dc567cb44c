"""Pieces of the incremental driver: growing head, exemplars and memory, herding, batching, schedule, run dir."""
import os
import stat

import numpy as np
import pytest
import torch

from emmcil.data import ArrowDataset, ensure_demo, get_tokenizer, model_images, pixelbert_transform
from emmcil.data.transforms import normalize_uint8
from emmcil.engine import rundir
from emmcil.engine.loaders import KeepCollate
from emmcil.engine.driver import (accumulation_steps, deterministic_kernels, gather_uneven, phase_seed,
                                  shows_progress_bar)
from emmcil.memory.exemplar import Exemplar, exemplar_from_state, full_exemplar_nbytes
from emmcil.memory.herding import herding_order
from emmcil.memory.buffer import mean_full_exemplar_nbytes
from emmcil.engine.module import IncrementalModule
from emmcil.methods import Method
from emmcil.methods.recipes import PROJECT
from emmcil.model import build_backbone
from emmcil.model.heads import IncrementalClassifier
from run_helpers import resolve, settings

P = 16


def make_item(h=3, w=4, T=12, n_tokens=7, label=1, seed=0):
    """A dataset-format item: image uint8 (3, h*P, w*P) as the data loaders give it, n_tokens valid tokens of T."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (3, h * P, w * P), generator=g, dtype=torch.uint8)
    text_ids = torch.zeros(T, dtype=torch.long)
    text_ids[:n_tokens] = torch.randint(1000, 30000, (n_tokens,), generator=g)
    text_ids[0], text_ids[n_tokens - 1] = 101, 102
    text_masks = (text_ids != 0).long()
    return {"image": pixels, "text_ids": text_ids, "text_masks": text_masks, "label": label,
            "orig_label": label + 10, "index": 5, "image_id": f"img{seed}", "raw_text": "x", "missing_type": 0}


# ---------------------------------------------------------------- classifier
def test_classifier_growth_keeps_old_rows():
    torch.manual_seed(0)
    head = IncrementalClassifier(8, 3)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    w, b = head.weight.detach().clone(), head.bias.detach().clone()
    f = torch.randn(5, 8)
    old_logits = head(f).detach()
    head.add_classes(2)
    assert head.num_classes == 5 and head.weight.shape == (5, 8)
    assert torch.equal(head.weight[:3], w) and torch.equal(head.bias[:3], b)  # copied: bitwise
    # The same logits from a 5-output instead of a 3-output matmul: BLAS may pick another kernel and sum the 8
    # products in another order, so they agree to float32 rounding (~1e-7 here), not bitwise. A row that was not
    # copied would move them by about the init scale (0.02).
    torch.testing.assert_close(head(f)[:, :3], old_logits, rtol=1e-5, atol=1e-6)
    assert torch.all(head.bias[3:] == 0) and head.weight[3:].std() < 0.1
    state = head.state_dict()
    fresh = IncrementalClassifier(8, 1)
    fresh.load_state_dict(state)  # grows to the checkpoint's size
    assert fresh.num_classes == 5 and torch.equal(fresh.weight, head.weight)  # loaded: bitwise
    with pytest.raises(ValueError):
        head.grow_to(2)


def test_module_freeze_policy_and_optimizer_groups(tiny_cfg):
    cfg = dict(tiny_cfg, **PROJECT.values("food101"), load_path="", tuning="ssf")
    s = settings(**cfg)
    module = IncrementalModule(Method(s), s)
    n1 = module.add_classes(3)
    n2 = module.add_classes(2)
    assert n2 - n1 == 2 * (cfg["hidden_size"] + 1)  # new rows train
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert "classifier.weight" in trainable and "backbone.pooler.dense.weight" in trainable
    assert all(".ssf" in n or n.startswith(("classifier.", "backbone.pooler.")) for n in trainable)

    class FakeTrainer:
        estimated_stepping_batches = 100
    module._trainer = FakeTrainer()  # configure_optimizers reads trainer.estimated_stepping_batches
    opt = module.configure_optimizers()
    optimizer, sched = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 2e-2 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-8
    assert sched.get_last_lr()[0] == 0.0  # warmup starts at 0


def test_accumulation_reaches_the_effective_batch():
    cfg = dict(resolve("demo", "finetune"), batch_size=256, per_gpu_batchsize=32, devices=2, num_nodes=1)
    assert accumulation_steps(settings(cfg)) == 4
    assert accumulation_steps(settings(cfg, devices=[0, 1, 2, 3], num_nodes=2)) == 1
    assert accumulation_steps(settings(cfg, batch_size=16)) == 1


def test_gather_uneven_shards():
    """Two ranks with 3 and 1 predictions (Lightning's predict sampler does not pad); rank 0's view."""
    other = torch.tensor([[True, False]])

    class TwoRanks:
        def all_gather(self, x):
            if x.shape == (1,):  # the counts
                return torch.stack([x, torch.tensor([len(other)])])
            theirs = torch.cat([other.to(x.dtype), x.new_zeros(len(x) - len(other), *x.shape[1:])])
            return torch.stack([x, theirs])

    mine = torch.tensor([[True, True], [False, False], [False, True]])
    out = gather_uneven(TwoRanks(), mine, "cpu")
    assert out.dtype == torch.bool and out.tolist() == mine.tolist() + other.tolist()


def test_phase_seeds_are_distinct_and_stable():
    seeds = {phase_seed(0, t) for t in range(20)} | {phase_seed(1, t) for t in range(20)}
    assert len(seeds) == 40 and phase_seed(0, 3) == phase_seed(0, 3)


# ---------------------------------------------------------------- exemplars
def test_full_exemplar_round_trip_and_bytes():
    item = make_item()
    ex = Exemplar.from_item(item, P)
    assert ex.pixels.shape == (12, 3, P, P) and ex.pixels.dtype == torch.uint8
    assert ex.coords.dtype == torch.uint8 and ex.token_ids.dtype == torch.uint16
    assert ex.nbytes == full_exemplar_nbytes(3, 4, 7, P) == 12 * (3 * P * P + 2) + 7 * 4
    back = ex.to_item(max_text_len=12)
    assert torch.equal(back["image"], item["image"]) and back["patch_keep"].all()  # the uint8 pixels, losslessly
    # an item normalised by pixelbert_transform (floats on ToTensor's grid) is stored as the same pixels, bitwise
    assert torch.equal(Exemplar.from_item({**item, "image": normalize_uint8(item["image"])}, P).pixels, ex.pixels)
    assert torch.equal(back["text_ids"], item["text_ids"]) and torch.equal(back["text_masks"], item["text_masks"])
    assert (back["label"], back["orig_label"], back["index"]) == (1, 11, 5)
    ex2 = exemplar_from_state(ex.state_dict())
    assert ex2.nbytes == ex.nbytes and torch.equal(ex2.pixels, ex.pixels)
    old = {k: v for k, v in ex.state_dict().items() if k != "kind"}  # saved before the kinds shared a base
    assert isinstance(exemplar_from_state(old), Exemplar) and exemplar_from_state(old).costs == ex.costs


def test_masked_exemplar_keeps_only_what_it_stores():
    item = make_item()
    keep = torch.zeros(3, 4, dtype=torch.bool)
    keep[0, 1] = keep[2, 3] = True
    tokens = torch.zeros(12, dtype=torch.bool)
    tokens[[0, 2, 6]] = True
    ex = Exemplar.from_item(item, P, patch_keep=keep, token_keep=tokens)
    assert ex.num_patches == 2 and ex.num_tokens == 3
    assert ex.nbytes == 2 * (3 * P * P + 2) + 3 * 4
    back = ex.to_item(12)
    assert torch.equal(back["patch_keep"], keep)
    assert torch.equal(back["image"][:, 0:P, P:2 * P], item["image"][:, 0:P, P:2 * P])
    assert back["image"][:, P:2 * P, 0:P].sum() == 0  # dropped: blank canvas, excluded by patch_keep
    assert back["text_masks"].tolist() == [1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert back["text_ids"][[0, 2, 6]].tolist() == item["text_ids"][[0, 2, 6]].tolist()
    assert back["text_ids"][1] == 0  # [PAD]


def test_replayed_canvas_equals_masking_the_original(tiny_cfg):
    """The canvas' blank pixels never matter: only patch_keep decides what the model sees."""
    torch.manual_seed(0)
    vilt = build_backbone(dict(tiny_cfg, vocab_size=30522)).eval()
    item = make_item(h=4, w=4)
    keep = torch.rand(4, 4) > 0.5
    keep[0, 0] = True
    replay = Exemplar.from_item(item, P, patch_keep=keep).to_item(12)
    batch = model_images(KeepCollate(P)([replay]))  # normalised as on the device
    with torch.no_grad():
        a = vilt(batch["text_ids"], batch["text_masks"], batch["images"], batch["pixel_masks"],
                 patch_keep=batch["patch_keep"]).pooled
        b = vilt(item["text_ids"][None], item["text_masks"][None], normalize_uint8(item["image"][None]),
                 torch.ones(1, 4 * P, 4 * P, dtype=torch.bool), patch_keep=keep[None]).pooled
    torch.testing.assert_close(a, b)


def test_keep_collate_mixes_data_items_and_exemplars():
    data_item = make_item(h=2, w=3, seed=1)
    keep = torch.tensor([[True, False, True, False], [False, False, True, True], [True, True, True, False]])
    replay = Exemplar.from_item(make_item(h=3, w=4, seed=2), P, patch_keep=keep).to_item(12)
    batch = KeepCollate(P)([data_item, replay])
    assert batch["images"].shape == (2, 3, 3 * P, 4 * P) and batch["patch_keep"].shape == (2, 3, 4)
    assert batch["patch_keep"][0, :2, :3].all() and not batch["patch_keep"][0, 2:].any()
    assert not batch["patch_keep"][0, :, 3:].any() and torch.equal(batch["patch_keep"][1], keep)
    assert batch["labels"].tolist() == [1, 1] and "patch_keep" not in KeepCollate(P)([data_item])


# ---------------------------------------------------------------- memory (more in test_memory.py)
class _Rows:
    """Some rows of an ArrowDataset, with the accessors mean_full_exemplar_nbytes uses."""

    def __init__(self, ds, rows):
        self.ds, self.rows = ds, list(rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.ds[self.rows[i]]

    def image_bytes(self, i):
        return self.ds.image_bytes(self.rows[i])

    def caption(self, i):
        return self.ds.caption(self.rows[i])


def test_mean_full_exemplar_cost_matches_real_exemplars(tmp_path_factory):
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    tok = get_tokenizer()
    for size in (96, 64):  # 96 leaves the demo's images as they are, 64 resizes them
        ds = _Rows(ArrowDataset(root / "demo_train.arrow", tok, pixelbert_transform(size, P), 40), range(0, 300, 11))
        cost = mean_full_exemplar_nbytes(ds, tok, size, P, 40)  # from image headers, no decoding
        real = np.mean([Exemplar.from_item(ds[i], P).nbytes for i in range(len(ds))])  # decoded, transformed
        assert cost["num_samples"] == len(ds) and cost["mean_bytes"] == pytest.approx(real, rel=1e-12)


# ---------------------------------------------------------------- herding
def test_herding_order():
    torch.manual_seed(0)
    f = torch.randn(30, 6)
    order = list(herding_order(f))
    assert sorted(order) == list(range(30))
    fn = torch.nn.functional.normalize(f.double(), dim=1)
    assert order[0] == int((fn - fn.mean(0)).norm(dim=1).argmin())  # first: closest to the class mean
    assert order == list(herding_order(f)) and list(herding_order(f, limit=4)) == order[:4]
    # the running mean of the first k approaches the class mean faster than a random prefix
    err = lambda idx: (fn[idx].mean(0) - fn.mean(0)).norm()  # noqa: E731
    assert err(order[:5]) < err(list(range(5)))


# ---------------------------------------------------------------- run directory
def test_atomic_write_keeps_the_previous_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    rundir.write_json(path, {"a": 1})

    def broken(f):
        f.write(b'{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError):
        rundir.atomic_write(path, broken)
    assert rundir.read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_writes_follow_the_umask(tmp_path):
    """Every writer goes through emmcil.atomic: files get 0666 less the umask, as any other tool's."""
    from emmcil.data import write_arrow

    old = os.umask(0o027)
    try:
        rundir.write_json(tmp_path / "a.json", {"a": 1})
        write_arrow([], tmp_path / "d_train.arrow")
        rundir.RunDir(tmp_path / "r").open(settings(lr=0.1)).save_checkpoint(0, {})
    finally:
        os.umask(old)
    for path in (tmp_path / "a.json", tmp_path / "d_train.arrow", tmp_path / "r" / "checkpoints" / "phase_0.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_results_config_keeps_what_changes_results_for_the_method():
    base = {"lr": 0.1, "num_workers": 4, "tau_image": 0.5, "memory_per_class": 5, "missing_ratio": 0.7,
            "load_path": "/a/b/vilt.ckpt"}
    fin = rundir.results_config(settings(**base))
    assert fin["lr"] == 0.1 and fin["load_path"] == "vilt.ckpt" and fin["missing_type"] == "none"
    for absent in ("num_workers", "tau_image", "memory_per_class", "memory_total", "missing_ratio", "log_dir"):
        assert absent not in fin, absent  # not a result key, another method's, no memory, nothing missing
    emm = rundir.results_config(settings(resolve("demo", "emm"), **base))
    assert {"tau_image", "memory_per_class", "memory_budget_mode"} <= set(emm) and "memory_total" not in emm
    assert "missing_ratio" in rundir.results_config(settings(missing_type="text"))
    # an older record holding every method's keys does not block resuming; a changed key does
    assert rundir.config_diff({**fin, "l2p_pull": 0.1}, fin) == {}
    assert rundir.config_diff(fin, {**fin, "lr": 0.2}) == {"lr": (0.1, 0.2)}


def test_config_diff_and_mismatch(tmp_path):
    run = rundir.RunDir(tmp_path / "r").open(settings(lr=0.5))
    run.open(settings(lr=0.1, num_workers=2))  # no checkpoint yet (e.g. the data was missing): replaced
    run.save_checkpoint(0, {})
    run.open(settings(lr=0.1, num_workers=8))  # worker count does not change results
    with pytest.raises(rundir.ConfigMismatchError, match=r"lr: 0.1 \(saved\) != 0.3 \(now\)"):
        run.open(settings(lr=0.3, num_workers=2))
    run.open(settings(lr=0.3), restart=True)
    assert rundir.read_json(run.config_path) == settings(lr=0.3).to_config()


def test_latest_checkpoint_skips_unreadable_files(tmp_path):
    run = rundir.RunDir(tmp_path / "r").open(settings())
    assert run.latest_checkpoint() is None
    run.save_checkpoint(0, {"x": 1})
    run.checkpoint_path(1).write_bytes(b"truncated")  # e.g. copied by hand, cut short
    (run.checkpoint_dir / ".tmp-phase_2.pt.abc").write_bytes(b"half")  # a write that was killed
    assert run.latest_checkpoint()["x"] == 1
    run.open(settings())
    assert not list(run.checkpoint_dir.glob(".tmp-*"))
    run.save_checkpoint(2, {"x": 3})
    run.prune_checkpoints(1)
    assert run.finished_phases() == [2]


def test_keys_added_by_newer_code_with_their_default_do_not_block_resume(tmp_path):
    run = rundir.RunDir(tmp_path / "r").open(settings(lr=0.1))
    run.save_checkpoint(0, {})
    saved = rundir.read_json(run.config_path)
    del saved["head"]  # a key added after the run started (rundir.ADDED_KEY_DEFAULTS)
    rundir.write_json(run.config_path, saved)
    defaults = {"head": "linear"}
    run.open(settings(lr=0.1, head="linear"), new_key_defaults=defaults)
    rundir.write_json(run.config_path, saved)
    with pytest.raises(rundir.ConfigMismatchError, match=r"head: '<absent>' \(saved\) != 'mlp' \(now\)"):
        run.open(settings(lr=0.1, head="mlp"), new_key_defaults=defaults)  # not the default: a real change
    with pytest.raises(rundir.ConfigMismatchError, match=r"head: '<absent>' \(saved\) != 'linear'"):
        run.open(settings(lr=0.1), new_key_defaults={})  # unknown to the defaults
    # a retired key the saved config holds (a version's key that no longer exists) is left out
    rundir.write_json(run.config_path, {**saved, "head": "linear", "retired_key": 1})
    run.open(settings(lr=0.1))


def test_the_progress_bar_shows_on_a_terminal_only():
    """A log file (SLURM, nohup, a pipe) gets no tqdm bar, whose carriage-return updates add thousands of lines a
    phase; a terminal gets it unless progress_bar=False."""
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    on, off = settings(progress_bar=True), settings(progress_bar=False)
    assert shows_progress_bar(on, Terminal())
    assert not shows_progress_bar(off, Terminal())
    assert not shows_progress_bar(on, io.StringIO())


def test_deterministic_kernels_are_on_for_a_cpu_run_unless_set():
    """None (the default): torch's deterministic kernels on a CPU, where two runs of one command with 2 threads
    otherwise differed (phase accuracy 56, 59, 51 % in three runs of `demo emm num_threads=2 max_epoch=8`), and off
    on a GPU; a value given is Lightning's flag as it is."""
    cpu = dict(resolve("demo", "finetune"), deterministic=None, accelerator="cpu")
    assert deterministic_kernels(settings(cpu)) is True
    assert deterministic_kernels(settings(cpu, accelerator="gpu")) is False
    gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    assert deterministic_kernels(settings(cpu, accelerator="auto")) is (not gpu)
    assert deterministic_kernels(settings(cpu, deterministic=False)) is False
    assert deterministic_kernels(settings(cpu, deterministic="warn", accelerator="gpu")) == "warn"
