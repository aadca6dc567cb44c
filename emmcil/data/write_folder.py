"""Generic "one folder per class + captions file" -> ``{name}_{split}.arrow``.

    python -m emmcil.data.write_folder --root DIR --captions FILE --out DIR --name NAME
        [--classes FILE] [--test-fraction 0.2] [--val-fraction 0] [--seed 0] [--skip-bad] [--resize [384]]
        [--allow-incomplete-classes]

``DIR/<class>/<image>`` (images directly in the class folder). Labels are the sorted class folder names, or the
order of the names in ``--classes`` (one class name a line, UTF-8). If ``DIR`` holds only ``train/``, ``val/``,
``test/`` folders, each is a split with class folders inside; otherwise each class is split at random with
``--seed`` (``round(f * n)`` images per class for each held-out split; each fraction in [0, 1), their sum below 1;
``--test-fraction 0`` writes no test split). A class left without a train sample, or without a test sample when the
write makes a test split, is an error listing every such class (``--allow-incomplete-classes`` lists them and
writes anyway). Captions: JSONL (``{"path":
"<class>/<image>", "caption": "..."}``) or CSV (header ``path,caption``), UTF-8, keyed by the image path relative
to ``DIR`` (an absolute path under ``DIR`` is made relative). Every image on disk and every captioned path becomes
a sample, so an image without caption and a caption without image are both reported; so is an entry that cannot be
read (a directory named like an image, a symlink loop, no permission: a bad sample of its own reason), and a class
folder without any image is an error naming it. Images are stored as the files' bytes and decoded by
``images.decode_image`` (EXIF orientation applied, transparency on white, 16-bit scaled). ``{name}_classes.json``
lists the class names in label order. ``--resize`` stores the images already resized for the pixelbert transform
(``emmcil.data.resize``).
"""
from __future__ import annotations

from pathlib import Path

from . import writing
from .textfiles import read_lines
from .resize import StoredResize
from .writing import WRITTEN_SPLITS as SPLITS
from .writing import (RawSample, base_parser, check_fractions, cli_errors, is_image_file, read_captions,
                      resize_option, seeded_split, write_splits)


def _loops_back(folder: Path, root: Path) -> bool:
    """Whether ``folder`` (a class folder, maybe a link) is ``root`` itself or a folder above it: a loop."""
    try:
        target, base = folder.resolve(), root.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return True
    return target == base or target in base.parents


def scan_images(folder: Path) -> tuple[list[str], list[str], dict[str, tuple[str, str]]]:
    """(image paths, other files, problems), relative to ``folder``, of ``folder/<class>/<file>``. An image is an
    entry with an image extension, whatever it is on disk (a directory named ``x.jpg`` or a symlink loop is then
    reported as such when it is read). Files outside class folders (e.g. a README) count as other files, so they
    are reported rather than silently dropped. ``problems``: {entry: (reason, detail)} for class folders that
    cannot be listed (permission, a symlink loop, a link back to ``folder`` or above it)."""
    images, others, problems = [], [], {}
    for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not entry.is_dir():
            problem = writing.entry_problem(entry)
            if problem is not None and problem[0] in ("symlink_loop", "no_permission", "unreadable_file"):
                problems[f"{entry.name}/"] = problem
            else:
                others.append(entry.name)
            continue
        if _loops_back(entry, folder):
            problems[f"{entry.name}/"] = ("symlink_loop", f"a link to {entry.resolve()}, which holds the class "
                                                          f"folders itself")
            continue
        try:
            children = sorted(entry.iterdir())
        except OSError as e:
            reason = "no_permission" if isinstance(e, PermissionError) else "unreadable_file"
            problems[f"{entry.name}/"] = (reason, f"the folder cannot be listed: {e.strerror or e}")
            continue
        for f in children:
            if f.name.startswith("."):
                continue
            if is_image_file(f):
                images.append(f"{entry.name}/{f.name}")
            else:  # a folder is named with its "/" (images in a sub-folder are not read)
                others.append(f"{entry.name}/{f.name}" + ("/" if f.is_dir() else ""))
    return images, others, problems


def relative_captions(captions: dict[str, list[str]], root: Path) -> dict[str, list[str]]:
    """``captions`` with absolute paths under ``root`` made relative to it (``/data/photos/cat/1.jpg`` ->
    ``cat/1.jpg`` for root ``/data/photos``); other keys as they are (an absolute path elsewhere is reported as a
    caption without image, naming it)."""
    out: dict[str, list[str]] = {}
    base = root.resolve()
    for key, texts in captions.items():
        path = Path(key)
        if path.is_absolute():
            try:
                key = path.resolve().relative_to(base).as_posix()
            except ValueError:
                pass
        out.setdefault(key, []).extend(texts)
    return out


def is_presplit(root: Path) -> bool:
    """Whether ``root`` holds only ``train/``, ``val/``, ``test/`` folders (each a split of class folders)."""
    folders = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(folders) and set(folders) <= set(SPLITS)


