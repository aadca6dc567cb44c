"""Multimodal data augmentation of replayed exemplars, and how many of them a phase replays.

The paper says only that a multimodal augmentation "diversifies exemplars for replaying prior knowledge"; ours,
applied to every replayed exemplar each time it is drawn, with partners from the same class and labels unchanged:
**text swap** (``p_text_swap``: another exemplar's masked text) and **patch merge** (``p_patch_merge``: another
exemplar's kept patches in the cells this one left empty); ``aug_mode`` replays each exemplar augmented as drawn
(``"in_place"``) or as stored plus an augmented copy (``"beside"``). Why:
docs/method.md#the-method-and-what-we-chose-where-the-paper-is-silent.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Dataset

from emmcil.settings.checks import AUG_MODES, check_augmentation, check_replay_ratio  # noqa: F401

from .exemplar import StoredExemplar, fill_black



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


class AugmentedReplay(Dataset):
    """Replay items of ``exemplars`` with the multimodal augmentation above.

    ``length`` > len(exemplars) repeats the exemplars evenly (item i is exemplar i mod n), so that replay can take
    a fixed share of every epoch (``replay_ratio``); ``mode="beside"`` adds, after those, as many augmented copies
    (the first ``length`` items are then the exemplars as stored). ``masked_replay``: "patches" or "black"
    (:meth:`~emmcil.memory.exemplar.StoredExemplar.to_item`). Randomness comes from torch's global generator, which
    the training loader seeds per sample from (seed, phase, epoch, index) (``emmcil.engine.loaders.SeededSamples``),
    so a sample's augmentation is the same whichever worker, or the main process, draws it.
    """

    def __init__(self, exemplars: list[StoredExemplar], max_text_len: int, p_text_swap: float = 0.0,
                 p_patch_merge: float = 0.0, length: int | None = None, mode: str = "in_place",
                 masked_replay: str = "patches"):
        check_augmentation(p_text_swap, p_patch_merge, mode, masked_replay)
        self.exemplars, self.max_text_len = exemplars, max_text_len
        self.p_text_swap, self.p_patch_merge = p_text_swap, p_patch_merge
        self.mode, self.masked_replay = mode, masked_replay
        self.plain = len(exemplars) if length is None else int(length)  # items before any augmented copy
        self.length = self.plain * (2 if mode == "beside" else 1)
        self.labels = np.array([exemplars[self.exemplar_of(k)].label for k in range(self.length)], dtype=np.int64)
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

    def image_tokens(self) -> np.ndarray:
        """(len,) int64: the image patches each item feeds the model (its exemplar's own, before a patch merge):
        the kept ones, or with ``masked_replay="black"`` the whole grid."""
        black = self.masked_replay == "black"
        per = [getattr(e, "grid_patches", e.num_patches) if black else e.num_patches for e in self.exemplars]
        return np.array([per[self.exemplar_of(k)] for k in range(self.length)], dtype=np.int64)

    def exemplar_of(self, k: int) -> int:
        """The exemplar item ``k`` replays (an augmented copy, ``mode="beside"``, that of item k - length)."""
        return (k % self.plain) % len(self.exemplars)

    def __getitem__(self, k: int) -> dict:
        i = self.exemplar_of(k)
        ex = self.exemplars[i]
        item = ex.to_item(self.max_text_len)
        if self.mode == "beside" and k < self.plain:  # the exemplar as stored; its augmented copy is item k + plain
            return self.fed(item, ex)
        if self.p_text_swap > 0 and float(torch.rand(())) < self.p_text_swap:
            j = self._partner(i)
            if j is not None:
                other = self.exemplars[j].to_item(self.max_text_len)
                item = {**item, "text_ids": other["text_ids"], "text_masks": other["text_masks"]}
        if self.p_patch_merge > 0 and float(torch.rand(())) < self.p_patch_merge:
            j = self._partner(i)
            if j is not None:
                item = merge_patches(item, self.exemplars[j].to_item(self.max_text_len), ex.patch_size)
        return self.fed(item, ex)

    def fed(self, item: dict, ex: StoredExemplar) -> dict:
        """The item as the model is fed it: black-filled with ``masked_replay="black"``."""
        return fill_black(item, ex.patch_size) if self.masked_replay == "black" else item


def replay_length(num_exemplars: int, num_new: int, replay_ratio: float) -> int:
    """How many replay items a phase draws: every exemplar once (``replay_ratio`` = 0), or enough repeats that
    replay makes up ``replay_ratio`` of the phase's training items (never fewer than the exemplars)."""
    check_replay_ratio(replay_ratio)
    if replay_ratio == 0 or num_exemplars == 0:
        return num_exemplars
    return max(num_exemplars, int(round(replay_ratio / (1 - replay_ratio) * num_new)))
