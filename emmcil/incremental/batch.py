"""Batching of data items mixed with replayed exemplars (which carry a ``patch_keep`` grid)."""
from __future__ import annotations

import torch

from emmcil.data.collate import collate


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
        H, W = batch["images"].shape[-2:]
        patch_keep = torch.zeros(len(items), H // p, W // p, dtype=torch.bool)
        for b, (item, keep) in enumerate(zip(items, keeps)):
            rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
            patch_keep[b, :rows, :cols] = True if keep is None else keep
        batch["patch_keep"] = patch_keep
        return batch