def folder_samples(root: Path, captions: dict[str, list[str]], class_index: dict[str, int], *,
                   captions_file: str, fractions: dict[str, float], seed: int) -> dict[str, list[RawSample]]:
    """{split: samples} for the union of images under ``root`` and captioned paths (see module docstring)."""
    presplit = is_presplit(root)
    keys, ignored, problems = [], [], {}
    if presplit:
        for split in SPLITS:
            if (root / split).is_dir():
                imgs, others, bad = scan_images(root / split)
                keys += [f"{split}/{k}" for k in imgs]
                ignored += [f"{split}/{k}" for k in others]
                problems.update({f"{split}/{k}": v for k, v in bad.items()})
    else:
        keys, ignored, problems = scan_images(root)
    captions = relative_captions(captions, root)
    ignored = [k for k in ignored if k not in captions]  # a captioned file is a sample whatever its extension
    if ignored:
        print(f"{root}: left out {len(ignored)} entries that are neither images (by extension) nor captioned, e.g. "
              f"{', '.join(ignored[:3])}")
    on_disk = set(keys)
    keys += sorted(k for k in captions if k not in on_disk)  # captioned but absent: reported as missing_file

    def class_of(key):
        parts = key.split("/")
        return parts[1] if presplit and len(parts) > 2 else parts[0]

    if presplit:
        split_of = {k: k.split("/")[0] for k in keys}
    else:
        by_class = {}
        for k in keys:
            by_class.setdefault(class_of(k), []).append(k)
        split_of = seeded_split(by_class, fractions, seed)

    out = {s: [] for s in SPLITS}
    for k, problem in problems.items():  # reported (or counted by --skip-bad) as they are; not in the split draw
        split = k.split("/")[0] if presplit else "train"
        out[split].append(RawSample(image_id=k, image_path=root / k, texts=None, label=class_index.get(class_of(k)),
                                    split=split, source=f"{root} (captions: {captions_file})",
                                    class_name=class_of(k), problem=problem))
    for k in keys:
        split = split_of[k] if split_of[k] in SPLITS else "train"  # a stray caption key in a presplit tree
        cls = class_of(k) if k.count("/") >= (2 if presplit else 1) else ""
        out[split].append(RawSample(image_id=k, image_path=root / k, texts=captions.get(k),
                                    label=class_index.get(cls), split=split,
                                    source=f"{root} (captions: {captions_file})", class_name=cls))
    return {s: v for s, v in out.items() if v}


def class_folders(root: Path) -> list[str]:
    """The class folder names under ``root`` (or under its ``train/ val/ test/``), sorted; a link back to a folder
    above them is no class (it is reported by :func:`scan_images`)."""
    dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if dirs and {d.name for d in dirs} <= set(SPLITS):
        return sorted({c.name for d in dirs for c in d.iterdir()
                       if c.is_dir() and not c.name.startswith(".") and not _loops_back(c, d)})
    return sorted(d.name for d in dirs if not _loops_back(d, root))


def write_folder(root, captions, out, name: str, *, classes: str | None = None, test_fraction: float = 0.2,
                 val_fraction: float = 0.0, seed: int = 0, skip_bad: bool = False,
                 resize: StoredResize | None = None, allow_incomplete_classes: bool = False) -> dict[str, Path]:
    """Write ``{name}_{split}.arrow`` for a class-folder tree; returns {split: path}. ``resize``: store the images
    resized for the pixelbert transform. ValueError for split fractions outside [0, 1) or summing to 1 or more, and
    for classes left without a train or test sample (unless ``allow_incomplete_classes``)."""
    check_fractions({"--test-fraction": test_fraction, "--val-fraction": val_fraction})
    root = Path(root)
    names = read_lines(classes) if classes else class_folders(root)
    if len(set(names)) != len(names):
        raise ValueError(f"{classes}: class names listed twice: {sorted({n for n in names if names.count(n) > 1})}")
    class_index = {c: i for i, c in enumerate(names)}
    fractions = {k: f for k, f in (("val", val_fraction), ("test", test_fraction)) if f > 0}
    splits = folder_samples(root, read_captions(captions), class_index, captions_file=str(captions),
                            fractions=fractions, seed=seed)
    print(f"{len(names)} classes, " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    # a test split is required when this write makes one: asked for by a fraction, or a test/ folder of the tree
    has_test = "test" in splits if is_presplit(root) else test_fraction > 0
    return write_splits(splits, out, name, names, skip_bad, resize, required=("train", "test") if has_test
                        else ("train",), allow_incomplete_classes=allow_incomplete_classes)


def main(argv=None, prog="python -m emmcil.data.write_folder"):
    p = base_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--root", required=True, help="folder with one sub-folder per class (or train/val/test)")
    p.add_argument("--captions", required=True, help="JSONL or CSV of captions keyed by relative image path")
    p.add_argument("--name", required=True, help="dataset name: files are {name}_{split}.arrow")
    p.add_argument("--classes", help="text file, one class name a line, giving the labels (default: sorted)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cli_errors(lambda a: write_folder(a.root, a.captions, a.out, a.name, classes=a.classes,
                                      test_fraction=a.test_fraction, val_fraction=a.val_fraction, seed=a.seed,
                                      skip_bad=a.skip_bad, resize=resize_option(a),
                                      allow_incomplete_classes=a.allow_incomplete_classes), args)


if __name__ == "__main__":
    main()
