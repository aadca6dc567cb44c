"""ViLT-style Arrow files: one IPC file per split, ``{name}_{split}.arrow``.

Columns (``SCHEMA``): ``image`` encoded image bytes (JPEG/PNG as found on disk), ``text`` list of captions,
``label`` original class id, ``image_id`` sample name (file name or relative path), ``split``.
Files are written in record batches bounded in rows and in bytes (bounded memory for 90k-image datasets, and no
batch over ``binary``'s 2 GiB offsets however large the photos) through :func:`emmcil.atomic.atomic_open` (a temporary
file renamed into place), so an interrupted writer never leaves a truncated ``.arrow`` behind.

One write of a dataset's splits (``emmcil.data.writing.write_splits``) marks each file with its write id (schema
metadata :data:`WRITE_ID_KEY`) and names that write in ``{name}_write.json`` (:func:`write_manifest_path`) before it
moves the files into place; a reader (:func:`check_write`) refuses a file of another write than the one the
manifest names, so a writer stopped between two moves never leaves a folder that reads as one dataset with a new
train split beside an old test split.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from emmcil.atomic import atomic_open

from .textfiles import read_text

REQUIRED_COLUMNS = ("image", "text", "label", "image_id", "split")
SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("text", pa.list_(pa.string())),
    ("label", pa.int64()),
    ("image_id", pa.string()),
    ("split", pa.string()),
])


# schema metadata of the files one write made: its id (the fingerprint of the data leaves these keys out)
WRITE_KEY_PREFIX = "emmcil_write"
WRITE_ID_KEY = "emmcil_write_id"


class ArrowFormatError(ValueError):
    """An arrow file lacks a required column or has the wrong type (or is not of the write its folder names)."""


def arrow_path(out_dir: str | os.PathLike, name: str, split: str) -> Path:
    return Path(out_dir) / f"{name}_{split}.arrow"


# A column of type ``binary`` or ``string`` addresses its bytes with 32-bit offsets: one record batch holds less than
# 2 GiB of them (apache/arrow#10776). Batches are cut well below that, so a batch of phone photos never reaches it.
MAX_BATCH_BYTES = 2**31 - 1
DEFAULT_BATCH_BYTES = 256 * 2**20


class ArrowWriter:
    """Stream rows (dicts with the ``SCHEMA`` columns) into one arrow file, atomically.

    A record batch is written every ``batch_rows`` rows, or earlier once its rows hold ``batch_bytes`` bytes of
    images and texts, so memory stays bounded and no batch reaches ``binary``'s 2 GiB limit; a single row of 2 GiB
    or more is a ValueError naming it (and nothing is written).

    >>> with ArrowWriter(path) as w:
    ...     w.write({"image": b"...", "text": ["a cat"], "label": 3, "image_id": "cat_1.jpg", "split": "train"})
    """

    def __init__(self, path: str | os.PathLike, batch_rows: int = 1024, metadata: dict[str, str] | None = None,
                 extra_fields: list[pa.Field] = (), batch_bytes: int = DEFAULT_BATCH_BYTES):
        if batch_rows < 1 or not 1 <= batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"batch_rows={batch_rows} must be >= 1 and batch_bytes={batch_bytes} in "
                             f"[1, {MAX_BATCH_BYTES}]")
        self.path = Path(path)
        self.batch_rows, self.batch_bytes = batch_rows, batch_bytes
        self._bytes = 0  # image and text bytes of the rows not yet written
        schema = pa.schema(list(SCHEMA) + list(extra_fields))  # extra columns (e.g. the demo's boxes) go last
        self.schema = schema.with_metadata(metadata) if metadata else schema
        self.columns = self.schema.names
        self.num_rows = 0
        self._rows: dict[str, list] = {k: [] for k in self.columns}

    def __enter__(self):
        self._file = atomic_open(self.path)  # renamed into place only when every row is written
        self._writer = pa.RecordBatchFileWriter(self._file.__enter__(), self.schema)
        return self

    def write(self, row: dict) -> None:
        size = len(row["image"]) + sum(len(t.encode("utf-8")) for t in row["text"])
        if size > MAX_BATCH_BYTES:
            raise ValueError(f"{self.path}: sample '{row['image_id']}' holds {size / 2**30:.2f} GiB of image and "
                             f"text bytes, more than an arrow binary column takes in one row (2 GiB)")
        if self._bytes + size > self.batch_bytes:
            self._flush()
        for k in self.columns:
            self._rows[k].append(row[k])
        self._bytes += size
        if len(self._rows["image"]) >= self.batch_rows or self._bytes >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        n = len(self._rows["image"])
        if n:
            self._writer.write_batch(pa.record_batch([self._rows[k] for k in self.columns], schema=self.schema))
            self.num_rows += n
            self._rows = {k: [] for k in self.columns}
            self._bytes = 0

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._flush()
            self._writer.close()
        except BaseException as e:
            self._file.__exit__(type(e), e, e.__traceback__)
            raise
        self._file.__exit__(exc_type, exc, tb)
        return False


def write_arrow(rows, path: str | os.PathLike, metadata: dict[str, str] | None = None,
                extra_fields: list[pa.Field] = (), batch_bytes: int = DEFAULT_BATCH_BYTES) -> Path:
    """Write an iterable of row dicts to ``path`` (:class:`ArrowWriter`: batches bounded in rows and bytes, so the
    rows may be a generator over more data than memory holds); returns the path."""
    with ArrowWriter(path, metadata=metadata, extra_fields=extra_fields, batch_bytes=batch_bytes) as w:
        for row in rows:
            w.write(row)
    return Path(path)


def read_arrow(path: str | os.PathLike, required: tuple[str, ...] = REQUIRED_COLUMNS) -> pa.Table:
    """Memory-map an arrow file (zero copy: rows are read from disk as they are used, so a file larger than memory
    streams) and check it holds the ``required`` columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"arrow file not found: {path}")
    try:
        table = pa.ipc.RecordBatchFileReader(pa.memory_map(str(path), "r")).read_all()
    except pa.ArrowInvalid as e:
        raise ArrowFormatError(f"{path} is not an arrow IPC file: {e}") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ArrowFormatError(
            f"{path} lacks required column(s) {missing}; it has {table.column_names}")
    if "text" in required and not pa.types.is_list(table.schema.field("text").type):
        raise ArrowFormatError(
            f"{path}: column 'text' must be a list of strings, got {table.schema.field('text').type}")
    return table


