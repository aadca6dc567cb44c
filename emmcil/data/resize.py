"""Images stored at the size the pixelbert transform gives them (the writers' ``--resize``), to feed a GPU.

A data loader spends most of its time per sample decoding the original photo and resizing it (bicubic) to the
model's resolution; a 1600x1200 JPEG costs several times a 512x384 one (``benchmarks/bench_loader.py``). With
``--resize`` the writers store every image already resized by :func:`~emmcil.data.transforms.pixelbert_resize`
(shorter side ``size``, longer side at most ``int(1333 / 800 * size)``, both floored to multiples of
``size_divisor``: 384 / 639 / 32 for ViLT-B/32, so 512x384 for a 4:3 photo), re-encoded as a JPEG of quality
:data:`DEFAULT_QUALITY` with full-resolution chroma (4:4:4).

Why the model input stays the same: that resize is idempotent (``output_size`` of an output size is itself, see
``tests/test_data_resize.py``), so the transform leaves a stored image's size alone and only ToTensor/normalise
run; what remains is the JPEG re-encoding. On photo-like JPEGs of 500x375 to 1600x1200 at quality 95, 4:4:4, the
normalised model input differs from the original's by about 1.3/255 per pixel on average (at most ~20/255 at sharp
edges), about what one more JPEG save of a photo costs. ``--resize-quality 100`` brings the mean to ~0.3/255 at
about 2.5x the bytes. An image that already has the transform's size keeps its file's bytes untouched (no re-encoding).

Decoding goes through :func:`~emmcil.data.images.decode_image` before the resize, so EXIF orientation, transparency
(on white) and 16-bit scaling are applied once, as the dataset would apply them to the original; the stored JPEG is
plain upright 8-bit RGB. RandAugment (``train_randaug``, off by default) then runs on the stored image instead of
the original; its operations are relative to the image size, so it draws from nearly the same distribution.

``--resize-format ppm`` stores the resized pixels themselves instead (uncompressed 8-bit RGB, PPM, a format every
decoder here reads): the model input is then exactly that of the original under ViLT's transform (Pillow's resize),
and decoding costs a copy, at about 8x the bytes of the JPEG (590 kB for 512x384).

The choice is recorded in the arrow file's schema metadata (:data:`METADATA_KEY`), and :func:`check_stored_resize`
refuses a run whose ``image_size``/``patch_size`` differ from the stored ones (it would resize a resized copy,
not the original). Each row of a resized file also records its original file's size in bytes
(:data:`ORIGINAL_NBYTES`), the reference of ``mrdc``'s rate, which the resize would otherwise hide.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass

import pyarrow as pa
from PIL import Image

from .arrow import read_metadata
from .transforms import MinMaxResize, pixelbert_resize

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
        resized = self.resize(image)
        if resized is image:
            return data
        buf = io.BytesIO()
        if self.format == "ppm":
            resized.save(buf, format="PPM")
        else:
            resized.save(buf, format="JPEG", quality=self.quality, subsampling=0)  # subsampling=0: 4:4:4 chroma
        return buf.getvalue()

    def metadata(self) -> dict[str, str]:
        """The arrow schema metadata that records this choice."""
        record = {k: v for k, v in asdict(self).items() if k != "format"}
        return {METADATA_KEY: json.dumps({**record, "longer": self.resize.longer, "resample": "bicubic (Pillow)",
                                          "format": FORMATS[self.format], "kept_as_is": "images already of that size"})}


def stored_resize(path: str | os.PathLike) -> dict | None:
    """The ``--resize`` record of an arrow file (size, size_divisor, quality, ...), or None if stored as found."""
    record = read_metadata(path).get(METADATA_KEY)
    return None if record is None else json.loads(record)


def check_stored_resize(paths, image_size: int, patch_size: int) -> None:
    """Raise ValueError when an arrow file of ``paths`` holds images stored resized for another transform than
    ``pixelbert_transform(image_size, patch_size)``: the run would resize the stored copy, not the original."""
    for path in paths:
        record = stored_resize(path)
        if record is not None and (record["size"], record["size_divisor"]) != (image_size, patch_size):
            raise ValueError(
                f"{path} holds images stored resized for image_size={record['size']}, "
                f"patch_size={record['size_divisor']} (written with --resize {record['size']}), but this run uses "
                f"image_size={image_size}, patch_size={patch_size}; write the set again without --resize, or with "
                f"--resize {image_size} --resize-divisor {patch_size}")
