"""Multimodal data augmentation of replayed exemplars, and how many of them a phase replays.

The paper says only that a multimodal augmentation "diversifies exemplars for replaying prior knowledge"; our
version (docs/method.md, "what we chose where the paper is silent": augmentation), applied independently to every
replayed exemplar each time it is drawn:
- **text swap**, with probability ``p_text_swap``: its masked text is replaced by the masked text of another
  exemplar of the same class (image and text of one class, recombined);
- **patch merge**, with probability ``p_patch_merge``: the kept patches of another exemplar of the same class are
  added where this exemplar's grid has no kept patch of its own (same grid cell, cells outside this grid dropped),
  so the model sees more of the class's evidence in one sample.
Labels never change, and partners always come from the same class. Both are off in the ``emm_no_aug`` ablation.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Dataset

from .exemplar import StoredExemplar


def merge_patches(item: dict, other: dict, patch_size: int) -> dict:
    """``item`` with ``other``'s kept patches added in the cells ``item`` does not keep (both replay items)."""
    keep, keep2 = item["patch_keep"], other["patch_keep"]
    R, C = min(keep.shape[0], keep2.shape[0]), min(keep.shape[1], keep2.shape[1])
    add = torch.zeros_like(keep)
    add[:R, :C] = keep2[:R, :C] & ~keep[:R, :C]
    if not add.any():
        return item
    pixels = add.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    image = item["image"].clone()
    H, W = pixels.shape
    src = torch.zeros_like(image)
    h2, w2 = other["image"].shape[-2:]
    src[:, :min(H, h2), :min(W, w2)] = other["image"][:, :min(H, h2), :min(W, w2)]
    image[:, pixels] = src[:, pixels]
    return {**item, "image": image, "patch_keep": keep | add}


def check_augmentation(p_text_swap: float, p_patch_merge: float) -> None:
    """ValueError naming the key (``aug_text_swap`` / ``aug_patch_merge``) of a probability outside [0, 1]."""
    for name, p in (("aug_text_swap", p_text_swap), ("aug_patch_merge", p_patch_merge)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p} must lie in [0, 1]")


def check_replay_ratio(replay_ratio: float) -> None:
    """ValueError for a ``replay_ratio`` outside [0, 1)."""
    if not 0.0 <= replay_ratio < 1.0:
        raise ValueError(f"replay_ratio={replay_ratio} must lie in [0, 1)")


class AugmentedReplay(Dataset):
    """Replay items of ``exemplars`` with the multimodal augmentation above.

    ``length`` > len(exemplars) repeats the exemplars evenly (item i is exemplar i mod n), so that replay can take
    a fixed share of every epoch (``replay_ratio``). Randomness comes from torch's global generator, which the
    training loader seeds per sample from (seed, phase, epoch, index) (``emmcil.engine.loaders.SeededSamples``), so
    a sample's augmentation is the same whichever worker, or the main process, draws it.
    """

    def __init__(self, exemplars: list[StoredExemplar], max_text_len: int, p_text_swap: float = 0.0,
                 p_patch_merge: float = 0.0, length: int | None = None):
        check_augmentation(p_text_swap, p_patch_merge)
        self.exemplars, self.max_text_len = exemplars, max_text_len
        self.p_text_swap, self.p_patch_merge = p_text_swap, p_patch_merge
        self.length = len(exemplars) if length is None else int(length)
        self.labels = np.array([exemplars[i % len(exemplars)].label for i in range(self.length)], dtype=np.int64)
        by_class = defaultdict(list)
        for i, e in enumerate(exemplars):
            by_class[e.label].append(i)
        self.by_class = dict(by_class)

    def __len__(self) -> int:
        return self.length

    def _partner(self, i: int) -> int | None:
        mates = self.by_class[self.exemplars[i].label]
        if len(mates) < 2:
            return None
        j = mates[int(torch.randint(len(mates) - 1, ()))]
        return j if j != i else mates[-1]

    def __getitem__(self, k: int) -> dict:
        i = k % len(self.exemplars)
        ex = self.exemplars[i]
        item = ex.to_item(self.max_text_len)
        if self.p_text_swap > 0 and float(torch.rand(())) < self.p_text_swap:
            j = self._partner(i)
            if j is not None:
                other = self.exemplars[j].to_item(self.max_text_len)
                item = {**item, "text_ids": other["text_ids"], "text_masks": other["text_masks"]}
        if self.p_patch_merge > 0 and float(torch.rand(())) < self.p_patch_merge:
            j = self._partner(i)
            if j is not None:
                item = merge_patches(item, self.exemplars[j].to_item(self.max_text_len), ex.patch_size)
        return item


def replay_length(num_exemplars: int, num_new: int, replay_ratio: float) -> int:
    """How many replay items a phase draws: every exemplar once (``replay_ratio`` = 0), or enough repeats that
    replay makes up ``replay_ratio`` of the phase's training items (never fewer than the exemplars)."""
    check_replay_ratio(replay_ratio)
    if replay_ratio == 0 or num_exemplars == 0:
        return num_exemplars
    return max(num_exemplars, int(round(replay_ratio / (1 - replay_ratio) * num_new)))
