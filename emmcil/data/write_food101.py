"""UPMC Food-101 -> ``food101_{train,val,test}.arrow``.

    python -m emmcil.data.write_food101 --root RAW --out DIR [--layout auto|json|csv] [--seed 0] [--skip-bad]
        [--resize [384]]

Two raw layouts (101 classes, text = the web page title):

* ``json`` (missing_aware_prompts): ``class_idx.json`` {class: idx}, ``text.json`` {file name: title},
  ``split.json`` {train, val, test: [file names]}; images in ``images/{train,test}/<class>/<class>_<k>.jpg``
  (val images live in ``images/train``). Gives the paper's 61,142 / 6,846 / 22,716 split.
* ``csv`` (the original download): ``texts/{train,test}_titles.csv`` with header-less rows
  ``<class>_<k>.jpg,<title>,<class>``. Val is carved from train: per class ``round(val_fraction * n)`` images
  drawn with ``--seed`` (default 10 %, close to the json split's 6,846 / 67,988), so it is *not* the same val set
  as ``split.json``. Labels come from ``class_idx.json`` when present, else from the sorted class names.
  The real ``train_titles.csv`` has an unclosed quote (``breakfast_burrito_730.jpg``) that makes a CSV parser
  swallow the following rows; each line is therefore parsed on its own, repaired where possible
  (first comma / last comma), and every repaired or skipped line is reported.

Text files are read with ``textfiles`` (UTF-8, BOM allowed). Titles whose bytes are not UTF-8 (scraped web pages)
are repaired to U+FFFD and each such line is reported with its bytes; the JSON index files must be valid UTF-8.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .textfiles import read_json, read_text
from .resize import StoredResize
from .writing import (RawSample, base_parser, check_fractions, cli_errors, is_image_file, report_not_utf8,
                      resize_option, seeded_split, write_splits)

NAME = "food101"
NUM_CLASSES = 101
NOT_UTF8 = "bytes not UTF-8, replaced by U+FFFD"


def _unquote(title: str) -> tuple[str, str | None]:
    """Strip CSV quoting from a title cut out by hand; returns (title, repair reason or None)."""
    t = title.strip()
    if len(t) >= 2 and t[0] == '"' and t[-1] == '"':
        return t[1:-1].replace('""', '"'), None
    if t.startswith('"'):
        return t[1:], "unclosed quote"
    return t, None


def read_titles_csv(path: str | Path) -> tuple[list[tuple[str, str, str]], dict[str, list[str]], dict[str, list[str]]]:
    """Rows ``(file name, title, class)`` of a UPMC ``*_titles.csv``.

    Returns (rows, repaired, skipped), the last two mapping a reason to ``"line N: ..."`` entries. Read with
    ``textfiles.read_text``: bytes that are not UTF-8 become U+FFFD and the row is listed as repaired with them.
    A quoted title may span lines (the next lines join while its quote is open and they do not start a row).
    """
    rows, repaired, skipped = [], {}, {}
    tf = read_text(path, errors="replace")
    not_utf8: dict[int, list[bytes]] = {}
    for r in tf.not_utf8:
        not_utf8.setdefault(r.line, []).append(r.raw)
    lines = list(tf.lines(keepends=True))
    i = 0
    while i < len(lines):
        lineno, record = lines[i]
        while record.count('"') % 2 and i + 1 < len(lines) and not _starts_row(lines[i + 1][1]):
            i += 1
            record += lines[i][1]
        last = lines[i][0]
        i += 1
        line = record.removesuffix("\n").removesuffix("\r")
        if not line.strip():
            continue
        # one record at a time: an unclosed quote must not swallow the rows after it
        fields = next(csv.reader([line]), [])
        reason = None
        if len(fields) != 3:
            first, last_comma = line.find(","), line.rfind(",")
            if first < 0 or first == last_comma:
                skipped.setdefault("fewer than 3 fields", []).append(f"line {lineno}: {line[:80]!r}")
                continue
            title, reason = _unquote(line[first + 1:last_comma])
            fields = [line[:first], title, line[last_comma + 1:]]
            reason = reason or "unquoted comma in title"
        fname, title, cls = (x.strip() for x in fields)
        if not is_image_file(Path(fname)):
            kind = "header" if lineno == 1 else "first field is not an image file name"
            skipped.setdefault(kind, []).append(f"line {lineno}: {line[:80]!r}")
            continue
        if reason:
            repaired.setdefault(reason, []).append(f"line {lineno}: {fname}")
        raws = [raw for n in range(lineno, last + 1) for raw in not_utf8.get(n, [])]
        if raws:
            repaired.setdefault(NOT_UTF8, []).append(f"line {lineno}: {fname} {b' '.join(raws)!r}")
        rows.append((fname, title, cls))
    return rows, repaired, skipped


def _starts_row(line: str) -> bool:
    """Does ``line`` begin a titles row (``<image file>,``) rather than continue a quoted title?"""
    first, comma, _ = line.partition(",")
    return bool(comma) and '"' not in first and is_image_file(Path(first.strip()))


def _print_csv_report(path, rows, repaired, skipped) -> None:
    n_rep, n_skip = sum(map(len, repaired.values())), sum(map(len, skipped.values()))
    print(f"{path}: {len(rows)} rows read, {n_rep} repaired, {n_skip} skipped")
    for kind, entries in (("repaired", repaired), ("skipped", skipped)):
        for reason, lines in entries.items():
            print(f"  {kind} ({reason}): {len(lines)}, e.g. {'; '.join(lines[:3])}")


def _class_of(fname: str) -> str:
    return fname[:fname.rindex("_")] if "_" in fname else fname


def _load_class_idx(root: Path) -> dict[str, int] | None:
    path = root / "class_idx.json"
    if not path.is_file():
        return None
    class_idx, _ = read_json(path)
    if not isinstance(class_idx, dict) or not all(isinstance(v, int) for v in class_idx.values()):
        raise ValueError(f"{path}: expected an object {{class name: integer index}}")
    if sorted(class_idx.values()) != list(range(len(class_idx))):
        raise ValueError(f"{path}: indices must be 0..{len(class_idx) - 1}, each once")
    return class_idx


def samples_json(root: Path) -> tuple[dict[str, list[RawSample]], dict[str, int]]:
    """The json-trio layout -> ({split: samples}, class index)."""
    class_idx = _load_class_idx(root)
    if class_idx is None:
        raise FileNotFoundError(f"{root / 'class_idx.json'} not found")
    texts, tf = read_json(root / "text.json", errors="replace")  # titles: repaired and reported, as in the CSV
    report_not_utf8(tf)
    split_file = root / "split.json"
    splits, _ = read_json(split_file)
    for path, obj in ((tf.path, texts), (split_file, splits)):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    source = f"{split_file} (captions: {root / 'text.json'})"
    out = {}
    for split in ("train", "val", "test"):
        if split not in splits:
            raise ValueError(f"{split_file} has no '{split}' list (keys: {list(splits)})")
        folder = "test" if split == "test" else "train"  # val images live in images/train
        samples = []
        for fname in splits[split]:
            cls = _class_of(fname)
            text = texts.get(fname)
            samples.append(RawSample(
                image_id=fname, image_path=root / "images" / folder / cls / fname,
                texts=None if text is None else (list(text) if isinstance(text, list) else [text]),
                label=class_idx.get(cls), split=split, source=source, class_name=cls))
        out[split] = samples
    return out, class_idx


def samples_csv(root: Path, seed: int = 0, val_fraction: float = 0.1
                ) -> tuple[dict[str, list[RawSample]], dict[str, int]]:
    """The original CSV layout -> ({split: samples}, class index); val carved from train with ``seed``."""
    parsed = {}
    for split in ("train", "test"):
        path = root / "texts" / f"{split}_titles.csv"
        rows, repaired, skipped = read_titles_csv(path)
        _print_csv_report(path, rows, repaired, skipped)
        parsed[split] = (path, rows)
    class_idx = _load_class_idx(root) or {c: i for i, c in enumerate(sorted({r[2] for r in parsed["train"][1]}))}

    def sample(fname, title, cls, split, folder, path):
        return RawSample(image_id=fname, image_path=root / "images" / folder / cls / fname, texts=[title],
                         label=class_idx.get(cls), split=split, source=str(path), class_name=cls)

    path, rows = parsed["train"]
    by_class = {}
    for fname, _, cls in rows:
        by_class.setdefault(cls, []).append(fname)
    split_of = seeded_split(by_class, {"val": val_fraction}, seed)
    out = {s: [sample(*r, s, "train", path) for r in rows if split_of[r[0]] == s] for s in ("train", "val")}
    path, rows = parsed["test"]
    out["test"] = [sample(*r, "test", "test", path) for r in rows]
    return out, class_idx


def detect_layout(root: Path) -> str:
    if (root / "split.json").is_file() and (root / "text.json").is_file():
        return "json"
    if (root / "texts" / "train_titles.csv").is_file():
        return "csv"
    raise FileNotFoundError(f"{root}: neither split.json + text.json + class_idx.json nor texts/train_titles.csv")


def write_food101(root, out, *, name: str = NAME, layout: str = "auto", seed: int = 0, val_fraction: float = 0.1,
                  skip_bad: bool = False, resize: StoredResize | None = None,
                  allow_incomplete_classes: bool = False) -> dict[str, Path]:
    """Write ``{name}_{train,val,test}.arrow`` into ``out``; returns {split: path}. ``resize``: store the images
    resized for the pixelbert transform (``emmcil.data.resize``). ValueError for a ``val_fraction`` outside [0, 1)
    and for classes left without a train or test sample (unless ``allow_incomplete_classes``)."""
    check_fractions({"--val-fraction": val_fraction})
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    splits, class_idx = samples_json(root) if layout == "json" else samples_csv(root, seed, val_fraction)
    print(f"layout {layout}: {len(class_idx)} classes, " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    if len(class_idx) != NUM_CLASSES:
        print(f"note: {len(class_idx)} classes found, UPMC Food-101 has {NUM_CLASSES}")
    return write_splits(splits, out, name, sorted(class_idx, key=class_idx.get), skip_bad, resize,
                        allow_incomplete_classes=allow_incomplete_classes, empty_classes="note")


def main(argv=None, prog="python -m emmcil.data.write_food101"):
    p = base_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--root", required=True, help="raw UPMC Food-101 folder")
    p.add_argument("--layout", choices=["auto", "json", "csv"], default="auto")
    p.add_argument("--name", default=NAME)
    p.add_argument("--seed", type=int, default=0, help="csv layout: seed of the val split carved from train")
    p.add_argument("--val-fraction", type=float, default=0.1, help="csv layout: share of each class put in val")
    args = p.parse_args(argv)
    cli_errors(lambda a: write_food101(a.root, a.out, name=a.name, layout=a.layout, seed=a.seed,
                                       val_fraction=a.val_fraction, skip_bad=a.skip_bad,
                                       resize=resize_option(a),
                                       allow_incomplete_classes=a.allow_incomplete_classes), args)


if __name__ == "__main__":
    main()
