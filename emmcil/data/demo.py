"""The embedded demo set: 10 synthetic classes, generated on first use, no download.

Each image is a scene (sky band over a ground band, with texture noise, clouds or stars) holding ONE coloured
shape whose form and colour give the class; the shape's bounding box covers 20-30 % of the image and sits at a
random place. The caption (15-25 words) names the shape and colour and where it is, then talks about the rest of
the scene ("on a green field under a cloudy sky, with a few scattered stones ..."), so exemplar masking has evidence
to keep (the shape's patches, its colour and shape words) and context to discard. Images are 96x96, 96x128 or
128x96 (H x W) so batches mix sizes; ``pixelbert_transform(size=96, size_divisor=16)`` leaves all three unchanged.

Files ``demo_train.arrow`` (30 per class) and ``demo_test.arrow`` (10 per class) carry the standard columns plus
``box`` = [x0, y0, x1, y1], the bounding square of the shape in pixels, for tests of the masks. Fixed seeds make
them byte-identical across generations (with one JPEG encoder); they are rebuilt when missing or written by another
``DEMO_VERSION``.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from .arrow import arrow_path, read_metadata, write_arrow

DEMO_VERSION = "1"  # bump whenever the generator changes, so cached files are rebuilt
NAME = "demo"
# class id -> (colour, shape); the class name is "<colour> <shape>"
DEMO_SPECS = [
    ("red", "triangle"), ("blue", "circle"), ("yellow", "square"), ("green", "star"), ("purple", "cross"),
    ("orange", "diamond"), ("cyan", "hexagon"), ("pink", "ring"), ("brown", "pentagon"), ("black", "arrow"),
]
DEMO_CLASSES = [f"{c} {s}" for c, s in DEMO_SPECS]
DEMO_NUM_CLASSES = len(DEMO_CLASSES)
DEMO_PER_CLASS = {"train": 30, "test": 10}
DEMO_IMAGE_SIZES = [(96, 96), (96, 128), (128, 96)]  # (H, W)
_SEEDS = {"train": 11, "test": 12}

_COLOURS = {"red": (215, 35, 35), "blue": (35, 65, 215), "yellow": (240, 205, 25), "green": (25, 150, 55),
            "purple": (125, 45, 165), "orange": (245, 125, 15), "cyan": (25, 195, 205), "pink": (245, 115, 175),
            "brown": (115, 65, 25), "black": (15, 15, 15)}
_SKIES = {"clear blue": ((110, 170, 235), (185, 215, 245)), "cloudy": ((150, 155, 165), (205, 205, 210)),
          "orange sunset": ((235, 120, 70), (250, 190, 120)), "dark starry": ((10, 15, 45), (35, 40, 80))}
_GROUNDS = {"green field": (70, 135, 60), "sandy beach": (215, 195, 140), "snowy plain": (232, 235, 240),
            "grey road": (105, 105, 110), "calm sea": (30, 80, 130)}
_DETAILS = ["a few scattered stones", "distant hills on the horizon", "light fog near the ground",
            "long evening shadows", "a faint haze in the air", "a thin line of trees", "some tiny specks of dust",
            "a lone bird far away", "soft light from above", "a quiet empty landscape"]


def default_root() -> Path:
    env = os.environ.get("EMMCIL_DATA")
    return Path(env) / "demo" if env else Path.home() / ".cache" / "emmcil" / "demo"


def demo_paths(root: str | Path | None = None) -> dict[str, Path]:
    root = Path(root) if root is not None else default_root()
    return {split: arrow_path(root, NAME, split) for split in DEMO_PER_CLASS}


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon of ``shape`` centred at (cx, cy), fitting a circle of radius r, rotated by ``angle`` (radians)."""
    def regular(n, radii=(1.0,), offset=-math.pi / 2):
        return [(radii[k % len(radii)] * math.cos(offset + 2 * math.pi * k / n),
                 radii[k % len(radii)] * math.sin(offset + 2 * math.pi * k / n)) for k in range(n)]

    w = 0.34  # half-width of the cross bars and of the arrow shaft
    pts = {
        "triangle": regular(3),
        "square": regular(4, offset=math.pi / 4),
        "diamond": [(0, -1), (0.65, 0), (0, 1), (-0.65, 0)],
        "star": regular(10, radii=(1.0, 0.42)),
        "hexagon": regular(6),
        "pentagon": regular(5),
        "cross": [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
                  (-w, -w)],
        "arrow": [(0, -1), (0.8, -0.15), (w, -0.15), (w, 1), (-w, 1), (-w, -0.15), (-0.8, -0.15)],
    }[shape]
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _position_words(cx: float, cy: float, w: int, h: int) -> str:
    v = "top" if cy < h / 3 else "bottom" if cy > 2 * h / 3 else "middle"
    u = "left" if cx < w / 3 else "right" if cx > 2 * w / 3 else "center"
    return "in the center" if (v, u) == ("middle", "center") else f"in the {v} {u}"


