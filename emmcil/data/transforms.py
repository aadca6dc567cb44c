"""ViLT's "pixelbert" image transform and its inverse.

Images keep their aspect ratio (no crop, no flip): shorter side -> ``size``, longer side capped at
``int(1333 / 800 * size)``, both sides floored to multiples of ``size_divisor`` (the patch size), then ToTensor and
inception normalisation (mean = std = 0.5, so pixels live in [-1, 1]). Batches therefore mix sizes; see
``collate.collate`` for the padding.

Two forms of it: :func:`pixelbert_transform` (ViLT's, Pillow's resize, float output: the reference) and
:class:`PixelbertPixels` (what the data loaders run: uint8 output at the final size, torch's resize, and nothing
at all when the picture already has that size), whose batches the model normalises on its device
(:func:`normalize_uint8`, ``emmcil.data.device``). docs/data.md says where each step runs and how far the two are
apart.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


class MinMaxResize:
    """Resize a PIL image: shorter side = ``shorter``, longer side <= ``longer``, both multiples of ``size_divisor``."""

    def __init__(self, shorter: int = 800, longer: int = 1333, size_divisor: int = 32):
        self.shorter, self.longer, self.size_divisor = shorter, longer, size_divisor

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after resizing."""
        scale = self.shorter / min(width, height)
        w, h = width * scale, height * scale
        if max(w, h) > self.longer:
            rescale = self.longer / max(w, h)
            w, h = w * rescale, h * rescale
        w, h = int(w + 0.5), int(h + 0.5)
        d = self.size_divisor
        # never below one patch, even for absurd aspect ratios
        return max(d, w // d * d), max(d, h // d * d)

    def __call__(self, img: Image.Image) -> Image.Image:
        size = self.output_size(*img.size)
        return img if size == img.size else img.resize(size, resample=Image.BICUBIC)

    def __repr__(self):
        return f"MinMaxResize(shorter={self.shorter}, longer={self.longer}, size_divisor={self.size_divisor})"


def pixelbert_resize(size: int = 384, size_divisor: int = 32) -> MinMaxResize:
    """The resize step of ``pixelbert_transform(size, size_divisor)``: shorter side ``size``, longer side at most
    ``int(1333 / 800 * size)`` (ViLT's 800/1333 ratio: 639 for 384), multiples of ``size_divisor``."""
    return MinMaxResize(size, int(1333 / 800 * size), size_divisor)


def pixelbert_transform(size: int = 384, size_divisor: int = 32, randaug: bool = False):
    """PIL RGB image -> float tensor (3, H, W) in [-1, 1], H and W multiples of ``size_divisor``.

    ``randaug``: prepend RandAugment(2, 9) (ViLT's ``pixelbert_randaug``), for training only.
    """
    steps = [T.RandAugment(num_ops=2, magnitude=9)] if randaug else []
    steps += [pixelbert_resize(size, size_divisor), T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(steps)


def resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, h, w), ``size`` = (h, w): bicubic with Pillow's antialiasing filter (torch's
    ``interpolate(..., mode="bicubic", antialias=True)``, whose uint8 kernel rounds between its two passes as Pillow
    does). Within 2 levels of Pillow's ``resize(BICUBIC)`` at every pixel, 0.01 levels on average on photos
    (``tests/test_data_decoding.py``), at about a fifth of its time on a CPU."""
    return F.interpolate(x[None], size=tuple(size), mode="bicubic", antialias=True)[0]


class PixelbertPixels:
    """PIL RGB image -> uint8 (3, H, W) at the size of ``pixelbert_transform(size, size_divisor)``: the data
    loaders' image transform, normalised later on the model's device (:func:`normalize_uint8`).

    ``randaug``: RandAugment(2, 9) first, on the PIL image, per sample (ViLT's ``pixelbert_randaug``). The resize
    (:func:`resize_uint8`) is skipped when the picture already has its output size (images stored by the writers'
    ``--resize``, the demo set), so such a picture is only copied into a tensor.
    """

    def __init__(self, size: int = 384, size_divisor: int = 32, randaug: bool = False):
        self.resize = pixelbert_resize(size, size_divisor)
        self.randaug = randaug
        self._randaug = T.RandAugment(num_ops=2, magnitude=9) if randaug else None

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the output for a picture of (width, height)."""
        return self.resize.output_size(width, height)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if self._randaug is not None:
            img = self._randaug(img)
        x = pil_to_tensor(img)
        w, h = self.output_size(*img.size)
        return x if (w, h) == img.size else resize_uint8(x, (h, w))

    def __repr__(self):
        return f"PixelbertPixels({self.resize!r}, randaug={self.randaug})"


def denormalize_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Normalised float pixels (..., 3, H, W) in [-1, 1] -> uint8 (..., 3, H, W); exact inverse on ToTensor's grid."""
    mean = x.new_tensor(MEAN).view(3, 1, 1)
    std = x.new_tensor(STD).view(3, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> normalised float32 (..., 3, H, W) on ``x``'s device; inverse of
    ``denormalize_to_uint8``. The operations of ToTensor + Normalize in their order (divide by 255, subtract the
    mean, divide by the std), so on a CPU it gives their floats exactly."""
    mean = torch.tensor(MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(3, 1, 1)
    return (x.float() / 255 - mean) / std
