"""Fixture builders for the data tests: real JPEG files in the raw layouts the writers read."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image


def make_jpeg(path: Path, size=(40, 30), seed: int = 0) -> Path:
    """A real JPEG of ``size`` (W, H) with seeded random content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=85)
    return path


def corrupt(path: Path) -> Path:
    """Truncate a JPEG to a third: the header parses, decoding fails."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


FOOD_CLASSES = {"frozen_yogurt": 0, "apple_pie": 1, "beef_tartare": 2}  # not alphabetical, as the real file


def food101_json(root: Path, n_train=4, n_val=2, n_test=2) -> dict:
    """missing_aware_prompts layout: class_idx.json, text.json, split.json, images/{train,test}/<cls>/<cls>_<k>.jpg."""
    splits = {"train": [], "val": [], "test": []}
    texts = {}
    seed = 0
    for cls in FOOD_CLASSES:
        for split, n, start in (("train", n_train, 0), ("val", n_val, n_train), ("test", n_test, n_train + n_val)):
            for k in range(start, start + n):
                fname = f"{cls}_{k}.jpg"
                folder = "test" if split == "test" else "train"
                make_jpeg(root / "images" / folder / cls / fname, size=(36 + k, 30), seed=seed)
                seed += 1
                splits[split].append(fname)
                texts[fname] = f"Best {cls.replace('_', ' ')} recipe number {k}"
    (root / "class_idx.json").write_text(json.dumps(FOOD_CLASSES))
    (root / "text.json").write_text(json.dumps(texts))
    (root / "split.json").write_text(json.dumps(splits))
    return {"splits": splits, "texts": texts}


def food101_csv(root: Path, n_train=10, n_test=3, broken: str = "apple_pie_3.jpg") -> dict:
    """Original layout: texts/{train,test}_titles.csv (no header) with one unclosed quote in train, like the
    real ``breakfast_burrito_730.jpg`` row."""
    rows = {"train": [], "test": []}
    seed = 100
    for split, n, start in (("train", n_train, 0), ("test", n_test, n_train)):
        lines = []
        for cls in sorted(FOOD_CLASSES):
            for k in range(start, start + n):
                fname = f"{cls}_{k}.jpg"
                make_jpeg(root / "images" / split / cls / fname, seed=seed)
                seed += 1
                if fname == broken:
                    title = f"{cls.title()} the best one ever"
                    lines.append(f'{fname},"{title},{cls}')  # the quote never closes
                else:
                    title = f'{cls.replace("_", " ").title()} Recipe, from the "{k}" kitchen'
                    lines.append(f'{fname},"{title.replace(chr(34), 2 * chr(34))}",{cls}')
                rows[split].append((fname, title, cls))
        (root / "texts").mkdir(parents=True, exist_ok=True)
        (root / "texts" / f"{split}_titles.csv").write_text("\n".join(lines) + "\n")
    return rows


def image_folder(root: Path, classes: list[str], per_class: int, prefix: str = "img") -> list[str]:
    """``root/<class>/<prefix>_<k>.jpg``; returns the relative paths."""
    rels = []
    for c, cls in enumerate(classes):
        for k in range(per_class):
            rel = f"{cls}/{prefix}_{k}.jpg"
            make_jpeg(root / rel, size=(32 + 8 * (k % 3), 32), seed=1000 + 50 * c + k)
            rels.append(rel)
    return rels


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def mixed_image_folder(root: Path, classes: list[str], per_class: int) -> list[dict]:
    """A user's folder as it comes: ``root/<class>/`` holding JPEGs and PNGs of mixed sizes and modes (RGB,
    greyscale, RGBA with transparency, palette, CMYK), with a caption each; returns the JSONL caption records."""
    kinds = [("RGB", "jpg", (97, 61)), ("L", "jpg", (40, 133)), ("RGBA", "png", (150, 150)), ("P", "png", (71, 45)),
             ("CMYK", "jpg", (64, 200)), ("RGB", "png", (256, 80))]
    records = []
    for c, cls in enumerate(classes):
        for k in range(per_class):
            mode, ext, size = kinds[(c + k) % len(kinds)]
            rng = np.random.default_rng(10 * c + k)
            base = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            base[..., c % 3] = 200  # each class has its colour, so even a tiny model learns something
            base += rng.integers(0, 50, size=base.shape, dtype=np.uint8)
            image = Image.fromarray(base).convert(mode)
            rel = f"{cls}/photo {k}.{ext}"  # a space in the name, as users' files have
            (root / cls).mkdir(parents=True, exist_ok=True)
            image.save(root / rel)
            records.append({"path": rel, "caption": f"a {mode} photo of a {cls.replace('_', ' ')}, number {k}"})
    return records


def photo(size=(500, 375), seed: int = 0) -> Image.Image:
    """A photo-like RGB picture of ``size`` (W, H): smooth colour fields, a few sharp-edged blobs, fine grain."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.fromarray(rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.25) * min(w, h)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) + rng.normal(0, 4, (h, w, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    """``image`` saved as a file of ``fmt`` (Pillow's options ``kw``), as bytes."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def sideways(picture: Image.Image, quality: int = 90) -> bytes:
    """``picture`` stored turned by 90 degrees with EXIF Orientation=6 (a phone photo): viewers (and decode_image)
    show ``picture``."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return encode(picture.transpose(Image.Transpose.ROTATE_90), quality=quality, exif=exif.tobytes())