def write_manifest_path(root: str | os.PathLike, name: str) -> Path:
    """``{root}/{name}_write.json``: the write whose files the folder holds (``write_id``, and per split its file
    and rows)."""
    return Path(root) / f"{name}_write.json"


def write_id(metadata: dict | None) -> str | None:
    """The write id recorded in an arrow file's schema metadata (bytes or str keys), or None (another writer)."""
    for k, v in (metadata or {}).items():
        if (k.decode() if isinstance(k, bytes) else k) == WRITE_ID_KEY:
            return v.decode() if isinstance(v, bytes) else v
    return None


def check_write(path: str | os.PathLike, metadata: dict | None) -> None:
    """ArrowFormatError unless ``path`` (``{name}_{split}.arrow``, schema ``metadata``) belongs to the write that its
    folder's ``{name}_write.json`` names. Files beside no such manifest (other writers' files, a copy of the arrow
    files alone) are not checked here (:func:`check_same_write` compares files read together)."""
    path = Path(path)
    name = path.stem.rsplit("_", 1)[0]
    manifest = write_manifest_path(path.parent, name)
    if not manifest.is_file():
        return
    try:
        expected = json.loads(read_text(manifest).text)["write_id"]
    except (ValueError, KeyError, TypeError) as e:
        raise ArrowFormatError(f"{manifest} cannot be read ({e}): write the dataset again") from None
    found = write_id(metadata)
    if found != expected:
        raise ArrowFormatError(
            f"{path} is not of the write that {manifest.name} names ({found or 'no write id'} != {expected}): a "
            f"write of {name!r} into {path.parent} stopped before it had moved all its files into place, so the "
            f"folder mixes two writes. Write the dataset again (the same command).")


def check_same_write(paths) -> None:
    """ArrowFormatError when the arrow files read together (a run's training and test splits) come from different
    writes of our writers (or some from one of them and some from elsewhere)."""
    ids = {Path(p): write_id(read_metadata(p)) for p in paths}
    if len(set(ids.values())) > 1 and any(ids.values()):
        listed = ", ".join(f"{p.name}: {i or 'no write id'}" for p, i in ids.items())
        raise ArrowFormatError(f"the files of one dataset come from different writes ({listed}): write the "
                               f"dataset again, all its splits at once")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The schema metadata of an arrow file, without reading its rows."""
    schema = pa.ipc.open_file(pa.memory_map(str(path), "r")).schema
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}


def classes_path(root: str | os.PathLike, name: str) -> Path:
    """``{root}/{name}_classes.json``: the class names in label order, as the writers write them."""
    return Path(root) / f"{name}_classes.json"


def dataset_classes(root: str | os.PathLike, name: str, splits=("train", "test")) -> tuple[int, list[str] | None]:
    """(number of classes, class names or None) of the arrow dataset ``name`` in ``root``: from
    ``{name}_classes.json`` when it exists (a JSON list of names, label order), else the largest label of the
    ``splits``' arrow files + 1 (no names).

    Raises FileNotFoundError naming the files looked for, ArrowFormatError / ValueError for unreadable ones.
    """
    path = classes_path(root, name)
    if path.is_file():
        try:
            names = json.loads(read_text(path).text)
        except ValueError as e:
            raise ValueError(f"{path}: cannot read it as JSON ({e})") from None
        if not isinstance(names, list) or not names:
            raise ValueError(f"{path}: expected a non-empty JSON list of class names (label order)")
        return len(names), [str(n) for n in names]
    files = [arrow_path(root, name, s) for s in splits]
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"dataset {name!r} not found in {Path(root)}: no {path.name} and no "
            f"{' / '.join(f.name for f in files if not f.is_file())} (write them with "
            f"`python -m emmcil.data.write_folder --root IMAGES --captions FILE --out {root} --name {name}`)")
    top = max(pa.compute.max(read_arrow(f, ("label",)).column("label")).as_py() for f in files)
    return int(top) + 1, None
