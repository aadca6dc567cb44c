"""Map-style dataset over one or more arrow files of ``arrow.SCHEMA``.

Items (one per arrow row; ``index`` is the row index across the concatenated files):

    image        uint8 (3, H, W)  pixels at the model's size from :class:`~.transforms.PixelbertPixels` (sizes
                                  vary; see ``collate``), or float normalised from ``pixelbert_transform``, or an
                                  :class:`~.device.EncodedImage` to decode on the device (``decode_on="device"``)
    text_ids     long (T,)        T = max_text_len, [CLS] ... [SEP] [PAD]...
    text_masks   long (T,)        1 = real token
    label        int              the ORIGINAL dataset label (``scenario`` remaps it)
    index        int
    image_id     str
    raw_text     str              the caption used ("" when the text is missing)
    missing_type int              0 complete, 1 text missing, 2 image missing

Caption choice: ``text_index=None`` takes the first caption, at training as at evaluation. It is deterministic on
purpose: exemplar masking keeps the tokens of one specific caption, so the row index must identify the text.
Missing text is the empty string (tokenises to [CLS] [SEP]); a missing image is a white image (1.0 after
inception normalisation, pixel value 255) of the size the real image would have had, so shapes and padding do not
reveal which samples are missing.

Decoding (:meth:`ArrowDataset.image`): with ``jpeg_draft`` a JPEG is decoded at the smallest DCT scale that keeps it
at least the transform's output size (``images.decode_image(draft=...)``; needs a transform with ``output_size``);
with ``decode_on="device"`` a JPEG that a plain decoder reads as :func:`~.images.decode_image` does
(:func:`~.images.device_jpeg_size`) is not decoded at all but handed over as an :class:`~.device.EncodedImage`,
unless the transform draws per-sample augmentation (RandAugment needs the pixels here).
"""
from __future__ import annotations

import bisect
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import xxhash
from PIL import Image
from torch.utils.data import Dataset

from .arrow import WRITE_KEY_PREFIX, ArrowFormatError, check_write, read_arrow
from .device import DECODE_ON, EncodedImage
from .images import ImageDecodeError, decode_image, device_jpeg_size, image_size
from .missing import IMAGE_MISSING, TEXT_MISSING, MissingTable
from .resize import METADATA_KEY as RESIZED, ORIGINAL_NBYTES


class CorruptImageError(RuntimeError):
    """An arrow row holds image bytes that do not decode."""


