"""What the phase loop trains and predicts on: the run's datasets and scenario, its batches and DataLoaders.

**Run data** (:func:`build_data`): from the config to the datasets and the class-incremental scenario of a run.

Missing modalities (continual missing-modality learning, RebQ's CMML protocol): with ``missing_type`` "text",
"image" or "both", every split gets its own seeded :class:`~emmcil.data.MissingTable` (``missing_ratio`` of its
samples miss a modality; for "both", ``missing_both_ratio`` of those miss the image, the rest the text), applied
by :class:`~emmcil.data.ArrowDataset` to training and test data alike. The table of split ``s`` is drawn with the
seed ``SeedSequence([missing_seed, crc32(s)])``, so it depends only on (split, type, ratio, both_ratio,
missing_seed) and its size: not on the class order, the number of phases or the training seed (RebQ's cached
tables were keyed by type and ratio only, so the first run fixed them for every later seed).

**Batches** (:class:`KeepCollate`): data items and replayed exemplars (which carry a ``patch_keep`` grid) in
one batch, as uint8 pixels (or JPEG files, ``decode_on="device"``), pinned on CUDA; the module normalises them on
its device (``IncrementalModule.on_after_batch_transfer``; docs/data.md, "Decoding: where each step runs").

**Length-grouped training batches** (:class:`LengthGroupedBatchSampler`): replay compute in proportion to what
an exemplar keeps.

The backbone pads a batch's image tokens to its longest sample (``ViLT.select_tokens``), so a masked exemplar that
keeps a quarter of its patches costs as much as a full image whenever it shares a batch with one; with random
batches nearly every batch holds a new (full) sample. With ``length_group_window = k > 0`` a phase's training
batches are drawn as transformers' ``LengthGroupedSampler`` draws them (``trainer_pt_utils.
get_length_grouped_indices``: mega-batches of 50 batches, each sorted by length): the shuffled samples (new and
replayed alike) are cut into windows of k batches, each window is sorted by sequence length and cut into batches,
and the epoch's batches are shuffled. Samples of similar length then share a batch, so a batch of masked exemplars
costs what they keep.

Off by default (``length_group_window = 0``: uniformly random batches, as ViLT): it changes which samples share a
batch, hence the gradients and the results, and a batch's content now goes with its length (in an ``emm`` phase,
mostly new samples or mostly replayed ones). ``benchmarks/bench_grouping.py`` measures the phase time with and
without it.

Sequence length of a sample (:func:`sequence_lengths`): the ``max_text_len`` text positions (the model masks text
tokens rather than dropping them, so every sample computes all of them), the image [CLS], and the image patches it
feeds the backbone: every patch of its resized image for a dataset sample (from the image header, no decoding),
the kept patches for a masked exemplar (``Exemplar.num_patches``; its whole grid when it is replayed black-filled,
``masked_replay="black"``). The patch merge of ``emm``'s augmentation adds a partner's patches when the item is
drawn; the grouping uses the exemplar's own count.

Determinism: the batches of an epoch depend only on the phase's seed (the driver's ``phase_seed(seed, phase)``)
and the epoch, so a resumed run draws the same batches. Under DDP Lightning replaces the sampler inside this batch
sampler by a ``DistributedSampler`` (``use_distributed_sampler``, on by default: it re-creates a ``BatchSampler``
subclass with its recorded arguments and the new sampler), and each rank groups its own shard; every rank gets
``ceil(shard / batch_size)`` batches.
"""
from __future__ import annotations

import hashlib
import math
import os
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, Dataset, RandomSampler, Sampler

from emmcil.data import (ArrowDataset, IncrementalScenario, MissingTable, PixelbertPixels, arrow_path, class_order,
                         collate, dataset_classes, ensure_demo, get_tokenizer, pixelbert_resize, read_arrow)
from emmcil.data.arrow import check_same_write, classes_path
from emmcil.data.missing import IMAGE_MISSING, MISSING_TYPES, TEXT_MISSING
from emmcil.data.resize import check_stored_resize
from emmcil.data.scenario import RemappedSubset, protocol_of
from emmcil.memory.augment import AugmentedReplay


