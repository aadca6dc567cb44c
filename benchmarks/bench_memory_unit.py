"""Exemplars per class in every memory unit at ViLT-B/32 sizes, beside the paper's memory plot (issue 22).

The paper's claim is a comparison at equal memory, so the unit an exemplar is charged in decides how many masked
exemplars ``emm`` keeps. This script builds the exemplars every memory method stores (the real classes of
``emmcil.memory.exemplar``) for simulated samples of MM-ImageNet-R's shape at ViLT-B/32 sizes, fills one
``MemoryBuffer`` per class with them, in dataset order (the same ranking for every method), at memory m = 1, 3, 5,
7, 10 (the plot's x-axis) in each ``memory_unit`` (``tokens``, the default; ``byte_share``; ``bytes``), and prints
the mean stored exemplars per class beside the plot's bars. Its last line is ``emm m=5 tokens: N (paper 14)``.

The simulated samples (nothing here needs a model or the datasets; each choice is an input, not a measurement):

- **images**: ``pixelbert_transform(384, 32)`` grids, the shorter side 12 patches and the longer one uniform in
  12-19 (square to the transform's 1333/800 cap; the paper's Fig. 4 shows 12 x 12, 12 x 15 and 16 x 12), portrait or
  landscape at random;
- **captions**: 55-120 word pieces (uniform) between [CLS] and [SEP]: InstructBLIP's "detailed description"
  captions of MM-ImageNet-R run to about 50-90 words (the paper's Fig. 4 prints one whole, between [CLS] and
  [SEP], of 90-odd word pieces), and BERT splits a word into about 1.1-1.3 pieces; ``max_text_len`` = 128, the
  project's MM-ImageNet-R value, truncates none;
- **emm**: the default masks' counts (``mask_norm=ratio``: the top ceil(0.26 n) of n patches, tau_I = 0.74, and the
  top half of the words, tau_T = 0.5, by random attention scores through the code's ``select``), [CLS] and [SEP]
  kept: the 22-30 % of patches and 40-60 % of words of the paper's Fig. 4;
- **cim**: a CAM box whose sides are each uniform in 40-75 % of the grid's (a third of the image on average; the
  CAM needs a trained model: ``bench_masking.py`` measures its boxes on the demo), the background at 1/4 of its
  area (``cim_compress_ratio``), filled with CIM-CIL's loop (``memory_fill=stop``, ``cim``'s default);
- **mrdc**: photo-like images (smooth colour fields, blobs, grain), their original files JPEGs of quality 90 at the
  model's size (so no resize enters the rate), stored at quality 50 (``jpeg_quality``): synthetic, so its rate says
  what the code computes, not what ImageNet-R's photos give;
- **replay**: full exemplars.

    python benchmarks/bench_memory_unit.py                      # 8 classes of 60 samples; ~2 min on a busy CPU
    python benchmarks/bench_memory_unit.py --classes 4 --per-class 40 --no-mrdc
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFilter

from emmcil.data.tokenizer import CLS_ID, SEP_ID
from emmcil.data.transforms import normalize_uint8
from emmcil.markdown import markdown_table
from emmcil.memory.buffer import MemoryBuffer
from emmcil.memory.exemplar import UNITS, CimExemplar, Exemplar, JpegExemplar, full_exemplar_nbytes
from emmcil.memory.masking import select
from emmcil.report.paper import PAPER_MEMORY

PATCH, SHORT_SIDE, LONG_SIDES = 32, 12, (12, 19)  # ViLT-B/32: pixelbert(384, 32) grids of 12 x 12-19 patches
WORDS = (55, 120)                                   # word pieces of an MM-ImageNet-R caption (uniform)
MAX_TEXT_LEN = 128                                  # the project's max_text_len for MM-ImageNet-R
TAU_IMAGE, TAU_TEXT = 0.74, 0.5                     # emm's defaults (mask_norm=ratio)
BOX_SIDE = (0.40, 0.75)                             # cim: each side of the CAM box, a share of the grid's
CIM_RATIO, JPEG_QUALITY, ORIGINAL_QUALITY = 4.0, 50, 90
MEMORY_SIZES = (1, 3, 5, 7, 10)
FILL = {"replay": "skip", "cim": "stop", "mrdc": "skip", "emm": "skip"}  # each method's default memory_fill
PAPER = PAPER_MEMORY[("mm_imagenet_r", 10)]        # the plot's bars: replay (SSF), cim, emm; no mrdc


def photo_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A uint8 (h, w, 3) image with smooth colour fields, blobs and grain (it compresses like a photo)."""
    low = rng.integers(0, 256, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.25) * min(w, h)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32) + rng.normal(0, 6, (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def sample(rng: np.random.Generator, label: int, index: int, with_pixels: bool) -> tuple[dict, Image.Image | None]:
    """One simulated MM-ImageNet-R sample at ViLT-B/32 size: its dataset item and (``with_pixels``) its picture."""
    long_side = int(rng.integers(LONG_SIDES[0], LONG_SIDES[1] + 1))
    rows, cols = (SHORT_SIDE, long_side) if rng.random() < 0.5 else (long_side, SHORT_SIDE)
    h, w = rows * PATCH, cols * PATCH
    words = int(rng.integers(WORDS[0], WORDS[1] + 1))
    ids = torch.zeros(MAX_TEXT_LEN, dtype=torch.long)
    ids[1:words + 1] = torch.from_numpy(rng.integers(1996, 29612, words))  # the vocabulary's word-piece range
    ids[0], ids[words + 1] = CLS_ID, SEP_ID
    pixels = photo_like(rng, h, w) if with_pixels else np.zeros((h, w, 3), dtype=np.uint8)
    item = {"image": normalize_uint8(torch.from_numpy(pixels).permute(2, 0, 1)), "text_ids": ids,
            "text_masks": (torch.arange(MAX_TEXT_LEN) < words + 2).long(), "label": label, "index": index,
            "image_id": f"sim_{index}"}
    return item, (Image.fromarray(pixels) if with_pixels else None)


def emm_masks(rng: np.random.Generator, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The default masks' counts: ``select`` (ratio) on random scores, patches by tau_I, words by tau_T."""
    rows, cols = (s // PATCH for s in item["image"].shape[-2:])
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    patch_keep, _ = select(torch.rand(1, rows * cols, generator=gen), torch.ones(1, rows * cols, dtype=torch.bool),
                           "ratio", TAU_IMAGE)
    ids, valid = item["text_ids"], item["text_masks"].bool()
    special = (ids == CLS_ID) | (ids == SEP_ID)
    words = valid & ~special
    word_keep, _ = select(torch.rand(1, len(ids), generator=gen), words[None], "ratio", TAU_TEXT)
    return patch_keep[0].reshape(rows, cols), word_keep[0] | (valid & special)


def cim_box(rng: np.random.Generator, rows: int, cols: int) -> torch.Tensor:
    """A CAM box of each side uniform in ``BOX_SIDE`` of the grid's, at a random place."""
    keep = torch.zeros(rows, cols, dtype=torch.bool)
    h = max(1, round(rng.uniform(*BOX_SIDE) * rows))
    w = max(1, round(rng.uniform(*BOX_SIDE) * cols))
    r, c = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
    keep[r:r + h, c:c + w] = True
    return keep


def simulate(classes: int = 8, per_class: int = 120, seed: int = 0, methods=("replay", "cim", "mrdc", "emm")
             ) -> dict[str, list[list]]:
    """{method: per class, its exemplars in dataset order} for ``classes`` x ``per_class`` simulated samples."""
    rng = np.random.default_rng(seed)
    out = {m: [[] for _ in range(classes)] for m in methods}
    for c in range(classes):
        for k in range(per_class):
            item, picture = sample(rng, c, c * per_class + k, with_pixels="mrdc" in methods)
            rows, cols = (s // PATCH for s in item["image"].shape[-2:])
            if "replay" in methods:
                out["replay"][c].append(Exemplar.from_item(item, PATCH))
            if "emm" in methods:
                patch_keep, token_keep = emm_masks(rng, item)
                out["emm"][c].append(Exemplar.from_item(item, PATCH, patch_keep=patch_keep, token_keep=token_keep))
            if "cim" in methods:
                out["cim"][c].append(CimExemplar.from_item(item, PATCH, cim_box(rng, rows, cols), CIM_RATIO))
            if "mrdc" in methods:
                buf = io.BytesIO()
                picture.save(buf, format="JPEG", quality=ORIGINAL_QUALITY)
                out["mrdc"][c].append(JpegExemplar.from_image(item, picture, len(buf.getvalue()), PATCH,
                                                              JPEG_QUALITY, smaller=buf.getvalue()))
    return out


def full_nbytes(e) -> int:
    """Bytes of exemplar ``e``'s sample as a full ``Exemplar`` (raw patches + tokens)."""
    if isinstance(e, JpegExemplar):
        rows, cols = (int(v) // PATCH for v in e.size)
        return full_exemplar_nbytes(rows, cols, e.num_tokens, PATCH)
    return e.full_nbytes  # Exemplar, CimExemplar: the sample stored in full


def mean_full_bytes(exemplars: dict[str, list[list]]) -> float:
    """The simulated set's mean full-exemplar bytes (the ``bytes`` unit's size of one full exemplar)."""
    return float(np.mean([full_nbytes(e) for cls in next(iter(exemplars.values())) for e in cls]))


def stored_per_class(per_class: list[list], m: float, unit: str, fill: str, full_bytes: float) -> float:
    """Mean over the classes of the exemplars one ``MemoryBuffer`` of budget m in ``unit`` keeps, in list order."""
    counts = []
    for c, exemplars in enumerate(per_class):
        memory = MemoryBuffer(memory_per_class=m, unit=unit, fill=fill, full_exemplar_bytes=full_bytes)
        counts.append(len(memory.fill(c, iter(exemplars), memory.class_budget(1))))
    return float(np.mean(counts))


def table(exemplars: dict[str, list[list]]) -> tuple[pd.DataFrame, dict]:
    """Exemplars per class for every method, unit and memory size, the paper's bars beside them; and the counts."""
    full = mean_full_bytes(exemplars)
    rows, counts = [], {}
    for method, per_class in exemplars.items():
        flat = [e for cls in per_class for e in cls]
        if method in PAPER:
            rows.append({"method": method, "unit": "paper (Fig. 5)",
                         **{f"m={m}": f"{PAPER[method][m][0]:g}" for m in MEMORY_SIZES}, "cost / exemplar":
                         f"{5 / PAPER[method][5][0]:.2f}"})
        for unit in UNITS:
            for m in MEMORY_SIZES:
                counts[method, unit, m] = stored_per_class(per_class, m, unit, FILL[method], full)
            cost = np.mean([e.cost(unit) for e in flat]) / (full if unit == "bytes" else 1.0)
            rows.append({"method": method, "unit": unit,
                         **{f"m={m}": f"{counts[method, unit, m]:.1f}" for m in MEMORY_SIZES},
                         "cost / exemplar": f"{cost:.3f}"})
    return pd.DataFrame(rows), counts


def shares(exemplars: dict[str, list[list]]) -> pd.DataFrame:
    """What the simulated exemplars keep: patches at full resolution, words, and their mean cost per unit."""
    rows = []
    for method, per_class in exemplars.items():
        flat = [e for cls in per_class for e in cls]
        words = [e.word_share for e in flat if e.word_share is not None]
        rows.append({"method": method, "patches at full res. %": 100 * np.mean([e.patch_share for e in flat]),
                     "words %": 100 * np.mean(words), "token_share": np.mean([e.token_share for e in flat]),
                     "byte_share": np.mean([e.byte_share for e in flat])})
    full = [e for cls in next(iter(exemplars.values())) for e in cls]
    text = np.mean([e.num_tokens / (e.num_tokens + e.num_patches) for e in full if isinstance(e, Exemplar)]
                   or [float("nan")])
    return pd.DataFrame(rows), text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=8, help="simulated classes (default 8)")
    ap.add_argument("--per-class", type=int, default=60,
                    help="samples a class (default 60: no method stores that many at m = 10; MM-ImageNet-R has 120)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mrdc", action="store_true", help="leave mrdc out (it needs photo-like pixels: slower)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    methods = ("replay", "cim", "emm") if args.no_mrdc else ("replay", "cim", "mrdc", "emm")
    exemplars = simulate(args.classes, args.per_class, args.seed, methods)
    df, counts = table(exemplars)
    print(f"## Exemplars per class at memory m (full exemplars a class), every memory_unit, ViLT-B/32 sizes\n\n"
          f"{args.classes} simulated classes x {args.per_class} samples (seed {args.seed}): pixelbert(384, 32) grids "
          f"of {SHORT_SIDE} x {LONG_SIDES[0]}-{LONG_SIDES[1]} patches, captions of {WORDS[0]}-{WORDS[1]} word pieces "
          f"+ [CLS], [SEP]; each class's MemoryBuffer filled in dataset order with the method's memory_fill "
          f"({', '.join(f'{k} {v}' for k, v in FILL.items())}). Cells: mean exemplars stored per class; cost / "
          f"exemplar: mean cost in the unit (bytes: over the mean full-exemplar bytes). Paper rows: the bars of its "
          f"memory plot (MM-ImageNet-R, L = 10; cost = 5 / bar at m = 5). torch {torch.__version__}.\n")
    print(markdown_table(df) + "\n")
    kept, text = shares(exemplars)
    print("## What the simulated exemplars keep\n")
    print(markdown_table(kept.round(3)) + f"\n\nA full sample's text is {100 * text:.0f} % of its tokens and "
          f"{100 * np.mean([1 - e.image_nbytes / e.nbytes for cls in exemplars['replay'] for e in cls]):.2f} % of its "
          f"bytes.\n" if "replay" in exemplars else "")
    deviation = {method: max(abs(counts[method, "tokens", m] - PAPER[method][m][0]) for m in MEMORY_SIZES)
                 for method in PAPER if method in exemplars}
    print("largest distance to the paper's bars in the default unit (tokens): "
          + ", ".join(f"{k} {v:.1f}" for k, v in deviation.items()) + f"  [{time.time() - start:.0f} s]")
    print(f"emm m=5 tokens: {counts['emm', 'tokens', 5]:.1f} (paper {PAPER['emm'][5][0]:g})")


if __name__ == "__main__":
    main()
