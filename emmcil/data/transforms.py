"""ViLT's "pixelbert" image transform and its inverse.

Images keep their aspect ratio (no crop, no flip): shorter side -> ``size``, longer side capped at
``int(1333 / 800 * size)``, both sides floored to multiples of ``size_divisor`` (the patch size), then ToTensor and
inception normalisation (mean = std = 0.5, so pixels live in [-1, 1]). Batches therefore mix sizes; see
``collate.collate`` for the padding.
"""
from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T

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


def denormalize_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Normalised float pixels (..., 3, H, W) in [-1, 1] -> uint8 (..., 3, H, W); exact inverse on ToTensor's grid."""
    mean = x.new_tensor(MEAN).view(3, 1, 1)
    std = x.new_tensor(STD).view(3, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> normalised float32 (..., 3, H, W); inverse of ``denormalize_to_uint8``."""
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x.float() / 255 - mean) / std