# ---------------------------------------------------------------------------------------------- run data
@dataclass
class RunData:
    """train: training transform; train_eval: the same rows without augmentation (herding, masking); test."""

    root: Path
    tokenizer: Any
    train: ArrowDataset
    train_eval: ArrowDataset
    test: ArrowDataset
    order: list[int]
    scenario: IncrementalScenario       # over train (training transform)
    eval_scenario: IncrementalScenario  # over train_eval
    dataset_name: str = ""
    missing: dict[str, MissingTable] = field(default_factory=dict)  # split -> its table (empty: nothing missing)
    class_names: list[str] | None = None  # by original label, from {dataset}_classes.json when there is one

    def describe(self) -> dict:
        """JSON-able class order and phases, the data's fingerprint and the missing-modality tables' parameters
        (class_order.json)."""
        phases = [self.scenario.phase_classes(t) for t in range(self.scenario.num_phases)]
        return {"class_order": self.order, "class_names": self.class_names, "num_phases": self.scenario.num_phases,
                "phase_classes": [[self.order[c] for c in p] for p in phases],
                "phase_positions": phases, "root": str(self.root),
                "train_files": [str(p) for p in self.train.paths], "test_files": [str(p) for p in self.test.paths],
                "data_fingerprint": self.fingerprint, "missing": describe_missing(self.missing)}

    @cached_property
    def fingerprint(self) -> dict[str, str]:
        """{"train": ..., "test": ...}: :meth:`ArrowDataset.fingerprint` of the training and the test files."""
        return {"train": self.train.fingerprint(), "test": self.test.fingerprint()}

    def save_missing_tables(self, directory: str | Path) -> list[Path]:
        """Write every split's table (``MissingTable.save``: codes + parameters, .npz) to ``directory``."""
        return [table.save(directory, f"{self.dataset_name}_{split}") for split, table in self.missing.items()]


def split_seed(missing_seed: int, split: str) -> int:
    """The seed of split ``split``'s missing table: a different table per split, all derived from one seed."""
    return int(np.random.SeedSequence([int(missing_seed), zlib.crc32(split.encode())]).generate_state(1)[0])


def missing_tables(cfg: Mapping, sizes: Mapping[str, int]) -> dict[str, MissingTable]:
    """split -> its MissingTable for the config's ``missing_*`` keys; {} for ``missing_type="none"``."""
    kind = cfg.get("missing_type", "none")
    if kind == "none":
        return {}
    if kind not in MISSING_TYPES:
        raise ValueError(f"missing_type={kind!r}: expected 'none' or one of {MISSING_TYPES}")
    return {split: MissingTable.build(n, kind, float(cfg["missing_ratio"]), split_seed(cfg["missing_seed"], split),
                                      both_ratio=float(cfg["missing_both_ratio"]))
            for split, n in sizes.items()}


def concat_tables(tables: list[MissingTable]) -> MissingTable:
    """One table over concatenated splits (e.g. ``train_splits=["train", "val"]``), each keeping its own codes."""
    if len(tables) == 1:
        return tables[0]
    first = tables[0]
    return MissingTable(np.concatenate([t.codes for t in tables]), first.missing_type, first.ratio, first.seed,
                        first.both_ratio)


def describe_missing(tables: Mapping[str, MissingTable]) -> dict:
    """JSON-able parameters and a fingerprint of each split's table."""
    if not tables:
        return {"missing_type": "none"}
    first = next(iter(tables.values()))
    out = {"missing_type": first.missing_type, "ratio": first.ratio, "both_ratio": first.both_ratio, "splits": {}}
    for split, t in tables.items():
        out["splits"][split] = {"seed": t.seed, "num_samples": len(t),
                                "text_missing": int((t.codes == TEXT_MISSING).sum()),
                                "image_missing": int((t.codes == IMAGE_MISSING).sum()),
                                "sha1": hashlib.sha1(t.codes.tobytes()).hexdigest()}
    return out


def data_root(cfg: Mapping) -> Path:
    if cfg["dataset"] == "demo":
        return ensure_demo(cfg["data_root"] or None)
    if not cfg["data_root"]:
        raise ValueError(f"dataset={cfg['dataset']!r} needs data_root=<folder of {cfg['dataset']}_train.arrow "
                         f"and {cfg['dataset']}_{cfg['test_split']}.arrow> (see the emmcil.data writers)")
    return Path(cfg["data_root"]).expanduser()


