"""What the phase loop trains and predicts on: the run's datasets and scenario (:func:`build_data`), its batches
(:class:`KeepCollate`: data items and replayed exemplars together, uint8 pixels normalised on the device) and
DataLoaders (:func:`make_loader`). Why a phase's training depends on (seed, phase, epoch, sample) only, not on the
workers, devices or batch layout: :class:`PhaseBatches` and docs/experiments.md#reproducibility; length-grouped
batches: docs/experiments.md#length-grouped-batches; missing modalities: docs/method.md#missing-modalities-and-rebq.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from emmcil.data import (ArrowDataset, IncrementalScenario, MissingTable, PixelbertPixels, arrow_path, class_order,
                         collate, dataset_classes, ensure_demo, get_tokenizer, pixelbert_resize, read_arrow)
from emmcil.data.arrow import check_same_write, classes_path
from emmcil.data.missing import IMAGE_MISSING, MISSING_TYPES, TEXT_MISSING
from emmcil.data.resize import check_stored_resize
from emmcil.data.scenario import RemappedSubset
from emmcil.memory.augment import AugmentedReplay
from emmcil.settings import Settings


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
    """The seed of split ``split``'s missing table: a different table per split, all derived from one seed.

    ``SeedSequence([missing_seed, crc32(split)])``: a table depends only on (split, type, ratio, both_ratio,
    missing_seed) and its size, not on the class order, the number of phases or the training seed (RebQ's cached
    tables were keyed by type and ratio only, so the first run fixed them for every later seed)."""
    return int(np.random.SeedSequence([int(missing_seed), zlib.crc32(split.encode())]).generate_state(1)[0])


def missing_tables(missing, sizes: Mapping[str, int]) -> dict[str, MissingTable]:
    """split -> its MissingTable for the ``missing_*`` settings (``Settings.missing``); {} for
    ``missing_type="none"``."""
    kind = missing.missing_type
    if kind == "none":
        return {}
    if kind not in MISSING_TYPES:
        raise ValueError(f"missing_type={kind!r}: expected 'none' or one of {MISSING_TYPES}")
    return {split: MissingTable.build(n, kind, float(missing.missing_ratio), split_seed(missing.missing_seed, split),
                                      both_ratio=float(missing.missing_both_ratio))
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


def data_root(settings: Settings) -> Path:
    """The folder of the run's arrow files (``settings``: the run's :class:`~emmcil.settings.Settings`)."""
    dataset, data = settings.experiment.dataset, settings.data
    if dataset == "demo":
        return ensure_demo(data.data_root or None)
    if not data.data_root:
        raise ValueError(f"dataset={dataset!r} needs data_root=<folder of {dataset}_train.arrow "
                         f"and {dataset}_{data.test_split}.arrow> (see the emmcil.data writers)")
    return Path(data.data_root).expanduser()


def build_data(settings: Settings) -> RunData:
    """The run's datasets and scenario (``settings``: its :class:`~emmcil.settings.Settings`)."""
    root = data_root(settings)
    data, model, name = settings.data, settings.model, settings.experiment.dataset
    tokenizer = get_tokenizer(data.tokenizer or None)
    size, p, T = model.image_size, model.patch_size, data.max_text_len
    train_files = [arrow_path(root, name, s) for s in data.train_splits]
    test_files = [arrow_path(root, name, data.test_split)]
    # one missing-modality table per split (the train splits' tables concatenated, in order)
    splits = dict(zip(data.train_splits, train_files)) | {data.test_split: test_files[0]}
    missing = (missing_tables(settings.missing, {s: read_arrow(f).num_rows for s, f in splits.items()})
               if settings.missing.missing_type != "none" else {})
    train_missing = concat_tables([missing[s] for s in data.train_splits]) if missing else None
    test_missing = missing.get(data.test_split)
    # uint8 pixels at the model's size, normalised on the device (emmcil.data.device; docs/data.md: where each
    # step runs); RandAugment draws per sample on the pixels, so an augmented training set decodes on the CPU. A
    # config saved before these keys (a run re-scored by emmcil.engine.evaluate) decodes as that run did.
    decoding = dict(jpeg_draft=settings.hardware.jpeg_draft, decode_on=settings.hardware.decode_on)
    eval_tf = PixelbertPixels(size, p)
    train_eval = ArrowDataset(train_files, tokenizer, eval_tf, T, missing=train_missing, **decoding)
    train = (ArrowDataset(train_files, tokenizer, PixelbertPixels(size, p, randaug=True), T, missing=train_missing,
                          **decoding) if data.train_randaug else train_eval)
    test = ArrowDataset(test_files, tokenizer, eval_tf, T, missing=test_missing, **decoding)
    check_same_write(train_files + test_files)  # the splits of one write, not a new train beside an old test
    check_stored_resize(train_files + test_files, size, p)  # images written with --resize: for this transform?
    for dataset in (train, test):  # every image header parses: a bad image stops the run now, not after a phase
        dataset.image_sizes()
    num_classes = int(data.num_classes)
    found = int(max(train.labels.max(), test.labels.max())) + 1
    if found > num_classes:
        raise ValueError(f"{train_files[0]} has labels up to {found - 1} but num_classes={num_classes}")
    names = None
    if classes_path(root, name).is_file():
        names = dataset_classes(root, name)[1]
        if len(names) != num_classes:
            raise ValueError(f"{classes_path(root, name)} names {len(names)} classes but "
                             f"num_classes={num_classes}")
    order = class_order(num_classes, settings.experiment.class_order_seed)
    e = settings.experiment
    protocol = (int(e.num_phases), int(e.init_classes), int(e.increment))
    return RunData(root=root, tokenizer=tokenizer, train=train, train_eval=train_eval, test=test, order=order,
                   scenario=IncrementalScenario(train, test, order, *protocol),
                   eval_scenario=IncrementalScenario(train_eval, test, order, *protocol),
                   dataset_name=name, missing=missing, class_names=names)


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
    """(N,) int64 tokens per sample before batch padding: ``max_text_len`` text + 1 image [CLS] + image tokens.

    The text counts in full (the model masks text tokens rather than dropping them); the image tokens are every
    patch of the resized image for a dataset sample (from its header, no decoding), the kept patches for a masked
    exemplar (its whole grid when replayed black-filled, ``masked_replay="black"``). ``emm``'s patch merge adds a
    partner's patches when the item is drawn; the grouping uses the exemplar's own count."""
    return max_text_len + 1 + image_tokens(dataset, image_size, patch_size)


