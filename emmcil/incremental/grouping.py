"""Length-grouped training batches: replay compute in proportion to what an exemplar keeps.

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
the kept patches for a masked exemplar (``Exemplar.num_patches``). The patch merge of ``emm``'s augmentation adds a
partner's patches when the item is drawn; the grouping uses the exemplar's own count.

Determinism: the batches of an epoch depend only on the phase's seed (the driver's ``phase_seed(seed, phase)``)
and the epoch, so a resumed run draws the same batches. Under DDP Lightning replaces the sampler inside this batch
sampler by a ``DistributedSampler`` (``use_distributed_sampler``, on by default: it re-creates a ``BatchSampler``
subclass with its recorded arguments and the new sampler), and each rank groups its own shard; every rank gets
``ceil(shard / batch_size)`` batches.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, ConcatDataset, Dataset, Sampler

from emmcil.data import ArrowDataset, pixelbert_resize
from emmcil.data.scenario import RemappedSubset

from .augment import AugmentedReplay
from .memory import ExemplarDataset


def image_tokens(dataset: Dataset, image_size: int, patch_size: int) -> np.ndarray:
    """(N,) int64: the image patches each item of ``dataset`` feeds the backbone, without loading any image.

    Handles the training sets a phase builds: ``ArrowDataset`` (header sizes through the pixelbert resize), its
    ``RemappedSubset``, ``ConcatDataset``, and the replay sets ``AugmentedReplay`` / ``ExemplarDataset`` (each
    exemplar's ``num_patches``). Raises TypeError naming any other dataset type.
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
        per_exemplar = [e.num_patches for e in dataset.exemplars]
        return np.array([per_exemplar[i % len(per_exemplar)] for i in range(len(dataset))], dtype=np.int64)
    if isinstance(dataset, ExemplarDataset):
        return np.array([e.num_patches for e in dataset.exemplars], dtype=np.int64)
    raise TypeError(f"length_group_window needs the image tokens of every training sample, but a "
                    f"{type(dataset).__name__} does not say them (emmcil.incremental.grouping.image_tokens)")


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


def padded_tokens(batches, lengths: np.ndarray) -> int:
    """Tokens a model computes for ``batches`` (lists of indices) when each batch is padded to its longest."""
    return int(sum(len(b) * int(lengths[b].max()) for b in map(np.asarray, batches) if len(b)))