class ArrowDataset(Dataset):
    def __init__(self, paths: str | os.PathLike | list, tokenizer, transform, max_text_len: int,
                 text_index: int | None = None, missing: MissingTable | None = None, jpeg_draft: bool = False,
                 decode_on: str = "cpu"):
        self.paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        if not self.paths:
            raise ValueError("ArrowDataset needs at least one arrow file")
        if decode_on not in DECODE_ON:
            raise ValueError(f"decode_on={decode_on!r}: expected one of {DECODE_ON}")
        self.jpeg_draft, self.decode_on = bool(jpeg_draft), decode_on
        self.tokenizer, self.transform = tokenizer, transform
        self.max_text_len, self.text_index, self.missing = max_text_len, text_index, missing
        tables = [read_arrow(p) for p in self.paths]
        for path, table in zip(self.paths, tables):  # a file of an unfinished write is refused
            check_write(path, table.schema.metadata)
        self._offsets = np.cumsum([0] + [t.num_rows for t in tables]).tolist()  # row i of file k: offsets[k] + i
        # the small columns are read once; images stay memory-mapped and are read per item
        self._labels = np.concatenate([t.column("label").to_numpy() for t in tables]).astype(np.int64)
        self.image_ids: list[str] = [x for t in tables for x in t.column("image_id").to_pylist()]
        self.texts: list[list[str]] = [x for t in tables for x in t.column("text").to_pylist()]
        self._tables = tables
        self._image_sizes: np.ndarray | None = None  # image_sizes(), on first use
        if missing is not None and len(missing) != len(self):
            raise ValueError(f"missing table has {len(missing)} codes for {len(self)} samples of {self.paths}")
        uncaptioned = [i for i, texts in enumerate(self.texts) if not texts]
        if uncaptioned:  # found here, not when the sample is first drawn in some phase's training
            i = uncaptioned[0]
            raise ArrowFormatError(f"{len(uncaptioned)} samples have no caption (an empty text list), e.g. "
                             f"'{self.image_ids[i]}' (index {i}) in {self.file_of(i)}")

    # The memory-mapped tables are not pickled: DataLoader workers (spawn) reopen the files themselves.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tables"] = None
        return state

    def _table(self, k: int):
        if self._tables is None:
            self._tables = [read_arrow(p) for p in self.paths]
        return self._tables[k]

    def __len__(self) -> int:
        return self._offsets[-1]

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 original labels, without decoding any image."""
        return self._labels

    def column(self, name: str) -> list:
        """Any column of the arrow files as a Python list (e.g. the demo set's ``box``); avoid ``image``."""
        out = []
        for k, path in enumerate(self.paths):
            if name not in self._table(k).column_names:
                raise KeyError(f"{path} has no column '{name}' (columns: {self._table(k).column_names})")
            out += self._table(k).column(name).to_pylist()
        return out

    def file_of(self, index: int) -> Path:
        """The arrow file that holds row ``index``."""
        return self.paths[bisect.bisect_right(self._offsets, index) - 1]

    def image_bytes(self, index: int) -> bytes:
        k = bisect.bisect_right(self._offsets, index) - 1
        return self._table(k).column("image")[index - self._offsets[k]].as_py()

    def original_nbytes(self, index: int) -> int:
        """Bytes of row ``index``'s image file as found, before the writers' ``--resize``: the file's
        ``original_nbytes`` column, or, in a file stored as found, the stored bytes. ValueError naming the file for
        a resized file without the column (written before the writers recorded it: write it again)."""
        k = bisect.bisect_right(self._offsets, index) - 1
        table = self._table(k)
        if ORIGINAL_NBYTES in table.column_names:
            return int(table.column(ORIGINAL_NBYTES)[index - self._offsets[k]].as_py())
        if RESIZED.encode() in (table.schema.metadata or {}):
            raise ValueError(f"{self.paths[k]} holds images stored with --resize but not their original sizes in bytes "
                             f"(column '{ORIGINAL_NBYTES}', which the writers record since mrdc is charged against "
                             f"them): write the set again")
        return len(self.image_bytes(index))

    def load_image(self, index: int, draft=None) -> Image.Image:
        """The 8-bit RGB PIL image of row ``index`` from ``images.decode_image`` (EXIF orientation applied,
        transparency on white, 16-bit scaled; a JPEG at reduced scale with ``draft``, a function of (W, H) giving the
        size the picture will be resized to); CorruptImageError names the sample, the row and the file."""
        try:
            return decode_image(self.image_bytes(index), self.image_ids[index], draft)
        except ImageDecodeError as e:
            raise CorruptImageError(f"cannot decode image '{self.image_ids[index]}' (index {index}) "
                                    f"in {self.file_of(index)}: {e.reason}") from None

    def image(self, index: int, missing_type: int = 0):
        """The ``image`` of item ``index`` (module docstring): the transform's output, white for a missing image
        (``missing_type`` 2), or an :class:`~.device.EncodedImage` with ``decode_on="device"``."""
        output_size = getattr(self.transform, "output_size", None)  # PixelbertPixels has it
        if self.decode_on == "device" and output_size is not None and not getattr(self.transform, "randaug", False):
            data = self.image_bytes(index)
            size = device_jpeg_size(data)
            if size is not None:
                w, h = output_size(*size)
                if missing_type == IMAGE_MISSING:  # (stored H, W, 3, as a decoded picture: see collate)
                    return torch.full((h, w, 3), 255, dtype=torch.uint8).permute(2, 0, 1)
                return EncodedImage(data, (h, w), self.image_ids[index])
        draft = output_size if self.jpeg_draft else None
        image = self.transform(self.load_image(index, draft))
        if missing_type == IMAGE_MISSING:  # white, as 255 pixels or as 1.0 after normalisation
            image = torch.full_like(image, 255) if image.dtype == torch.uint8 else torch.ones_like(image)
        return image

    def image_sizes(self) -> np.ndarray:
        """(N, 2) int64: (W, H) of every picture as :meth:`load_image` gives it (EXIF orientation applied), read
        from the image headers without decoding (``images.image_size``); computed once. CorruptImageError counts the
        samples whose header does not parse and names the first few (a run reads every header before it trains:
        ``emmcil.engine.loaders.build_data``)."""
        if self._image_sizes is None:
            sizes = np.empty((len(self), 2), dtype=np.int64)
            bad = []
            for i in range(len(self)):
                try:
                    sizes[i] = image_size(self.image_bytes(i), self.image_ids[i])
                except ImageDecodeError as e:
                    bad.append(f"'{self.image_ids[i]}' (index {i}) in {self.file_of(i)}: {e.reason}")
            if bad:
                raise CorruptImageError(f"cannot read the image header of {len(bad)} samples: "
                                        + "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else ""))
            self._image_sizes = sizes
        return self._image_sizes

    def fingerprint(self) -> str:
        """32 hex digits of XXH3-128 over what the files hold: the labels, image ids, texts, every image's encoded
        bytes (and, in a resized file, the originals' byte counts) and each file's schema metadata (e.g. images
        stored resized; not the writer's write id, so the same data written twice is the same data). The same data
        copied elsewhere gives the same value; re-written captions, re-encoded or edited images (even of the same
        byte length) another. A run records it for each
        split and refuses to resume on other data (``emmcil.engine.rundir``). Reads every image's bytes once (no
        decoding): about as long as reading the files."""
        h = xxhash.xxh3_128(self._labels.astype("<i8").tobytes())
        h.update(json.dumps([self.image_ids, self.texts], ensure_ascii=False).encode("utf-8"))
        for k in range(len(self.paths)):
            table = self._table(k)
            for chunk in table.column("image").chunks:
                kind = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
                offsets = np.frombuffer(chunk.buffers()[1], dtype=kind)[chunk.offset:chunk.offset + len(chunk) + 1]
                h.update(np.diff(offsets).astype("<i8").tobytes())  # the lengths: where one image ends
                if len(offsets) and offsets[-1] > offsets[0]:
                    h.update(memoryview(chunk.buffers()[2])[int(offsets[0]):int(offsets[-1])])
            if ORIGINAL_NBYTES in table.column_names:  # resized files: the originals' sizes (mrdc's reference)
                h.update(table.column(ORIGINAL_NBYTES).to_numpy().astype("<i8").tobytes())
            meta = {a.decode("utf-8", "replace"): b.decode("utf-8", "replace")
                    for a, b in (table.schema.metadata or {}).items()}
            h.update(json.dumps(sorted((a, b) for a, b in meta.items() if not a.startswith(WRITE_KEY_PREFIX)))
                     .encode("utf-8"))
        return h.hexdigest()

    def caption(self, index: int) -> str:
        texts = self.texts[index]
        j = 0 if self.text_index is None else self.text_index
        if not -len(texts) <= j < len(texts):
            raise IndexError(f"text_index {j} but sample '{self.image_ids[index]}' (index {index}) in "
                             f"{self.file_of(index)} has {len(texts)} caption(s)")
        return texts[j]

    def tokenize(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(text_ids, text_masks), each long (max_text_len,)."""
        enc = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.max_text_len)
        return torch.tensor(enc["input_ids"], dtype=torch.long), torch.tensor(enc["attention_mask"], dtype=torch.long)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        missing_type = self.missing[index] if self.missing is not None else 0
        image = self.image(index, missing_type)
        raw_text = "" if missing_type == TEXT_MISSING else self.caption(index)
        text_ids, text_masks = self.tokenize(raw_text)
        return {"image": image, "text_ids": text_ids, "text_masks": text_masks, "label": int(self._labels[index]),
                "index": index, "image_id": self.image_ids[index], "raw_text": raw_text,
                "missing_type": int(missing_type)}
