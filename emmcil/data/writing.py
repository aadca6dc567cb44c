"""What the arrow writers share: raw samples, their validation, skip counts, caption files, seeded splits.

Every bad input is either an error naming the sample and the file, or, with ``--skip-bad``, a printed count per
reason (plus the first few sample names) and a ``{name}_skipped.json`` next to the arrow files. Nothing is dropped
silently. An entry that cannot be read (a directory or a symlink loop where an image is listed, a file without read
permission) is such a bad sample, with its own reason; a class left without any sample is an error naming it.

A write is all or nothing: the splits are written aside, then named in ``{name}_write.json`` and moved into place
(``emmcil.data.arrow.check_write``: readers refuse a folder that a stopped write left half moved). SIGTERM and
SIGINT stop a writer cleanly (:mod:`emmcil.stops`): nothing of the write is left, exit status
``emmcil.stops.STOPPED_EXIT_CODE``.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import shutil
import stat
import sys
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emmcil import stops
from emmcil.atomic import disk_full, write_text

from .arrow import WRITE_ID_KEY, ArrowWriter, arrow_path, write_manifest_path
from .images import ImageDecodeError, decode_image
from .resize import DEFAULT_QUALITY, ORIGINAL_NBYTES, ORIGINAL_NBYTES_FIELD, StoredResize
from .textfiles import TextFile, read_csv, read_jsonl

WRITTEN_SPLITS = ("train", "val", "test")  # the splits the writers make

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

REASONS = {
    "missing_file": "image listed but absent",
    "corrupt_image": "image unreadable",
    "missing_caption": "no caption for the image",
    "empty_caption": "empty caption",
    "unknown_class": "label outside the class index",
    "outside_root": "captioned path outside the image folder (--root)",
    "is_directory": "a directory where an image is listed",
    "symlink_loop": "a symbolic link that loops",
    "no_permission": "no permission to read the file",
    "not_a_file": "neither a file nor a directory (a pipe, socket or device)",
    "unreadable_file": "the file cannot be read (an I/O error)",
}


@dataclass
class RawSample:
    """One sample before validation. ``texts``/``label`` are None when the caption / class is not known."""
    image_id: str
    image_path: Path
    texts: list[str] | None
    label: int | None
    split: str
    source: str  # the file (or folder) that listed this sample, for error messages
    class_name: str = ""
    problem: tuple[str, str] | None = None  # (reason, detail) found while listing it, e.g. an unreadable folder


class BadSampleError(ValueError):
    def __init__(self, reason: str, sample: RawSample, detail: str = ""):
        self.reason, self.sample = reason, sample
        msg = (f"{REASONS[reason]} ({reason}): sample '{sample.image_id}' (image {sample.image_path}, "
               f"listed in {sample.source})")
        super().__init__(msg + (f": {detail}" if detail else ""))


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def entry_problem(path: Path) -> tuple[str, str] | None:
    """(reason, detail) when ``path`` cannot be read as an image file, without reading it: absent (or a dangling
    link), a directory, a symlink loop, not a regular file (a FIFO would block the reader), or unreadable by
    permission; None for a readable regular file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return ("missing_file", "a symbolic link to a file that does not exist") if path.is_symlink() else \
            ("missing_file", "")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink_loop", e.strerror
        if e.errno in (errno.EACCES, errno.EPERM):
            return "no_permission", e.strerror
        return "unreadable_file", f"{type(e).__name__}: {e.strerror or e}"
    if stat.S_ISDIR(st.st_mode):
        return "is_directory", "a folder, named like an image"
    if not stat.S_ISREG(st.st_mode):
        return "not_a_file", ""
    if not os.access(path, os.R_OK):
        return "no_permission", "the file is not readable for this user"
    return None


def read_image_file(sample: RawSample) -> bytes:
    """The bytes of ``sample``'s image file; BadSampleError for an entry that cannot be read (see
    :func:`entry_problem`; an I/O error while reading is ``unreadable_file``)."""
    problem = entry_problem(sample.image_path)
    if problem is not None:
        raise BadSampleError(problem[0], sample, problem[1])
    try:
        return sample.image_path.read_bytes()
    except FileNotFoundError:  # removed since it was looked at
        raise BadSampleError("missing_file", sample) from None
    except PermissionError as e:
        raise BadSampleError("no_permission", sample, e.strerror or "") from None
    except OSError as e:
        raise BadSampleError("unreadable_file", sample, f"{type(e).__name__}: {e.strerror or e}") from None


