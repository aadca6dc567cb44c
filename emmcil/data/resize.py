"""Images stored at the size the pixelbert transform gives them (the writers' ``--resize``), to feed a GPU: a JPEG of
quality :data:`DEFAULT_QUALITY` with 4:4:4 chroma, or the pixels themselves (``--resize-format ppm``), decoded
first by :func:`~emmcil.data.images.decode_image`. The choice is recorded in the arrow file's schema metadata
(:data:`METADATA_KEY`; :func:`check_stored_resize` refuses a run of another ``image_size``/``patch_size``), and each
row keeps its original file's byte count (:data:`ORIGINAL_NBYTES`, ``mrdc``'s reference). Why the model input stays
the same (the resize is idempotent) and what the re-encoding costs: docs/data.md#arrow-files-and-writers.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass

import pyarrow as pa
from PIL import Image

from .arrow import ArrowFormatError, read_metadata
from .transforms import MinMaxResize, PixelbertPixels, pixelbert_resize

METADATA_KEY = "emmcil.stored_resize"
DEFAULT_QUALITY = 95
FORMATS = {"jpeg": "JPEG 4:4:4", "ppm": "PPM (8-bit RGB, uncompressed)"}  # --resize-format -> what is stored
# the column of a resized file that holds each image's original encoded size in bytes (before the resize)
ORIGINAL_NBYTES = "original_nbytes"
ORIGINAL_NBYTES_FIELD = pa.field(ORIGINAL_NBYTES, pa.int64())


@dataclass(frozen=True)
class StoredResize:
    """How the writers store images: resized for ``pixelbert_transform(size, size_divisor)``, as a JPEG of
    ``quality`` or, with ``format="ppm"``, as the pixels themselves."""

    size: int = 384          # the shorter side: the run's image_size
    size_divisor: int = 32   # the run's patch_size
    quality: int = DEFAULT_QUALITY
    format: str = "jpeg"     # jpeg | ppm

    def __post_init__(self):
        if self.size < self.size_divisor or self.size_divisor < 1:
            raise ValueError(f"--resize {self.size} with size divisor {self.size_divisor}: expected a shorter side "
                             f"of at least one patch ({self.size_divisor} px)")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--resize-quality {self.quality}: expected a JPEG quality in [1, 100]")
        if self.format not in FORMATS:
            raise ValueError(f"--resize-format {self.format}: expected one of {sorted(FORMATS)}")

    @property
    def resize(self) -> MinMaxResize:
        return pixelbert_resize(self.size, self.size_divisor)

    def encode(self, image: Image.Image, data: bytes) -> bytes:
        """The bytes to store for ``image`` (8-bit RGB, as ``decode_image`` gave it from the file's ``data``):
        ``data`` itself when the picture already has the transform's size, else the resized picture as a JPEG (or a
        PPM with ``format="ppm"``)."""
        if self.resize.output_size(*image.size) == image.size:
            return data
        # the loaders' own resize (PixelbertPixels: torch's uint8 bicubic), so a PPM is bitwise the model input of
        # the original decoded in full, and a JPEG differs from it by the re-encoding alone
        pixels = PixelbertPixels(self.size, self.size_divisor)(image)
        resized = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
        buf = io.BytesIO()
        if self.format == "ppm":
            resized.save(buf, format="PPM")
        else:
            resized.save(buf, format="JPEG", quality=self.quality, subsampling=0)  # subsampling=0: 4:4:4 chroma
        return buf.getvalue()

    def metadata(self) -> dict[str, str]:
        """The arrow schema metadata that records this choice."""
        record = {k: v for k, v in asdict(self).items() if k != "format"}
        resample = "bicubic, antialiased (torch uint8, as the loaders)"
        return {METADATA_KEY: json.dumps({**record, "longer": self.resize.longer, "resample": resample,
                                          "format": FORMATS[self.format], "kept_as_is": "images already of that size"})}


def stored_resize(path: str | os.PathLike) -> dict | None:
    """The ``--resize`` record of an arrow file (size, size_divisor, quality, ...), or None if stored as found."""
    record = read_metadata(path).get(METADATA_KEY)
    return None if record is None else json.loads(record)


class StoredSizeError(ArrowFormatError):
    """An arrow file holds images stored resized for another transform than the run's (a refusal: the message
    alone, exit status 1)."""


def check_stored_resize(paths, image_size: int, patch_size: int) -> None:
    """Raise :class:`StoredSizeError` when an arrow file of ``paths`` holds images stored resized for another
    transform than ``pixelbert_transform(image_size, patch_size)``: the run would resize the stored copy, not the
    original."""
    for path in paths:
        record = stored_resize(path)
        if record is not None and (record["size"], record["size_divisor"]) != (image_size, patch_size):
            raise StoredSizeError(
                f"{path} holds images stored resized for image_size={record['size']}, "
                f"patch_size={record['size_divisor']} (written with --resize {record['size']}), but this run uses "
                f"image_size={image_size}, patch_size={patch_size}; write the set again without --resize, or with "
                f"--resize {image_size} --resize-divisor {patch_size}")