def world() -> tuple[int, int]:
    """(world size, rank) of this process: torch.distributed's once it is initialised (Lightning's DDP), else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def num_devices(devices) -> int:
    """Devices per node as a count, from Lightning's ``devices`` (int, list of ids, "auto" or -1)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices.isdigit():
        return int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    return max(1, torch.cuda.device_count())


def accumulation_steps(settings: Settings) -> int:
    """Micro-batches per optimiser step and process: the fewest that keep micro-batches within per_gpu_batchsize,
    ceil(batch_size / (per_gpu_batchsize x devices x num_nodes)); the effective batch is batch_size whatever they
    are (:class:`PhaseBatches` splits each global batch evenly). ``settings``: the run's
    :class:`~emmcil.settings.Settings`."""
    o, h = settings.optimisation, settings.hardware
    per_step = o.per_gpu_batchsize * num_devices(h.devices) * h.num_nodes
    return max(1, -(-o.batch_size // per_step))


def split_evenly(items: np.ndarray, parts: int) -> list[np.ndarray]:
    """``items`` cut into ``parts`` consecutive slices whose sizes differ by at most one (the first ones longer)."""
    base, extra = divmod(len(items), parts)
    bounds = np.cumsum([0] + [base + (j < extra) for j in range(parts)])
    return [items[bounds[j]:bounds[j + 1]] for j in range(parts)]


class PhaseBatches(Sampler[list]):
    """A phase's training batches for this process: a DataLoader ``batch_sampler`` that yields lists of
    ``(epoch, index, loss_weight)`` keys for :class:`SeededSamples`, the same optimiser steps in every layout:

    - order: epoch e's permutation of the training set comes from ``default_rng([seed, e])``, cut into global
      batches of ``batch_size``; each global batch is split as evenly as possible into ``accumulation x world
      size`` micro-batches, and rank r takes micro-batches r, r + W, ... (Lightning's ``DistributedSampler`` is
      off: ``use_distributed_sampler=False``);
    - loss: each sample carries ``loss_weight`` = accumulation x world / (its global batch's size), so that the
      micro-batches' mean losses, divided by the accumulation (Lightning) and averaged over ranks (DDP), give the
      global batch's mean; a global batch smaller than its micro-batch count (the epoch's last) pads with
      weight-0 samples, so every rank takes part in every step;
    - length grouping (``window`` = k > 0, transformers' ``LengthGroupedSampler``): the permutation is cut into
      windows of k global batches, each sorted by ``lengths`` and cut into batches, and the batches are shuffled.

    num_samples: the phase's training set size; batch_size: the effective (global) batch; accumulation: micro-batches
    per optimiser step and rank; seed: the phase's seed; lengths (N,) and window > 0: length-grouped global batches;
    world_size / rank: the DDP layout (default: torch.distributed's, read when iterated); limit: the epoch's first
    global batches only, a fraction of them (float) or a count (int), as ``limit_train_batches``, in optimiser
    steps whatever the layout. Lightning calls ``set_epoch`` (through ``.sampler``) at the start of every epoch;
    ``len`` is micro-batches per epoch and rank.
    """

    def __init__(self, num_samples: int, batch_size: int, accumulation: int = 1, seed: int = 0,
                 lengths: Sequence[int] | None = None, window: int = 0, world_size: int | None = None,
                 rank: int | None = None, limit: int | float = 1.0):
        if batch_size < 1 or accumulation < 1:
            raise ValueError(f"batch_size={batch_size} and accumulation={accumulation} must be >= 1")
        if window < 0 or (window > 0 and (lengths is None or len(lengths) != num_samples)):
            raise ValueError(f"length_group_window={window}: >= 0, and > 0 needs the length of every sample")
        self.num_samples, self.batch_size, self.accumulation = int(num_samples), int(batch_size), int(accumulation)
        self.seed, self.window = int(seed), int(window)
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self._world = (world_size, rank)
        self.epoch = 0
        steps = math.ceil(self.num_samples / self.batch_size)
        self.steps = min(steps, limit) if isinstance(limit, int) else max(1, int(steps * limit))

    @property
    def sampler(self) -> "PhaseBatches":
        """Lightning's ``_set_sampler_epoch`` calls ``batch_sampler.sampler.set_epoch``: that is this object."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def layout(self) -> tuple[int, int]:
        size, rank = self._world
        return (size, rank) if size is not None else world()

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """Epoch ``epoch``'s global batches (arrays of dataset indices), the same in every process and layout."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_samples)
        B = self.batch_size
        if not self.window:
            return [order[i:i + B] for i in range(0, len(order), B)]
        batches, chunk = [], self.window * B
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]  # within equal lengths: the random order
            batches += [part[i:i + B] for i in range(0, len(part), B)]
        return [batches[k] for k in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[tuple[int, int, float]]]:
        size, rank = self.layout()
        parts = self.accumulation * size
        for batch in self.global_batches(self.epoch)[:self.steps]:
            weight = parts / len(batch)
            for micro in split_evenly(batch, parts)[rank::size]:
                if len(micro):
                    yield [(self.epoch, int(i), weight) for i in micro]
                else:  # fewer samples than micro-batches: this rank joins the step with a sample weighted 0
                    yield [(self.epoch, int(batch[0]), 0.0)]

    def __len__(self) -> int:
        return self.accumulation * self.steps


class SeededSamples(Dataset):
    """``dataset`` indexed by :class:`PhaseBatches`' keys ``(epoch, index, loss_weight)``: item ``index`` loaded
    with torch's (CPU), NumPy's and Python's global RNGs seeded from ``SeedSequence([seed, epoch, index])`` (and
    restored afterwards), plus ``sample_seed`` (those 32 bits, the model's dropout key) and ``loss_weight``. What a
    sample draws is then the same in the main process and in any worker, persistent or not."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, float]) -> dict:
        epoch, index, weight = key
        sample_seed = int(np.random.SeedSequence([self.seed, int(epoch), int(index)]).generate_state(1)[0])
        with seeded_rngs(sample_seed):
            item = self.dataset[index]
        return {**item, "sample_seed": sample_seed, "loss_weight": float(weight)}


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """torch's CPU generator, NumPy's global and Python's ``random`` seeded with ``seed`` inside the block, each
    restored on exit (CUDA's generators are left alone)."""
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class Shard(Sampler[int]):
    """This rank's share of ``num_samples`` items in order (indices r, r + W, ...), for passes without gradients;
    the driver gathers the shards (``gather_uneven``)."""

    def __init__(self, num_samples: int):
        self.num_samples = int(num_samples)

    def __iter__(self) -> Iterator[int]:
        size, rank = world()
        return iter(range(rank, self.num_samples, size))

    def __len__(self) -> int:
        size, rank = world()
        return len(range(rank, self.num_samples, size))


def loader_workers(requested: int) -> int:
    """``num_workers``, at most the CPU cores this process may use: more workers than cores only compete for them
    (torch warns), and the datasets' default of 8 must not slow down a laptop or a small CI machine. The count does
    not change what the run computes (:class:`SeededSamples`); the run records the count it used."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(int(requested), cores))


def make_loader(dataset: Dataset, settings: Settings, train: bool, seed: int = 0) -> DataLoader:
    """For training, :class:`PhaseBatches` over :class:`SeededSamples` of ``dataset`` with the phase's ``seed``
    (grouped by sequence length with ``length_group_window`` > 0); otherwise this rank's share in order
    (:class:`Shard`), batches of ``per_gpu_batchsize``. :class:`KeepCollate`; ``num_workers`` capped by
    :func:`loader_workers`. ``settings``: the run's :class:`~emmcil.settings.Settings`."""
    o, m = settings.optimisation, settings.model
    workers = loader_workers(settings.hardware.num_workers)
    common = dict(num_workers=workers, collate_fn=KeepCollate(m.patch_size),
                  persistent_workers=train and workers > 0,  # not re-forked every epoch
                  pin_memory=torch.cuda.is_available())
    if not train:
        return DataLoader(dataset, batch_size=o.per_gpu_batchsize, sampler=Shard(len(dataset)), **common)
    window = int(o.length_group_window)
    lengths = (sequence_lengths(dataset, m.image_size, m.patch_size, settings.data.max_text_len) if window
               else None)
    batches = PhaseBatches(len(dataset), o.batch_size, accumulation_steps(settings), seed, lengths, window,
                           limit=o.limit_train_batches)
    return DataLoader(SeededSamples(dataset, seed), batch_sampler=batches, **common)