def validate(sample: RawSample, num_classes: int, resize: StoredResize | None = None) -> dict:
    """The arrow row of ``sample``, or BadSampleError. The image is decoded in full with ``images.decode_image``
    (a truncated JPEG only fails then); the row keeps the file's bytes as they are, or with ``resize`` the bytes of
    the picture resized for the pixelbert transform (``resize.StoredResize.encode``), and in both cases the file's
    size in bytes as found (``original_nbytes``, which a resized file stores)."""
    if sample.problem is not None:
        raise BadSampleError(sample.problem[0], sample, sample.problem[1])
    if Path(sample.image_id).is_absolute() or sample.image_id.split("/")[0] == "..":
        raise BadSampleError("outside_root", sample, "caption paths are relative to the image folder, or absolute "
                                                     "under it")
    if sample.label is None or not 0 <= sample.label < num_classes:
        raise BadSampleError("unknown_class", sample,
                             f"class {sample.class_name or sample.label!r} not among the {num_classes} classes")
    problem = entry_problem(sample.image_path)  # an entry that cannot be read says so, captioned or not
    if problem is not None and problem[0] != "missing_file":
        raise BadSampleError(problem[0], sample, problem[1])
    if sample.texts is None:
        raise BadSampleError("missing_caption", sample)
    if not sample.texts or any(not t.strip() for t in sample.texts):
        raise BadSampleError("empty_caption", sample, f"texts {sample.texts!r}")
    data = read_image_file(sample)
    try:
        image = decode_image(data, str(sample.image_path))  # what ArrowDataset will do with the stored bytes
    except ImageDecodeError as e:
        raise BadSampleError("corrupt_image", sample, e.reason) from None
    original_nbytes = len(data)
    if resize is not None:
        data = resize.encode(image, data)
    return {"image": data, "text": [t.strip() for t in sample.texts], "label": int(sample.label),
            "image_id": sample.image_id, "split": sample.split, ORIGINAL_NBYTES: original_nbytes}


@dataclass
class SkipReport:
    counts: Counter = field(default_factory=Counter)
    samples: list[dict] = field(default_factory=list)

    def add(self, err: BadSampleError) -> None:
        self.counts[err.reason] += 1
        self.samples.append({"reason": err.reason, "split": err.sample.split, "image_id": err.sample.image_id,
                             "message": str(err)})

    def __len__(self):
        return sum(self.counts.values())

    def summary(self, examples: int = 3) -> str:
        if not self.counts:
            return "skipped 0 samples"
        lines = [f"skipped {len(self)} samples:"]
        for reason, n in self.counts.most_common():
            names = [s["image_id"] for s in self.samples if s["reason"] == reason][:examples]
            lines.append(f"  {reason} ({REASONS[reason]}): {n}, e.g. {', '.join(names)}")
        return "\n".join(lines)


def write_split(samples: list[RawSample], out_dir: Path, name: str, split: str, num_classes: int,
                skip_bad: bool, report: SkipReport, resize: StoredResize | None = None,
                write_id: str = "") -> tuple[Path, Counter]:
    """Validate and write ``samples`` to ``{out_dir}/{name}_{split}.arrow``; returns (path, rows written per label).
    With ``resize`` the images are stored resized, the file's metadata records how and the column
    ``original_nbytes`` each image's size as found (without, the stored bytes are the original ones); ``write_id``
    marks the file as one of a write (:func:`write_splits`)."""
    path = arrow_path(out_dir, name, split)
    found = stored = 0  # image bytes as found on disk / as stored
    per_label: Counter = Counter()
    metadata = {**(resize.metadata() if resize else {}), **({WRITE_ID_KEY: write_id} if write_id else {})}
    with ArrowWriter(path, metadata=metadata or None, extra_fields=[ORIGINAL_NBYTES_FIELD] if resize else ()) as w:
        for s in tqdm(samples, desc=f"{name}_{split}", unit="img", mininterval=1.0):
            try:
                row = validate(s, num_classes, resize)
            except BadSampleError as e:
                if not skip_bad:
                    raise
                report.add(e)
                continue
            w.write(row)
            per_label[row["label"]] += 1
            found += row[ORIGINAL_NBYTES]
            stored += len(row["image"])
    if w.num_rows == 0:
        path.unlink()
        raise ValueError(f"{name}_{split}: no valid samples (of {len(samples)}); nothing written")
    if resize:
        print(f"{name}_{split}: images resized for pixelbert_transform({resize.size}, {resize.size_divisor}), "
              f"{'PPM' if resize.format == 'ppm' else f'JPEG quality {resize.quality}'}: {stored / 1e6:.3g} MB stored "
              f"for {found / 1e6:.3g} MB as found")
    return path, per_label


