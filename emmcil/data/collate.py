"""Batching of ``ArrowDataset`` items (and of anything that yields the same keys).

Images of different sizes are zero-padded at the bottom and right to the batch's largest H and W, and
``pixel_masks`` marks the real pixels. The mask is explicit: ViLT recovered it from the pixels (channel sum != 0),
which also hides real pixels whose normalised channels cancel out.

Items carry uint8 pixels (the data loaders'), normalised floats (``pixelbert_transform``), or JPEG files to decode
on the device (:class:`~.device.EncodedImage`, ``decode_on="device"``); one batch holds one kind of pixels, and files
may join uint8 pixels (a replayed exemplar beside dataset items). ``emmcil.data.device.model_images`` turns the batch
into the backbone's float input on the device.
"""
from __future__ import annotations

import torch

from .device import EncodedImage

# item key -> batch key; the rest of the keys are handled generically (see ``collate``)
_RENAMED = {"label": "labels", "index": "indices", "missing_type": "missing_types", "image_id": "image_ids",
            "raw_text": "raw_texts", "orig_label": "orig_labels"}
_LONG = {"label", "index", "missing_type", "orig_label"}


def empty_batch(images: list[torch.Tensor], n: int, h: int, w: int) -> torch.Tensor:
    """Zeros (n, C, h, w) of the dtype of ``images`` (C, H_i, W_i), stored as most of them are: channels-last
    (n, h, w, C in memory) when they are decoded pictures seen as (C, H, W) (``pil_to_tensor``), contiguous when
    they were resized. Copying a picture in is then a plain copy, where reordering uint8 channels costs a worker about
    1 ms per 512x384 picture. The device makes the batch contiguous (``device.model_images``)."""
    C = images[0].shape[0]
    channels_last = 2 * sum(im.stride(0) == 1 and C > 1 for im in images) > len(images)
    if channels_last:
        return torch.zeros((n, h, w, C), dtype=images[0].dtype).permute(0, 3, 1, 2)
    return torch.zeros((n, C, h, w), dtype=images[0].dtype)


def pad_images(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """list of (C, H_i, W_i) -> (B, C, Hmax, Wmax) zero-padded bottom/right (:func:`empty_batch`), and
    (B, Hmax, Wmax) bool mask (True = real pixel)."""
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    out = empty_batch(images, len(images), h, w)
    mask = torch.zeros((len(images), h, w), dtype=torch.bool)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
        mask[i, : im.shape[-2], : im.shape[-1]] = True
    return out, mask


def collate_images(images: list) -> dict:
    """The image part of a batch: ``images`` (B, 3, Hmax, Wmax) zero-padded, of the items' dtype, and
    ``pixel_masks`` (B, Hmax, Wmax) bool; with any :class:`~.device.EncodedImage`, also ``encoded_images`` (a list
    of B: the file, or None where the item has pixels) and ``images`` only when some item has pixels (the files'
    places stay 0). Raises ValueError for a batch that mixes uint8 and float pixels."""
    pixels = [im for im in images if not isinstance(im, EncodedImage)]
    dtypes = {im.dtype for im in pixels}
    if len(dtypes) > 1:
        raise ValueError(f"batch items have images of different dtypes {sorted(map(str, dtypes))}: uint8 pixels "
                         f"(the data loaders', replayed exemplars) and normalised floats (pixelbert_transform) do not "
                         f"mix; build every dataset with the same transform")
    if len(pixels) == len(images):
        return dict(zip(("images", "pixel_masks"), pad_images(images)))
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    out = {"pixel_masks": torch.zeros((len(images), h, w), dtype=torch.bool),
           "encoded_images": [im if isinstance(im, EncodedImage) else None for im in images]}
    if pixels:
        out["images"] = empty_batch(pixels, len(images), h, w)
    for i, im in enumerate(images):
        out["pixel_masks"][i, : im.shape[-2], : im.shape[-1]] = True
        if not isinstance(im, EncodedImage):
            out["images"][i, :, : im.shape[-2], : im.shape[-1]] = im
    return out


def collate(batch: list[dict]) -> dict:
    """list of items -> dict:

    images (B, 3, Hmax, Wmax) uint8 or float as the items' (:func:`collate_images`; with files to decode on the
    device also ``encoded_images``), pixel_masks (B, Hmax, Wmax) bool, text_ids (B, T) long, text_masks (B, T) long,
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
    out.update(collate_images([b["image"] for b in batch]))
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
