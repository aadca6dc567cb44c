"""The one image decoder: encoded bytes (any file Pillow reads) -> 8-bit RGB picture, as a viewer shows it
(:func:`decode_image`; :func:`image_size` from the header alone). Every place that turns image bytes into pixels
goes through it (the writers, ``ArrowDataset``, the captioner, the JPEG exemplars), so they agree on what a file
holds. Its choices, against ViLT's ``convert("RGB")``: EXIF orientation applied, transparency on white
(:data:`BACKGROUND`), 16-bit images scaled (``round(v / 257)``) not clipped, the first frame of an animation, and
:class:`ImageDecodeError` naming a file that does not decode in full: docs/data.md#arrow-files-and-writers.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import ExifTags, Image, ImageOps

BACKGROUND = (255, 255, 255)  # what transparent pixels become

_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA = {"LA", "RGBA", "PA", "La", "RGBa"}
_PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}  # Pillow converts these to RGB only through their plain twin
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees


class ImageDecodeError(ValueError):
    """Bytes that do not decode to an image; the message names the file (``name``) and Pillow's ``reason``."""

    def __init__(self, message: str, name: str = "", reason: str = ""):
        super().__init__(message)  # one argument, so that the error pickles (DataLoader workers)
        self.name, self.reason = name, reason or message


def decode_image(data: bytes | str | os.PathLike, name: str | None = None,
                 draft: Callable[[int, int], tuple[int, int]] | None = None) -> Image.Image:
    """Decode an image file (its bytes, or a path) into an 8-bit RGB PIL image of size (W, H) as displayed.

    ``name`` (default: the path, or ``"<bytes>"``) is the file named in errors. Applies the EXIF orientation and
    converts any mode with :func:`to_rgb` (the choices: docs/data.md#arrow-files-and-writers). ``draft``: a function
    of the picture's (W, H) giving the (w, h) it will be resized to; a JPEG is then decoded at the smallest DCT scale
    (1/2, 1/4, 1/8; Pillow's ``Image.draft``) that keeps both sides at least that size, so the picture may come out
    smaller than the file (about a quarter of the decoding work at 1/2); other formats ignore it. Raises
    ImageDecodeError when the data is not a fully decodable image, FileNotFoundError when a path does not exist.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        name = name or str(data)
        data = Path(data).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if draft is not None and im.format == "JPEG":
                swapped = im.getexif().get(ExifTags.Base.Orientation, 1) in _SWAPS_SIDES
                w, h = draft(*(im.size[::-1] if swapped else im.size))
                im.draft(None, (h, w) if swapped else (w, h))  # in the file's own orientation
            im.load()  # decodes every pixel: a truncated file fails here, not later in a data loader
            ImageOps.exif_transpose(im, in_place=True)
            return to_rgb(im)
    except Exception as e:  # Pillow raises a zoo of types (OSError, SyntaxError, ValueError, DecompressionBombError)
        name, reason = name or "<bytes>", f"{type(e).__name__}: {e}"
        raise ImageDecodeError(f"cannot decode image {name}: {reason}", name, reason) from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> mode RGB, 8 bits: 16-bit scaled, transparency on :data:`BACKGROUND`.

    Returns ``im`` itself when it is RGB without a transparent colour. Raises ValueError for a mode Pillow cannot
    convert.
    """
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:  # a PNG may mark one RGB colour transparent
        return im
    if mode in _SIXTEEN_BIT or mode == "F":
        values = np.asarray(im)  # uint16 (of either byte order), int32 or float32, (H, W)
        if mode == "F":
            grey = np.rint(np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0))
        else:
            grey = (values.astype(np.int64) + 128) // 257  # = round(v / 257) for v >= 0 (257 is odd: no ties)
        return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA or "transparency" in im.info:
        rgba = (im.convert(_PREMULTIPLIED[mode]) if mode in _PREMULTIPLIED else im).convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, BACKGROUND + (255,)), rgba).convert("RGB")
    return im.convert("RGB")


def image_size(data: bytes, name: str | None = None) -> tuple[int, int]:
    """(W, H) of the picture :func:`decode_image` gives, read from the header without decoding the pixels.

    EXIF orientations 5-8 swap the stored sides. (JPEG, WebP and TIFF keep EXIF in the header; for a PNG whose
    ``eXIf`` chunk may follow the pixel data Pillow decodes the file to find it.) Raises ImageDecodeError.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as e:
        name, reason = name or "<bytes>", f"{type(e).__name__}: {e}"
        raise ImageDecodeError(f"cannot read the image header of {name}: {reason}", name, reason) from None
    return (h, w) if orientation in _SWAPS_SIDES else (w, h)


def device_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(W, H) of a JPEG that a plain JPEG decoder (``torchvision.io.decode_jpeg``, on the CPU or a GPU) turns into
    the picture :func:`decode_image` gives: baseline or progressive, YCbCr or greyscale, no EXIF rotation or
    mirroring. None for anything else (another format, CMYK, an EXIF orientation other than 1, a header that does
    not parse), which must be decoded by :func:`decode_image`. Reads the header only."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                return None
            return im.size
    except Exception:  # decode_image reports a bad file, with its reason
        return None