def build_data(cfg: Mapping) -> RunData:
    root = data_root(cfg)
    tokenizer = get_tokenizer(cfg["tokenizer"] or None)
    size, p, T = cfg["image_size"], cfg["patch_size"], cfg["max_text_len"]
    train_files = [arrow_path(root, cfg["dataset"], s) for s in cfg["train_splits"]]
    test_files = [arrow_path(root, cfg["dataset"], cfg["test_split"])]
    # one missing-modality table per split (the train splits' tables concatenated, in order)
    splits = dict(zip(cfg["train_splits"], train_files)) | {cfg["test_split"]: test_files[0]}
    missing = (missing_tables(cfg, {s: read_arrow(f).num_rows for s, f in splits.items()})
               if cfg.get("missing_type", "none") != "none" else {})
    train_missing = concat_tables([missing[s] for s in cfg["train_splits"]]) if missing else None
    test_missing = missing.get(cfg["test_split"])
    # uint8 pixels at the model's size, normalised on the device (emmcil.data.device; docs/data.md: where each
    # step runs); RandAugment draws per sample on the pixels, so an augmented training set decodes on the CPU. A
    # config saved before these keys (a run re-scored by emmcil.engine.evaluate) decodes as that run did.
    decoding = dict(jpeg_draft=cfg.get("jpeg_draft", False), decode_on=cfg.get("decode_on", "cpu"))
    eval_tf = PixelbertPixels(size, p)
    train_eval = ArrowDataset(train_files, tokenizer, eval_tf, T, missing=train_missing, **decoding)
    train = (ArrowDataset(train_files, tokenizer, PixelbertPixels(size, p, randaug=True), T, missing=train_missing,
                          **decoding) if cfg["train_randaug"] else train_eval)
    test = ArrowDataset(test_files, tokenizer, eval_tf, T, missing=test_missing, **decoding)
    check_same_write(train_files + test_files)  # the splits of one write, not a new train beside an old test
    check_stored_resize(train_files + test_files, size, p)  # images written with --resize: for this transform?
    num_classes = int(cfg["num_classes"])
    found = int(max(train.labels.max(), test.labels.max())) + 1
    if found > num_classes:
        raise ValueError(f"{train_files[0]} has labels up to {found - 1} but num_classes={num_classes}")
    names = None
    if classes_path(root, cfg["dataset"]).is_file():
        names = dataset_classes(root, cfg["dataset"])[1]
        if len(names) != num_classes:
            raise ValueError(f"{classes_path(root, cfg['dataset'])} names {len(names)} classes but "
                             f"num_classes={num_classes}")
    order = class_order(num_classes, cfg["class_order_seed"])
    protocol = protocol_of(cfg)
    return RunData(root=root, tokenizer=tokenizer, train=train, train_eval=train_eval, test=test, order=order,
                   scenario=IncrementalScenario(train, test, order, *protocol),
                   eval_scenario=IncrementalScenario(train_eval, test, order, *protocol),
                   dataset_name=cfg["dataset"], missing=missing, class_names=names)