def make_sample(rng: np.random.Generator, label: int) -> tuple[Image.Image, str, list[int]]:
    """One demo sample of class ``label``: (RGB image, caption, shape box [x0, y0, x1, y1])."""
    colour, shape = DEMO_SPECS[label]
    h, w = DEMO_IMAGE_SIZES[rng.integers(len(DEMO_IMAGE_SIZES))]
    sky = list(_SKIES)[rng.integers(len(_SKIES))]
    ground = list(_GROUNDS)[rng.integers(len(_GROUNDS))]
    detail = _DETAILS[rng.integers(len(_DETAILS))]

    # background: vertical sky gradient over a flat ground, horizon at 35-65 % of the height, plus texture noise
    horizon = int(h * rng.uniform(0.35, 0.65))
    top, bottom = (np.array(c, dtype=np.float32) for c in _SKIES[sky])
    t = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:horizon] = top * (1 - t) + bottom * t
    img[horizon:] = np.array(_GROUNDS[ground], dtype=np.float32)
    coarse = rng.normal(0, 10, size=(h // 8 + 1, w // 8 + 1, 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
    img += coarse + rng.normal(0, 6, size=(h, w, 1))
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    if sky == "cloudy":
        for _ in range(3):
            x, y = rng.uniform(0, w), rng.uniform(0, horizon)
            draw.ellipse([x - 14, y - 5, x + 14, y + 5], fill=(225, 225, 230))
    elif sky == "dark starry":
        for _ in range(12):
            x, y = rng.uniform(0, w), rng.uniform(0, horizon)
            draw.point((x, y), fill=(250, 250, 220))

    # the class evidence: a shape whose bounding square covers 20-30 % of the image
    side = math.sqrt(rng.uniform(0.2, 0.3) * h * w)
    r = side / 2
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    fill = tuple(int(v) for v in np.clip(np.array(_COLOURS[colour]) + rng.normal(0, 8, 3), 0, 255))
    angle = rng.uniform(-0.35, 0.35)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(4, int(r * 0.4)))
    else:
        draw.polygon(_shape_points(shape, cx, cy, r, angle), fill=fill)
    box = [int(cx - r), int(cy - r), int(math.ceil(cx + r)), int(math.ceil(cy + r))]

    where = _position_words(cx, cy, w, h)
    a_colour = ("an " if colour[0] in "aeiou" else "a ") + colour
    template = rng.integers(3)
    if template == 0:
        caption = f"{a_colour} {shape} {where}, on a {ground} under a {sky} sky with {detail}."
    elif template == 1:
        caption = f"under a {sky} sky over a {ground}, {a_colour} {shape} sits {where}, near {detail}."
    else:
        caption = f"a {sky} sky above a {ground}; {where} there is {a_colour} {shape}, and {detail}."
    return canvas, caption, box


def generate_split(split: str) -> list[dict]:
    """The rows of one split, deterministic (seeded per split; classes interleaved)."""
    rng = np.random.default_rng(_SEEDS[split])
    rows = []
    for k in range(DEMO_PER_CLASS[split]):
        for label in range(DEMO_NUM_CLASSES):
            image, caption, box = make_sample(rng, label)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=92)
            rows.append({"image": buf.getvalue(), "text": [caption], "label": label,
                         "image_id": f"{DEMO_CLASSES[label].replace(' ', '_')}_{k}.jpg", "split": split, "box": box})
    return rows


def _is_current(path: Path) -> bool:
    try:
        return read_metadata(path).get("emmcil_demo_version") == DEMO_VERSION
    except (OSError, pa.ArrowInvalid):
        return False


def ensure_demo(root: str | Path | None = None) -> Path:
    """The demo directory (``root``, else ``$EMMCIL_DATA/demo``, else ``~/.cache/emmcil/demo``), with
    ``demo_train.arrow`` and ``demo_test.arrow`` written if missing or stale. Concurrent callers are safe: each
    writes a private temporary file and renames it into place atomically."""
    paths = demo_paths(root)
    for split, path in paths.items():
        if not _is_current(path):
            write_arrow(generate_split(split), path, metadata={"emmcil_demo_version": DEMO_VERSION},
                        extra_fields=[pa.field("box", pa.list_(pa.int32()))])
    return paths["train"].parent