def check_fractions(fractions: dict[str, float]) -> None:
    """ValueError naming the option of a held-out split fraction outside [0, 1), or of fractions that sum to 1 or
    more (no image of a class would be left for training). ``fractions``: option name -> value."""
    for option, f in fractions.items():
        if not 0.0 <= f < 1.0:  # NaN included
            raise ValueError(f"{option} {f}: expected a share of each class's images in [0, 1)")
    total = sum(fractions.values())
    if total >= 1.0:
        shown = " + ".join(f"{option} {f:g}" for option, f in fractions.items())
        raise ValueError(f"{shown} = {total:g}: the held-out splits would take every image of a class, leaving none "
                         f"for training; their sum must stay below 1")


def incomplete_classes(listed: dict[int, int], written: dict[str, Counter], required: tuple[str, ...]
                       ) -> dict[int, dict[str, int]]:
    """{label: {split: rows}} of the classes that have images (``listed``: label -> samples listed) but no row in
    one of the ``required`` splits (``written``: split -> rows per label)."""
    splits = dict.fromkeys([*required, *written])
    return {c: {s: written.get(s, Counter())[c] for s in splits} for c in sorted(listed)
            if any(written.get(s, Counter())[c] == 0 for s in required)}


def write_splits(splits: dict[str, list[RawSample]], out_dir, name: str, class_names: list[str],
                 skip_bad: bool, resize: StoredResize | None = None, required: tuple[str, ...] = ("train", "test"),
                 allow_incomplete_classes: bool = False, empty_classes: str = "error") -> dict[str, Path]:
    """Write every split and ``{name}_classes.json`` (class names in label order), print a summary, and with
    ``skip_bad`` list the skipped samples in ``{name}_skipped.json``. ``resize``: store the images resized.

    Every class with images must get a row in each ``required`` split (a run needs a training and a test sample of
    every class of a phase): a class left without one (too few images for the split fractions, or its images in a
    split skipped with ``skip_bad``) is a ValueError that lists every such class and writes nothing; with
    ``allow_incomplete_classes`` they are listed and the write goes on.

    All or nothing: the splits are written into ``{out_dir}/.{name}.writing/``, each marked with the write's id;
    only when every one is complete (and every class has a sample) is the write named in ``{name}_write.json``, and
    then the files are moved into place. A reader refuses a file of another write than the one named there
    (``emmcil.data.arrow.check_write``), so a writer stopped between two moves leaves no folder that reads as a new
    train split beside an old test split, and a write that stops on a bad sample leaves a dataset written earlier as
    it was. A ``{name}_{split}.arrow`` of an earlier write whose split this write does not make (a val split no
    longer asked for) is removed, and said so. A class without any sample is a ValueError naming it
    (``empty_classes="error"``: classes made from folders), or a printed note (``"note"``: a fixed class index such
    as ImageNet-R's 200 wnids, of which a folder may hold some)."""
    out_dir = Path(out_dir)
    num_classes = len(class_names)
    report = SkipReport()
    staging = out_dir / f".{name}.writing"
    shutil.rmtree(staging, ignore_errors=True)  # left by a write that was killed
    staging.mkdir(parents=True)
    write_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    try:
        per_label = {split: write_split(samples, staging, name, split, num_classes, skip_bad, report, resize,
                                        write_id)[1]
                     for split, samples in splits.items()}
        labels = sum(per_label.values(), Counter())
        empty = [c for i, c in enumerate(class_names) if not labels[i]]
        named = ", ".join(repr(c) for c in empty[:10]) + (f" (and {len(empty) - 10} more)" if len(empty) > 10
                                                          else "")
        if empty and empty_classes == "note":
            print(f"note: {len(empty)} of the {num_classes} classes of {name!r} have no sample: {named}")
        elif empty:
            raise ValueError(f"{len(empty)} class(es) of {name!r} would have no sample: {named}"
                             + (f" ({len(report)} bad samples skipped)" if len(report) else "")
                             + "; give each class images (or leave the class out), nothing was written")
        listed = Counter(s.label for samples in splits.values() for s in samples
                         if s.label is not None and 0 <= s.label < num_classes)
        incomplete = incomplete_classes(listed, per_label, required)
        if incomplete:
            lines = "\n".join(f"  {class_names[c]!r} (label {c}): {listed[c]} images -> "
                               + ", ".join(f"{s} {n}" for s, n in rows.items()) for c, rows in incomplete.items())
            what = (f"{len(incomplete)} classes left without a sample in {' or '.join(required)}:\n{lines}")
            if not allow_incomplete_classes:
                raise ValueError(f"{what}\nA run refuses a phase whose classes lack training or test samples. Give "
                                 f"these classes more images (or other split fractions), or pass "
                                 f"--allow-incomplete-classes to write them anyway; nothing was written.")
            print(f"warning (--allow-incomplete-classes): {what}")
        rows = {split: sum(counts.values()) for split, counts in per_label.items()}
        # every split is complete: name the write, then move its files into place (readers check the name)
        write_text(write_manifest_path(out_dir, name), json.dumps(
            {"write_id": write_id, "splits": {s: {"file": arrow_path(out_dir, name, s).name, "rows": n}
                                              for s, n in rows.items()}, "classes": num_classes}, indent=1))
        write_text(out_dir / f"{name}_classes.json", json.dumps(list(class_names), indent=1))
        paths = {}
        for split, n in rows.items():
            paths[split] = arrow_path(out_dir, name, split)
            os.replace(staging / paths[split].name, paths[split])
            print(f"wrote {n} rows to {paths[split]}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for split in sorted(set(WRITTEN_SPLITS) - set(splits)):
        stale = arrow_path(out_dir, name, split)
        if stale.exists():
            stale.unlink()
            print(f"removed {stale}, written earlier: this write has no {split} split")
    print(report.summary())
    if skip_bad:
        log = out_dir / f"{name}_skipped.json"
        write_text(log, json.dumps({"counts": dict(report.counts), "samples": report.samples}, indent=1))
        if len(report):
            print(f"list of skipped samples: {log}")
    return paths


def read_captions(path: str | Path) -> dict[str, list[str]]:
    """Captions keyed by image path relative to the image root (posix, no leading './').

    JSONL (``.jsonl``/``.json``): one object a line with ``path`` (or ``image``/``file``) and ``caption`` (or
    ``text``/``captions``; a string or a list). CSV/TSV: a header row with columns ``path`` and ``caption`` (or
    ``text``). A path that occurs several times collects several captions. Read with ``textfiles`` (UTF-8 with or
    without BOM; quoted CSV fields may hold newlines); bytes that are not UTF-8 become U+FFFD and each such line
    is reported. A malformed line is a ValueError naming the file and the line.
    """
    path = Path(path)
    caps: dict[str, list[str]] = defaultdict(list)

    def add(key, value, where):
        if key is None or key == "":
            raise ValueError(f"{where}: no image path")
        values = value if isinstance(value, list) else [value]
        caps[normalise_key(str(key))].extend("" if v is None else str(v) for v in values)

    if path.suffix.lower() in {".jsonl", ".json"}:
        records, tf = read_jsonl(path, errors="replace")
        for lineno, obj in records:
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            key = next((obj[k] for k in ("path", "image", "file") if k in obj), None)
            value = next((obj[k] for k in ("caption", "text", "captions") if k in obj), None)
            add(key, value, f"{path}:{lineno}")
    else:
        rows, tf = read_csv(path, delimiter="\t" if path.suffix.lower() == ".tsv" else ",", errors="replace")
        header = [c.strip() for c in rows[0][1]] if rows else []
        key_col = next((header.index(c) for c in ("path", "image", "file") if c in header), None)
        val_col = next((header.index(c) for c in ("caption", "text") if c in header), None)
        if key_col is None or val_col is None:
            raise ValueError(f"{path}: needs a header with columns 'path' and 'caption' (or 'text'); has {header}")
        for lineno, fields in rows[1:]:
            if len(fields) != len(header):
                raise ValueError(f"{path}:{lineno}: {len(fields)} fields where the header has {len(header)} "
                                 f"(quote a caption that holds the delimiter)")
            add(fields[key_col], fields[val_col], f"{path}:{lineno}")
    report_not_utf8(tf)
    return dict(caps)


def report_not_utf8(tf: TextFile, examples: int = 3) -> None:
    """Print how many runs of bytes that are not UTF-8 ``tf`` had (now U+FFFD), on how many lines, and the first
    few with their line and context (the writers' repair report)."""
    if tf.not_utf8:
        lines = len({r.line for r in tf.not_utf8})
        print(f"{tf.path}: repaired {len(tf.not_utf8)} runs of bytes that are not UTF-8 on {lines} lines "
              f"(replaced by U+FFFD), e.g. {'; '.join(tf.repair_notes()[:examples])}")


def normalise_key(key: str) -> str:
    key = key.replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def seeded_split(keys_by_group: dict[str, list[str]], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """{key: split}. Per group, a seeded permutation of its sorted keys gives ``round(f * n)`` keys to each split of
    ``fractions`` in turn; the rest go to "train". A group's draw depends only on (seed, group name, its keys), so
    adding or removing a class leaves the other classes' splits unchanged. ValueError for fractions outside [0, 1)
    or summing to 1 or more (:func:`check_fractions`)."""
    check_fractions({f"{split} fraction": f for split, f in fractions.items()})
    assignment = {}
    for group, keys in keys_by_group.items():
        keys = sorted(keys)
        order = np.random.default_rng([seed, zlib.crc32(group.encode())]).permutation(len(keys))
        start = 0
        for split, f in fractions.items():
            n = int(round(f * len(keys)))
            assignment.update((keys[i], split) for i in order[start:start + n])
            start += n
        assignment.update((keys[i], "train") for i in order[start:])
    return assignment


def base_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--out", required=True, help="output directory for {name}_{split}.arrow")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad samples (counted per reason and listed in {name}_skipped.json) instead of failing")
    p.add_argument("--allow-incomplete-classes", action="store_true",
                   help="write classes left without a train or test sample (too few images for the split "
                        "fractions, or skipped ones), listing them, instead of failing (a run refuses such a phase)")
    p.add_argument("--resize", type=int, nargs="?", const=384, metavar="SIZE",
                   help="store images already resized as pixelbert_transform(SIZE, --resize-divisor) resizes them "
                        "(shorter side SIZE, default 384 = ViLT-B/32's image_size; longer side <= 1333/800 SIZE), "
                        "re-encoded as JPEG, for a faster loader; off by default (the files' bytes as found)")
    p.add_argument("--resize-divisor", type=int, default=32, metavar="P",
                   help="with --resize: sides are multiples of P, the run's patch_size (default 32)")
    p.add_argument("--resize-quality", type=int, default=DEFAULT_QUALITY, metavar="Q",
                   help=f"with --resize: JPEG quality, 4:4:4 chroma (default {DEFAULT_QUALITY}; emmcil.data.resize)")
    p.add_argument("--resize-format", choices=("jpeg", "ppm"), default="jpeg",
                   help="with --resize: jpeg (default), or ppm: the resized pixels uncompressed, exactly the model "
                        "input of the original, decoded at the cost of a copy, about 8x the bytes")
    return p


def resize_option(args: argparse.Namespace) -> StoredResize | None:
    """The ``--resize`` options of ``base_parser`` as a StoredResize, or None when images are stored as found."""
    if args.resize is None:
        return None
    return StoredResize(args.resize, args.resize_divisor, args.resize_quality, args.resize_format)


def cli_errors(fn, args) -> None:
    """Run ``fn(args)``; bad input (a bad sample, an empty split, a missing file) ends the command with its message,
    and a bad sample with a hint about --skip-bad, instead of a traceback. SIGTERM / SIGINT stop it with exit status
    ``emmcil.stops.STOPPED_EXIT_CODE`` (the output folder keeps what it held before this write)."""
    with stops.stoppable():
        try:
            fn(args)
        except BadSampleError as e:
            print(f"error: {e}\n(re-run with --skip-bad to skip and count such samples)", file=sys.stderr)
            raise SystemExit(1) from None
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        except BaseException as e:
            full = disk_full(e)
            if full is not None:
                print(f"error: nothing of this write was kept (the output folder holds what it held before)\n"
                      f"{full}", file=sys.stderr)
                raise SystemExit(1) from None
            stop = stops.stop_of(e)
            if stop is None:
                raise
            print(f"{stop}: nothing of this write was kept (the output folder holds what it held before); re-run "
                  f"the same command to write the dataset", file=sys.stderr)
            raise SystemExit(stops.STOPPED_EXIT_CODE) from None
