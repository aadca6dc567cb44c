"""Batching of ``ArrowDataset`` items (and of anything that yields the same keys).

Images of different sizes are zero-padded at the bottom and right to the batch's largest H and W, and
``pixel_masks`` marks the real pixels. The mask is explicit: ViLT recovered it from the pixels (channel sum != 0),
which also hides real pixels whose normalised channels cancel out.
"""
from __future__ import annotations

import torch

# item key -> batch key; the rest of the keys are handled generically (see ``collate``)
_RENAMED = {"label": "labels", "index": "indices", "missing_type": "missing_types", "image_id": "image_ids",
            "raw_text": "raw_texts", "orig_label": "orig_labels"}
_LONG = {"label", "index", "missing_type", "orig_label"}


def pad_images(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """list of (C, H_i, W_i) -> (B, C, Hmax, Wmax) zero-padded bottom/right, and (B, Hmax, Wmax) bool mask
    (True = real pixel)."""
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    mask = torch.zeros((len(images), h, w), dtype=torch.bool)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
        mask[i, : im.shape[-2], : im.shape[-1]] = True
    return out, mask


def collate(batch: list[dict]) -> dict:
    """list of items -> dict:

    images (B, 3, Hmax, Wmax) float, pixel_masks (B, Hmax, Wmax) bool, text_ids (B, T) long, text_masks (B, T) long,
    labels (B,) long, indices (B,) long, missing_types (B,) long, image_ids list[str], raw_texts list[str],
    orig_labels (B,) long when the items carry ``orig_label`` (scenario datasets).
    Any other key present in every item is stacked when its values are equal-shaped tensors or numbers,
    else kept as a list.
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    keys = set(batch[0])
    for i, item in enumerate(batch[1:], 1):
        if set(item) != keys:
            raise ValueError(f"batch items have different keys: item 0 {sorted(keys)}, item {i} {sorted(item)} "
                             f"(image_ids {batch[0].get('image_id')!r}, {item.get('image_id')!r})")
    out = {}
    out["images"], out["pixel_masks"] = pad_images([b["image"] for b in batch])
    for key in keys - {"image"}:
        values = [b[key] for b in batch]
        name = _RENAMED.get(key, key)
        if key in _LONG:
            out[name] = torch.tensor(values, dtype=torch.long)
        elif isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            out[name] = torch.stack(values)
        elif isinstance(values[0], (int, float, bool)) and not isinstance(values[0], str):
            out[name] = torch.tensor(values)
        else:
            out[name] = values
    return out
