"""What happens to a batch on the model's device: JPEG decoding (``decode_on="device"``) and normalisation.

The data loaders hand over images as uint8 pixels at their final size (:class:`~.transforms.PixelbertPixels`), or,
with ``decode_on="device"``, as the JPEG files themselves (:class:`EncodedImage`); :func:`model_images`, called by
the Lightning module once the batch is on its device (``on_after_batch_transfer``), decodes the files there with
torchvision's ``decode_jpeg`` (one batched call; nvJPEG on CUDA, libjpeg-turbo on a CPU: the same code either
way), resizes them to their final size, pastes them into the padded uint8 batch and normalises it to the float
batch the backbone takes. docs/data.md says where each step runs and how far the pixels may differ from a CPU
decode.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from .images import ImageDecodeError
from .transforms import denormalize_to_uint8, normalize_uint8

DECODE_ON = ("cpu", "device")


class EncodedImage:
    """A JPEG file handed over by a data loader worker for decoding on the device (``decode_on="device"``).

    data: the file's bytes; size: (H, W) the pixels must have for the model (the pixelbert size); name: the image id
    (named in errors). ``shape`` is (3, H, W), what the decoded image will have, so code that sizes items by
    ``item["image"].shape`` works unchanged. A plain object, not a tensor or a dataclass: the pin-memory thread and
    Lightning's transfer to the device leave it alone (the decoder reads the bytes from host memory).
    """

    __slots__ = ("data", "size", "name")

    def __init__(self, data: bytes, size: tuple[int, int], name: str = ""):
        self.data, self.size, self.name = data, (int(size[0]), int(size[1])), name

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, *self.size)

    def __repr__(self):
        return f"EncodedImage({self.name!r}, {len(self.data)} bytes -> {self.size[0]}x{self.size[1]})"


def resize_on_device(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, h, w) on ``x``'s device: bicubic with Pillow's antialiasing filter in float
    (``interpolate(..., antialias=True)`` has no uint8 kernel on CUDA), rounded; within 2 levels of Pillow's
    ``resize(BICUBIC)`` (``tests/test_data_decoding.py``)."""
    y = F.interpolate(x[None].float(), size=tuple(size), mode="bicubic", antialias=True)[0]
    return y.round_().clamp_(0, 255).to(torch.uint8)


def decode_encoded(images: list[EncodedImage], device: torch.device | str) -> list[torch.Tensor]:
    """Decode the files on ``device`` in one ``decode_jpeg`` call and resize each to its ``size``: uint8 (3, H, W)
    on ``device`` each. Raises ImageDecodeError naming the first image that does not decode."""
    device = torch.device(device)
    data = [torch.frombuffer(bytearray(im.data), dtype=torch.uint8) for im in images]
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image decoders in favour of TorchCodec's; the locked 0.29.1 has them
        warnings.filterwarnings("ignore", message=".*image decoding and encoding capabilities of TorchVision.*")
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = []
            for im, d in zip(images, data):  # one by one, to name the file that fails
                try:
                    decoded.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
                except RuntimeError as e:
                    reason = f"{type(e).__name__}: {e}"
                    raise ImageDecodeError(f"cannot decode image {im.name or '<bytes>'} on {device}: {reason}",
                                           im.name, reason) from None
    return [x if tuple(x.shape[-2:]) == im.size else resize_on_device(x, im.size) for x, im in zip(decoded, images)]


def model_images(batch: dict) -> dict:
    """The batch with ``images`` as the backbone takes them: float32 (B, 3, H, W), normalised, on the device of
    ``pixel_masks``.

    A uint8 batch (``collate``; channels-last, made contiguous here) is normalised
    (:func:`~.transforms.normalize_uint8`: on a CPU exactly the floats of ViLT's ToTensor + Normalize) and set to 0
    outside the real pixels (``pixel_masks``) and outside the kept patches (``patch_keep``, when there is one): the
    padding and the empty cells of a masked exemplar are 0, as they were when items were normalised one by one.
    The files of ``encoded_images`` are decoded first (:func:`decode_encoded`) into their places. A float batch
    (normalised already, e.g. by ``pixelbert_transform``) is returned as it is. Returns a new dict; the input batch
    is not modified.
    """
    encoded = batch.get("encoded_images")
    images = batch.get("images")
    if encoded is None and (images is None or images.dtype != torch.uint8):
        return batch
    out = {k: v for k, v in batch.items() if k != "encoded_images"}
    masks = batch["pixel_masks"]
    if encoded is not None:
        B, (H, W) = masks.shape[0], masks.shape[-2:]
        images = (images.clone() if images is not None
                  else torch.zeros((B, 3, H, W), dtype=torch.uint8, device=masks.device))
        slots = [i for i, e in enumerate(encoded) if e is not None]
        for i, x in zip(slots, decode_encoded([encoded[i] for i in slots], masks.device)):
            images[i, :, :x.shape[-2], :x.shape[-1]] = x
    real = masks
    keep = batch.get("patch_keep")
    if keep is not None:
        p = masks.shape[-2] // keep.shape[-2]
        real = real & keep.repeat_interleave(p, -2).repeat_interleave(p, -1)
    # contiguous (B, 3, H, W) before the model: the batch comes channels-last from the workers (collate)
    out["images"] = torch.where(real[:, None], normalize_uint8(images.contiguous()), 0.0)
    return out


def image_pixels(image) -> torch.Tensor:
    """An item's image as uint8 pixels (3, H, W) on the CPU, whatever the loader gave: uint8 pixels as they are, an
    :class:`EncodedImage` decoded on the CPU by the device path (:func:`decode_encoded`), normalised floats back to
    pixels (:func:`~.transforms.denormalize_to_uint8`). For code that stores or draws items (exemplars, figures)."""
    if isinstance(image, EncodedImage):
        return decode_encoded([image], "cpu")[0]
    if image.dtype == torch.uint8:
        return image.detach().cpu()
    return denormalize_to_uint8(image.detach().cpu().float())