# ---------------------------------------------------------------------------------------------- batches
class KeepCollate:
    """``emmcil.data.collate.collate`` plus ``patch_keep`` (B, Hmax//p, Wmax//p) bool when any item has one.

    Items without ``patch_keep`` keep all their patches; the padding beyond an item's own grid is False (it is
    also excluded by ``pixel_masks``). A class, not a closure, so DataLoader workers can pickle it.
    """

    def __init__(self, patch_size: int):
        self.patch_size = patch_size

    def __call__(self, items: list[dict]) -> dict:
        keeps = [item.get("patch_keep") for item in items]
        if all(k is None for k in keeps):
            return collate(items)
        batch = collate([{k: v for k, v in item.items() if k != "patch_keep"} for item in items])
        p = self.patch_size
        H, W = batch["pixel_masks"].shape[-2:]
        patch_keep = torch.zeros(len(items), H // p, W // p, dtype=torch.bool)
        for b, (item, keep) in enumerate(zip(items, keeps)):
            rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
            patch_keep[b, :rows, :cols] = True if keep is None else keep
        batch["patch_keep"] = patch_keep
        return batch


def image_tokens(dataset: Dataset, image_size: int, patch_size: int) -> np.ndarray:
    """(N,) int64: the image patches each item of ``dataset`` feeds the backbone, without loading any image.

    Handles the training sets a phase builds: ``ArrowDataset`` (header sizes through the pixelbert resize), its
    ``RemappedSubset``, ``ConcatDataset``, and the replay set ``AugmentedReplay`` (``image_tokens``: each
    exemplar's ``num_patches``, its whole grid when black-filled). Raises TypeError naming any other dataset type.
    """
    if isinstance(dataset, ConcatDataset):
        parts = [image_tokens(d, image_size, patch_size) for d in dataset.datasets]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if isinstance(dataset, RemappedSubset):
        return image_tokens(dataset.dataset, image_size, patch_size)[dataset.indices]
    if isinstance(dataset, ArrowDataset):
        resize = pixelbert_resize(image_size, patch_size)
        grids = [resize.output_size(int(w), int(h)) for w, h in dataset.image_sizes()]
        return np.array([(w // patch_size) * (h // patch_size) for w, h in grids], dtype=np.int64)
    if isinstance(dataset, AugmentedReplay):
        return dataset.image_tokens()
    raise TypeError(f"length_group_window needs the image tokens of every training sample, but a "
                    f"{type(dataset).__name__} does not say them (emmcil.engine.loaders.image_tokens)")


def sequence_lengths(dataset: Dataset, image_size: int, patch_size: int, max_text_len: int) -> np.ndarray:
    """(N,) int64 tokens per sample before batch padding: ``max_text_len`` text + 1 image [CLS] + image tokens."""
    return max_text_len + 1 + image_tokens(dataset, image_size, patch_size)


class LengthGroupedBatchSampler(BatchSampler):
    """Batches of samples of similar length (see the module docstring).

    sampler: the epoch's sample order (a seeded ``RandomSampler``; a ``DistributedSampler`` under DDP, put there by
    Lightning); lengths: (N,) sequence length of every dataset index; window: batches per sorted window (> 0);
    seed: seeds the shuffle of the batches (one permutation drawn per epoch). ``drop_last`` drops the one batch
    shorter than ``batch_size``. Yields lists of dataset indices; ``len`` is that of a ``BatchSampler``.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool = False, lengths: Sequence[int] = (),
                 window: int = 50, seed: int = 0):
        super().__init__(sampler, batch_size, drop_last)
        if window < 1:
            raise ValueError(f"length_group_window={window}: expected a number of batches >= 1 (0 turns grouping off)")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.window, self.seed = int(window), int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def __iter__(self):
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        if len(order) and int(order.max()) >= len(self.lengths):
            raise IndexError(f"sample index {int(order.max())} but lengths are known for {len(self.lengths)} samples")
        B, chunk = self.batch_size, self.window * self.batch_size
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]  # within equal lengths: the random order
            batches += [part[i:i + B] for i in range(0, len(part), B)]
        if self.drop_last and batches and len(batches[-1]) < B:  # only the last window's last batch can be short
            batches.pop()
        for k in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[k].tolist()

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)



def loader_workers(requested: int) -> int:
    """``num_workers``, at most the CPU cores this process may use: more workers than cores only compete for them
    (torch warns), and the datasets' default of 8 must not slow down a laptop or a small CI machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(int(requested), cores))


def make_loader(dataset: Dataset, cfg: Mapping, train: bool, seed: int = 0) -> DataLoader:
    """Batches of ``per_gpu_batchsize`` (:class:`KeepCollate`); for training shuffled with ``seed``, and with
    ``length_group_window`` > 0 grouped by sequence length (:class:`LengthGroupedBatchSampler`); ``num_workers``
    capped by :func:`loader_workers`."""
    generator = torch.Generator().manual_seed(seed) if train else None
    workers = loader_workers(cfg["num_workers"])
    common = dict(num_workers=workers, collate_fn=KeepCollate(cfg["patch_size"]), generator=generator,
                  persistent_workers=train and workers > 0,  # not re-forked every epoch
                  pin_memory=torch.cuda.is_available())
    window = int(cfg.get("length_group_window", 0))
    if not (train and window > 0):
        return DataLoader(dataset, batch_size=cfg["per_gpu_batchsize"], shuffle=train, **common)
    lengths = sequence_lengths(dataset, cfg["image_size"], cfg["patch_size"], cfg["max_text_len"])
    batches = LengthGroupedBatchSampler(RandomSampler(dataset, generator=generator), cfg["per_gpu_batchsize"],
                                        lengths=lengths, window=window, seed=seed)
    return DataLoader(dataset, batch_sampler=batches, **common)
