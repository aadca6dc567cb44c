"""What exemplar masking costs and what it buys: masking pass vs evaluation pass, exemplars per class at equal budget.

Prints, side by side from one run (markdown tables):

1. **cost**: seconds and samples/s of an evaluation pass (``backbone(text_ids, text_masks, images, pixel_masks)``,
   fused attention), of the same pass returning the last layer's attention map, and of the masking pass
   (:func:`~emmcil.memory.masking.masking_step` with ``MaskingConfig()``: last-layer attention + masks + a
   second forward over the masked sample's kept tokens, packed) over the same pre-collated batches, eval mode,
   ``torch.inference_mode()``, SSF merged into the weights as the driver runs every pass without gradients.
   Batches are timed interleaved (eval, eval+map, masking on batch 1, then batch 2, ...), ``--repeats`` times; each
   batch counts with its median. Peak memory only on CUDA (``torch.cuda.max_memory_allocated``). Issue 16's
   target: masking <= 1.35x an evaluation pass at ViLT-B/32.
2. **storage**: exemplars per class at memory m = 1, 3, 5, 7, 10 (the paper's memory plot) in the default unit
   (``memory_unit="tokens"``: each exemplar costs its stored tokens over the same sample's, a compressed image its
   reference's rate) for ``replay`` (full ``Exemplar``), ``mrdc`` (``JpegExemplar`` of the image, stored at the
   model's size here, quality 50), ``cim`` (``CimExemplar``: bounding box of the CAM thresholded at 0.6, the rest at
   1/4 of its area) and ``emm`` (masked ``Exemplar``) with the default masks (``ratio``, tau_I = 0.74, tau_T = 0.5)
   and with min-max thresholds (0.5 / 0.5, named config ``emm_minmax``), beside the paper's digitised bars; and at
   m = 5 in ``memory_unit="byte_share"`` and ``"bytes"``. Each class's ``MemoryBuffer`` is filled in dataset order
   (the same fixed ranking for every method) with the method's ``memory_fill`` (``cim``: stop). A class has
   only so many samples (30 in the demo), so each cell gives the stored count and, in brackets, the count when the
   class's exemplars are offered again and again (as if the class had as many samples of the same kind).
3. **masks**: kept fractions of patches and tokens (emm, both normalisations), their spread, and on the demo set
   whether the kept patches lie on the class's shape and the kept words are its colour/shape words.
4. **reduced precision**: whether a masking pass under bf16 autocast keeps the float32 masks (samples with the same
   patch and word masks). Masks stay float32 (``masking_step``) unless they do.

Settings: (a) the embedded demo set (300 train images, ``pixelbert_transform(96, 16)``) with the tiny model
(``TINY``, ``max_text_len=40``), both random and after a short full fine-tuning on the demo train set (AdamW, linear
head on ``out.pooled``), so that its attention means something; (b) ViLT-B/32 (``VILT_B32``) with *random* weights
(the released checkpoint is not available offline) on synthetic photo-like 384x384 and 384x576 images with 40
valid tokens, ``--b32-batches`` batches of ``--b32-batch`` per size.

    python benchmarks/bench_masking.py                   # ~1 min on a busy 2-core CPU (1 thread)
    python benchmarks/bench_masking.py --skip-b32 --epochs 5
    python benchmarks/bench_masking.py --device cuda --batch 64 --b32-batch 32 --b32-batches 4
"""
from __future__ import annotations

import argparse
import copy
import io
import itertools
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import nn

from emmcil.data import (CLS_ID, SEP_ID, ArrowDataset, collate, ensure_demo, get_tokenizer, normalize_uint8,
                         pixelbert_transform)
from emmcil.data.demo import DEMO_NUM_CLASSES, DEMO_SPECS
from emmcil.markdown import markdown_table
from emmcil.memory.buffer import MemoryBuffer, mean_full_exemplar_nbytes
from emmcil.memory.exemplar import CimExemplar, Exemplar, JpegExemplar
from emmcil.memory.masking import MaskingConfig, _masking_step, mask_canvas, masking_step
from emmcil.methods.cim import cam_step
from emmcil.model import TINY, VILT_B32, build_backbone, merge_ssf
from emmcil.report.paper import PAPER_MEMORY, PAPER_NAMES

from machine_load import OtherLoad  # benchmarks/machine_load.py (scripts run from this folder)

MASKING_TARGET = 1.35  # masking pass / evaluation pass at ViLT-B/32 (issue 16)
MAX_TEXT_LEN = 40      # ViLT's
MEMORY_SIZES = (1, 3, 5, 7, 10)  # the paper's memory plot (samples per class); 5 is the default
JPEG_QUALITY = 50      # mrdc's default
CIM_THRESHOLD, CIM_RATIO = 0.6, 4.0  # cim's defaults (CIM-CIL's mask_threshold and compress_ratio)
MASKS = {"emm": MaskingConfig(), "emm minmax": MaskingConfig(norm="minmax", tau_image=0.5, tau_text=0.5)}
PAPER_MEMORY_L10 = PAPER_MEMORY[("mm_imagenet_r", 10)]
B32_SIZES = [(384, 384), (384, 576)]  # (H, W): 12x12 and 12x18 patches


# ---------------------------------------------------------------------------------------------------- helpers
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def batches_of(items: list[dict], batch: int, device: str) -> list[dict]:
    return [to_device(collate(items[i:i + batch]), device) for i in range(0, len(items), batch)]


def mb(nbytes: float | None) -> str:
    return "n/a (CPU)" if nbytes is None else f"{nbytes / 2**20:.0f}"


# ---------------------------------------------------------------------------------------------------- 1. cost
def time_passes(backbone, batches: list[dict], canvas: tuple[int, int], repeats: int, device: str):
    """Interleaved per-batch timing of eval / eval+map / masking, on a copy of ``backbone`` with SSF merged (as
    ``IncrementalModule.ssf_merged`` runs them). Returns (seconds per pass, peak bytes per pass or None, the masking
    outputs of the last repeat, concatenated on the CPU). ``seconds["kept"]``: the share of the evaluation pass's
    token slots that the masked forward runs (kept words and patches + the image [CLS]), what its cost follows."""
    backbone = merge_ssf(copy.deepcopy(backbone))
    cfg = MaskingConfig()
    layers = list(cfg.layers)
    passes = {
        "eval": lambda b: backbone(b["text_ids"], b["text_masks"], b["images"], b["pixel_masks"]),
        "eval+map": lambda b: backbone(b["text_ids"], b["text_masks"], b["images"], b["pixel_masks"],
                                       return_attention=layers),
        "masking": lambda b: masking_step(backbone, b, cfg, canvas),
    }
    backbone.eval()
    times = {name: [[] for _ in batches] for name in passes}
    outs: list[dict] = []
    slots = 0
    with torch.inference_mode():
        for fn in passes.values():  # warm-up (allocator, kernels, position-embedding interpolation)
            fn(batches[0])
        for r in range(repeats):
            for i, b in enumerate(batches):
                for name, fn in passes.items():
                    sync(device)
                    t = time.perf_counter()
                    out = fn(b)
                    sync(device)
                    times[name][i].append(time.perf_counter() - t)
                    if name == "masking" and r == repeats - 1:
                        outs.append({k: v.cpu() for k, v in out.items()})
                    if name == "eval" and r == repeats - 1:
                        slots += out.masks.numel()
        peaks = {name: None for name in passes}
        if device == "cuda":
            for name, fn in passes.items():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                for b in batches:
                    fn(b)
                peaks[name] = torch.cuda.max_memory_allocated() - base
    seconds = {name: float(sum(np.median(t) for t in per_batch)) for name, per_batch in times.items()}
    masks = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    kept = masks["text_keep"].sum() + masks["patch_keep"].sum() + len(masks["text_keep"])
    seconds["kept"] = float(kept) / slots
    return seconds, peaks, masks


def precision_row(setting: str, backbone, batches: list[dict], canvas: tuple[int, int]) -> dict:
    """Masks of a bf16 autocast masking pass against the default float32 ones, on the same batches: how many samples
    keep the same patch and word masks. (``masking_step`` forces float32; the bf16 pass calls its body.)"""
    backbone = merge_ssf(copy.deepcopy(backbone)).eval()
    cfg, same_patches, same_words, flipped, kept, n = MaskingConfig(), 0, 0, 0, 0, 0
    with torch.inference_mode():
        for b in batches:
            full = masking_step(backbone, b, cfg, canvas)
            with torch.autocast(b["images"].device.type, dtype=torch.bfloat16):
                low = _masking_step(backbone, b, cfg, canvas, (CLS_ID, SEP_ID))
            same_patches += int((full["patch_keep"] == low["patch_keep"]).flatten(1).all(1).sum())
            same_words += int((full["text_keep"] == low["text_keep"]).all(1).sum())
            flipped += int((full["patch_keep"] != low["patch_keep"]).sum())
            kept += int(full["patch_keep"].sum())
            n += len(b["text_ids"])
    return {"setting": setting, "samples": n, "same patch mask %": 100 * same_patches / n,
            "same word mask %": 100 * same_words / n, "patches flipped % (of kept)": 100 * flipped / kept}


def cost_row(setting: str, model: str, weights: str, data: str, batch: int, n: int, seconds: dict,
             peaks: dict) -> dict:
    return {"setting": setting, "model": model, "weights": weights, "data": data, "batch": batch, "samples": n,
            "eval s": seconds["eval"], "eval samples/s": n / seconds["eval"],
            "eval+last-layer map s": seconds["eval+map"], "masking s": seconds["masking"],
            "masking samples/s": n / seconds["masking"], "tokens kept %": 100 * seconds["kept"],
            "masking / eval": seconds["masking"] / seconds["eval"],
            "peak MB eval": mb(peaks["eval"]), "peak MB masking": mb(peaks["masking"])}


# ---------------------------------------------------------------------------------------------------- 2. storage
def run_passes(step, batches: list[dict]) -> dict:
    """A predict step over pre-collated batches, concatenated on the CPU."""
    with torch.inference_mode():
        outs = [{k: v.cpu() for k, v in step(b).items()} for b in batches]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def exemplar_kinds(items: list[dict], stored: list[tuple[Image.Image, int]], masks: dict[str, dict], cams: dict,
                   p: int) -> dict[str, list]:
    """Every method's exemplar of every item: replay (full), mrdc (JPEG of the stored image), cim (box + low-res
    background), and one masked exemplar per masking variant of ``masks``."""
    grids = [(it["image"].shape[-2] // p, it["image"].shape[-1] // p) for it in items]
    kinds = {"replay": [Exemplar.from_item(it, p) for it in items],
             "mrdc": [JpegExemplar.from_image(it, img, n, p, JPEG_QUALITY) for it, (img, n) in zip(items, stored)],
             "cim": [CimExemplar.from_item(it, p, cams["patch_keep"][i, :r, :c], CIM_RATIO)
                     for i, (it, (r, c)) in enumerate(zip(items, grids))]}
    for name, m in masks.items():
        kinds[name] = [Exemplar.from_item(it, p, patch_keep=m["patch_keep"][i, :r, :c], token_keep=m["text_keep"][i])
                       for i, (it, (r, c)) in enumerate(zip(items, grids))]
    return kinds


def stored_per_class(exemplars: list, labels: np.ndarray, m: float, unit: str = "tokens",
                     full_bytes: float | None = None, again: bool = False, fill: str = "skip") -> float:
    """Mean exemplars per class when each class's MemoryBuffer (budget m) is filled in dataset order; ``again``:
    the class's exemplars offered over and over (2000 offers), i.e. without the cap of its sample count."""
    memory = MemoryBuffer(memory_per_class=m, unit=unit, full_exemplar_bytes=full_bytes, fill=fill)
    classes = sorted(set(labels.tolist()))
    for c in classes:
        pool = [exemplars[i] for i in np.flatnonzero(labels == c)]
        memory.fill(c, itertools.islice(itertools.cycle(pool), 2000) if again else pool, memory.class_budget(1))
    return len(memory) / len(classes)


def storage_rows(setting: str, weights: str, items: list[dict], kinds: dict[str, list], full_bytes: float
                 ) -> list[dict]:
    """Per method: mean cost, kept shares, exemplars per class at every m (capped, then uncapped in brackets) and
    at m = 5 in bytes."""
    labels = np.array([int(it["label"]) for it in items])
    out = []
    for method, exemplars in kinds.items():
        words = [w for w in (e.word_share for e in exemplars) if w is not None]
        fill = "stop" if method == "cim" else "skip"  # each method's default memory_fill
        row = {"setting": setting, "weights": weights, "method": method,
               "cost / exemplar": float(np.mean([e.token_share for e in exemplars])),
               "byte share / exemplar": float(np.mean([e.byte_share for e in exemplars])),
               "bytes vs mean full": float(np.mean([e.nbytes for e in exemplars])) / full_bytes,
               "patches kept %": 100 * float(np.mean([e.patch_share for e in exemplars])),
               "words kept %": 100 * float(np.mean(words)) if words else float("nan")}
        for m in MEMORY_SIZES:
            row[f"m={m}"] = (f"{stored_per_class(exemplars, labels, m, fill=fill):.1f} "
                             f"({stored_per_class(exemplars, labels, m, again=True, fill=fill):.1f})")
        row["m=5, byte_share"] = f"{stored_per_class(exemplars, labels, 5, 'byte_share', fill=fill):.1f}"
        row["m=5, bytes"] = f"{stored_per_class(exemplars, labels, 5, 'bytes', full_bytes, fill=fill):.1f}"
        out.append(row)
    return out


def paper_rows() -> list[dict]:
    """The paper's memory plot (MM-ImageNet-R, L = 10): exemplars per class of SSF, SSF + CIM, SSF + Ours."""
    rows = []
    for method, points in PAPER_MEMORY_L10.items():
        row = {"setting": "paper (MM-ImageNet-R, L=10)", "weights": "ViLT-B/32 pretrained", "method":
               f"{method} ({PAPER_NAMES[method]})", "cost / exemplar": 5 / points[5][0]}
        row.update({f"m={m}": f"{points[m][0]:g}" for m in MEMORY_SIZES})
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------- 3. masks
def mask_row(setting: str, weights: str, variant: str, items: list[dict], masks: dict, patch_size: int,
             boxes: list | None = None, class_word_ids: dict | None = None) -> dict:
    p = patch_size
    patch_frac, tok_frac, word_frac, on_box, box_share, cls_kept, other_kept = [], [], [], [], [], [], []
    n_all = n_one = 0
    for i, item in enumerate(items):
        rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
        keep = masks["patch_keep"][i, :rows, :cols]
        k = int(keep.sum())
        patch_frac.append(k / (rows * cols))
        n_all += k == rows * cols
        n_one += k <= 1
        valid = item["text_masks"].bool()
        ids = item["text_ids"]
        tkeep = masks["text_keep"][i] & valid
        tok_frac.append(float(tkeep.sum() / valid.sum()))
        words = valid & (ids != CLS_ID) & (ids != SEP_ID)
        word_frac.append(float((tkeep & words).sum() / words.sum().clamp_min(1)))
        if boxes is not None:
            x0, y0, x1, y1 = boxes[i]
            r = torch.arange(rows)[:, None]
            c = torch.arange(cols)[None, :]
            inside = (c * p < x1) & ((c + 1) * p > x0) & (r * p < y1) & ((r + 1) * p > y0)
            box_share.append(float(inside.float().mean()))
            if k:
                on_box.append(float((inside & keep).sum() / k))
        if class_word_ids is not None:
            is_cls = words & torch.isin(ids, class_word_ids[int(item["label"])])
            other = words & ~is_cls
            if is_cls.any():
                cls_kept.append(float((tkeep & is_cls).sum() / is_cls.sum()))
            if other.any():
                other_kept.append(float((tkeep & other).sum() / other.sum()))
    q = np.percentile(patch_frac, [10, 50, 90]) * 100
    row = {"setting": setting, "weights": weights, "masks": variant, "patches kept %": 100 * np.mean(patch_frac),
           "p10/p50/p90 %": f"{q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}",
           "all patches kept (% samples)": 100 * n_all / len(items),
           "<=1 patch kept (% samples)": 100 * n_one / len(items),
           "tokens kept % (of valid)": 100 * np.mean(tok_frac), "words kept % (no CLS/SEP)": 100 * np.mean(word_frac)}
    if boxes is not None:
        row["kept patches on shape %"] = 100 * np.mean(on_box)
        row["patches on shape % (chance)"] = 100 * np.mean(box_share)
    if class_word_ids is not None:
        row["class words kept %"] = 100 * np.mean(cls_kept)
        row["other words kept %"] = 100 * np.mean(other_kept)
    return row


# ---------------------------------------------------------------------------------------------------- training
class Classifier(nn.Module):
    def __init__(self, backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.cfg.hidden_size, num_classes)

    def forward(self, b: dict) -> torch.Tensor:
        return self.head(self.backbone(b["text_ids"], b["text_masks"], b["images"], b["pixel_masks"]).pooled)


def accuracy(model: Classifier, batches: list[dict], drop: str | None = None) -> float:
    """Accuracy; ``drop="text"`` keeps only [CLS]/[SEP] of the text, ``drop="image"`` keeps no image patch
    (only the image [CLS]): which modality the model relies on."""
    model.eval()
    hit = n = 0
    with torch.inference_mode():
        for b in batches:
            b = dict(b)
            if drop == "text":
                b["text_masks"] = b["text_masks"] * ((b["text_ids"] == CLS_ID) | (b["text_ids"] == SEP_ID))
            elif drop == "image":
                p = model.backbone.cfg.patch_size
                H, W = b["images"].shape[-2:]
                b["patch_keep"] = torch.zeros(len(b["labels"]), H // p, W // p, dtype=torch.bool,
                                              device=b["images"].device)
            logits = model.head(model.backbone(b["text_ids"], b["text_masks"], b["images"], b["pixel_masks"],
                                               patch_keep=b.get("patch_keep")).pooled)
            hit += int((logits.argmax(1) == b["labels"]).sum())
            n += len(b["labels"])
    return hit / n


def train_tiny(backbone, items: list[dict], epochs: int, batch: int, lr: float, device: str, seed: int = 0):
    """Full fine-tuning of backbone + linear head, AdamW, plain loop, no augmentation. Returns the classifier."""
    model = Classifier(backbone, DEMO_NUM_CLASSES).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(items), generator=g).tolist()
        for i in range(0, len(order), batch):
            b = to_device(collate([items[j] for j in order[i:i + batch]]), device)
            loss = nn.functional.cross_entropy(model(b), b["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


# ---------------------------------------------------------------------------------------------------- synthetic
def photo_like(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """A uint8 (3, h, w) image with smooth colour fields, blobs, edges and grain (compresses like a photo)."""
    low = rng.integers(0, 256, size=(rng.integers(3, 7), rng.integers(3, 7), 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(4, 10)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.25) * min(w, h)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img = img.filter(ImageFilter.GaussianBlur(1.0))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, size=(h, w, 3))
    return torch.from_numpy(np.clip(arr, 0, 255).astype(np.uint8)).permute(2, 0, 1)


def synthetic_items(n: int, size: tuple[int, int], label: int, seed: int
                    ) -> tuple[list[dict], list[tuple[Image.Image, int]]]:
    """n items of photo-like images of ``size`` and 40 random word pieces, and each image as a dataset would store
    it: (the image, its bytes as a quality-90 JPEG, as photo datasets such as ImageNet ship them)."""
    rng = np.random.default_rng(seed)
    items, stored = [], []
    for k in range(n):
        ids = torch.from_numpy(rng.integers(1996, 29612, MAX_TEXT_LEN)).long()  # word-piece range of the vocabulary
        ids[0], ids[-1] = CLS_ID, SEP_ID
        pixels = photo_like(rng, *size)
        items.append({"image": normalize_uint8(pixels), "text_ids": ids,
                      "text_masks": torch.ones(MAX_TEXT_LEN, dtype=torch.long), "label": label, "index": k,
                      "image_id": f"synthetic_{size[0]}x{size[1]}_{k}", "raw_text": "", "missing_type": 0})
        image, buf = Image.fromarray(pixels.permute(1, 2, 0).numpy()), io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        stored.append((image, len(buf.getvalue())))
    return items, stored


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="batch of the demo set (training and passes)")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs of the tiny model on the demo set")
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the tiny model")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of each demo pass (median per batch)")
    ap.add_argument("--b32-batch", type=int, default=4, help="batch of ViLT-B/32")
    ap.add_argument("--b32-batches", type=int, default=2, help="batches of ViLT-B/32 per image size")
    ap.add_argument("--b32-repeats", type=int, default=1, help="timed repeats of each ViLT-B/32 pass")
    ap.add_argument("--skip-b32", action="store_true", help="only the demo set and the tiny model")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    device_name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU ({os.cpu_count()} cores)"
    env = (f"{device_name}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
           f"Python {platform.python_version()}, fp32")
    tokenizer = get_tokenizer()
    load = OtherLoad()
    t_start = time.perf_counter()
    cost, storage, mask_stats, precision = [], [], [], []

    # ------------------------------------------------------------------ (a) demo set, tiny model
    size, p = TINY["image_size"], TINY["patch_size"]
    with tempfile.TemporaryDirectory(prefix="bench_masking_") as tmp:
        root = ensure_demo(Path(tmp) / "demo")
        transform = pixelbert_transform(size, p)
        train = ArrowDataset(root / "demo_train.arrow", tokenizer, transform, MAX_TEXT_LEN)
        test = ArrowDataset(root / "demo_test.arrow", tokenizer, transform, MAX_TEXT_LEN)
        items = [train[i] for i in range(len(train))]
        test_items = [test[i] for i in range(len(test))]
        boxes = train.column("box")
        full = mean_full_exemplar_nbytes(train, tokenizer, size, p, MAX_TEXT_LEN)
        stored = [(train.load_image(i), len(train.image_bytes(i))) for i in range(len(train))]  # JPEG q92
    class_word_ids = {c: torch.tensor(tokenizer(f"{colour} {shape}", add_special_tokens=False)["input_ids"])
                      for c, (colour, shape) in enumerate(DEMO_SPECS)}
    print(f"demo set: {len(items)} train / {len(test_items)} test samples, mean full exemplar "
          f"{full['mean_bytes']:.0f} B ({full['mean_patches']:.1f} patches, {full['mean_tokens']:.1f} tokens)",
          flush=True)

    torch.manual_seed(args.seed)
    random_tiny = build_backbone({**TINY, "max_text_len": MAX_TEXT_LEN}).to(dev).eval()
    t0 = time.perf_counter()
    model = train_tiny(copy.deepcopy(random_tiny), items, args.epochs, args.batch, args.lr, dev, args.seed)
    train_s = time.perf_counter() - t0
    demo_batches = batches_of(items, args.batch, dev)
    train_acc = accuracy(model, demo_batches)
    test_batches = batches_of(test_items, args.batch, dev)
    test_acc = accuracy(model, test_batches)
    no_text, no_image = accuracy(model, test_batches, "text"), accuracy(model, test_batches, "image")
    n_params = sum(q.numel() for q in model.backbone.parameters())
    training = [{"model": f"tiny ({n_params / 1e6:.2f}M, full tuning) + linear head", "epochs": args.epochs,
                 "batch": args.batch, "optimiser": f"AdamW lr {args.lr:g}", "train s": train_s,
                 "train acc %": 100 * train_acc, "test acc %": 100 * test_acc,
                 "test acc %, image only": 100 * no_text,
                 "test acc %, text only": 100 * no_image}]
    print(f"  trained the tiny model: {args.epochs} epochs in {train_s:.0f} s, train acc {train_acc:.1%}, "
          f"test acc {test_acc:.1%}", flush=True)

    canvas = mask_canvas(size, p)
    demo_data = f"demo train, 96-128 px, pixelbert({size}, {p})"
    torch.manual_seed(args.seed)
    random_head = nn.Linear(TINY["hidden_size"], DEMO_NUM_CLASSES).to(dev)  # the random model's CAM classifier
    for weights, backbone, head in (("random", random_tiny, random_head),
                                    (f"trained {args.epochs} ep", model.backbone, model.head)):
        t0 = time.perf_counter()
        seconds, peaks, masks = time_passes(backbone, demo_batches, canvas, args.repeats, dev)
        cost.append(cost_row("demo", "tiny", weights, demo_data, args.batch, len(items), seconds, peaks))
        variants = {"emm": masks, "emm minmax": run_passes(
            lambda b: masking_step(backbone, b, MASKS["emm minmax"], canvas), demo_batches)}
        cams = run_passes(lambda b: cam_step(backbone, b, head, CIM_THRESHOLD, canvas), demo_batches)
        storage += storage_rows("demo", weights, items, exemplar_kinds(items, stored, variants, cams, p),
                                full["mean_bytes"])
        mask_stats += [mask_row("demo", weights, name, items, m, p, boxes, class_word_ids)
                       for name, m in variants.items()]
        print(f"  demo, {weights} weights: {time.perf_counter() - t0:.0f} s", flush=True)
    precision.append(precision_row(f"demo, trained {args.epochs} ep", model.backbone, demo_batches, canvas))

    # ------------------------------------------------------------------ (b) ViLT-B/32, random weights, synthetic
    if not args.skip_b32:
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        b32 = build_backbone({**VILT_B32, "max_text_len": MAX_TEXT_LEN}).to(dev).eval()
        bp = VILT_B32["patch_size"]
        b32_canvas = mask_canvas(VILT_B32["image_size"], bp)
        n = args.b32_batch * args.b32_batches
        b32_head = nn.Linear(VILT_B32["hidden_size"], len(B32_SIZES)).to(dev)
        all_items, all_stored, all_masks, all_minmax, all_cams = [], [], [], [], []
        for label, (H, W) in enumerate(B32_SIZES):
            syn, syn_stored = synthetic_items(n, (H, W), label, args.seed + label)
            syn_batches = batches_of(syn, args.b32_batch, dev)
            seconds, peaks, masks = time_passes(b32, syn_batches, b32_canvas, args.b32_repeats, dev)
            cost.append(cost_row(f"B/32 {H}x{W}", "ViLT-B/32", "random", f"synthetic {H}x{W} "
                                 f"({(H // bp) * (W // bp)} patches), 40 tokens", args.b32_batch, n, seconds,
                                 peaks))
            all_items += syn
            all_stored += syn_stored
            all_masks.append(masks)
            all_minmax.append(run_passes(lambda b: masking_step(b32, b, MASKS["emm minmax"], b32_canvas),
                                         syn_batches))
            all_cams.append(run_passes(lambda b: cam_step(b32, b, b32_head, CIM_THRESHOLD, b32_canvas), syn_batches))
            precision.append(precision_row(f"B/32 {H}x{W}, random", b32, syn_batches, b32_canvas))
        cat = lambda parts: {k: torch.cat([m[k] for m in parts]) for k in parts[0]}  # noqa: E731
        variants = {"emm": cat(all_masks), "emm minmax": cat(all_minmax)}
        b32_full = float(np.mean([Exemplar.from_item(it, bp).nbytes for it in all_items]))
        storage += storage_rows("B/32 synthetic", "random", all_items,
                                exemplar_kinds(all_items, all_stored, variants, cat(all_cams), bp), b32_full)
        mask_stats += [mask_row("B/32 synthetic", "random", name, all_items, m, bp) for name, m in variants.items()]
        print(f"  ViLT-B/32: {time.perf_counter() - t0:.0f} s", flush=True)

    # ------------------------------------------------------------------ report
    print(f"\n{env}; {load} during the run; total {time.perf_counter() - t_start:.0f} s")
    print(f"\n### Tiny model trained on the demo train set (for meaningful attention)\n\n"
          f"Tiny model (TINY, max_text_len {MAX_TEXT_LEN}), 300 demo train images at pixelbert({size}, {p}), "
          f"plain loop, full tuning of backbone + linear head on `out.pooled`, no augmentation, {env}. Test: the "
          f"100 demo test samples; image only = text reduced to [CLS] [SEP]; text only = no image patch (only the "
          f"image [CLS] token).\n")
    print(markdown_table(pd.DataFrame(training), digits=1))
    print(f"\n### 1. Masking pass vs evaluation pass (same samples, eval mode, inference_mode)\n\n"
          f"{env}. eval = backbone(...) with fused attention; eval+last-layer map = the same returning layer -1's "
          f"attention (the first half of a masking pass); masking = masking_step(backbone, batch, MaskingConfig(), "
          f"mask_canvas(...)): last-layer attention + masks + a second forward over the masked sample's kept tokens "
          f"(packed). SSF merged into the weights in every pass. Batches timed "
          f"interleaved, median of {args.repeats} (demo)"
          + ("" if args.skip_b32 else f" / {args.b32_repeats} (B/32)")
          + " per batch after one warm-up batch, summed over the pass."
          + ("" if args.skip_b32 else f" B/32: random weights, {args.b32_batches} batches of {args.b32_batch} per "
                                      f"image size.") + "\n")
    print(markdown_table(pd.DataFrame(cost), digits=3))
    print("\nratios (time, x an evaluation pass of the same samples)")
    for row in cost:
        target = "" if row["model"] != "ViLT-B/32" else (
            f"  (target <= {MASKING_TARGET:.2f}: {'met' if row['masking / eval'] <= MASKING_TARGET else 'NOT met'})")
        print(f"  masking / eval, {row['setting']}, {row['weights']}: {row['masking / eval']:.3f}{target}")
    sets = (f"demo: tiny model (random, and trained {args.epochs} epochs), the 300 demo train images at "
            f"pixelbert({size}, {p}), masks from the masking passes of table 1 (batch {args.batch})")
    if not args.skip_b32:
        sets += (f"; B/32: ViLT-B/32 with random weights, {n} synthetic samples per image size "
                 f"({' and '.join(f'{h}x{w}' for h, w in B32_SIZES)}), batch {args.b32_batch}")
    print(f"\n### 2. Exemplars per class at memory m = {', '.join(map(str, MEMORY_SIZES))} (full exemplars per "
          f"class, memory_unit=tokens)\n\n"
          f"{sets}; {env}. Each class's MemoryBuffer (budget m, memory_fill=skip; cim: stop) is filled in dataset "
          f"order, the "
          f"same ranking for every method (demo: 30 samples a class"
          + ("" if args.skip_b32 else f"; B/32: {n} a class, one class per image size") + "). "
          f"Cells: exemplars stored per class (in brackets: with the class's exemplars offered over and over, i.e. "
          f"not capped by its sample count). cost / exemplar: mean cost in full exemplars (tokens); byte share / "
          f"exemplar: the same in memory_unit=byte_share; bytes vs mean full: mean stored bytes / the set's mean "
          f"full-exemplar bytes; m=5, byte_share / bytes: stored per class in those units (bytes: budget 5 x the mean "
          f"full-exemplar bytes). replay = full Exemplar; mrdc = JpegExemplar of the image, stored at the model's "
          f"size (demo: JPEG q92 files; B/32: JPEG q90), quality {JPEG_QUALITY}, against the file's bytes; "
          f"cim = CimExemplar, bounding box of the CAM (token) > {CIM_THRESHOLD} at full resolution + the rest at "
          f"1/{CIM_RATIO:g} of its area (demo random / B/32: a random linear classifier; demo trained: its head); "
          f"emm = masked Exemplar with MaskingConfig() (ratio, tau_I = 0.74, tau_T = 0.5); emm minmax = min-max, "
          f"tau 0.5 / 0.5. Paper rows: the bars of its memory plot (MM-ImageNet-R, L = 10; 'cost' = 5 / bar at "
          f"m = 5).\n")
    print(markdown_table(pd.DataFrame(storage + paper_rows()), digits=2))
    print(f"\n### 3. emm masks (ratio 0.74 / 0.5, the default, and min-max 0.5 / 0.5), per sample, over all samples "
          f"of the set\n\n"
          f"{sets}; {env}. patches kept = kept / real patches; tokens = kept / valid tokens incl. [CLS]/[SEP] "
          f"(always kept); words = the same without [CLS]/[SEP] (punctuation counts as words). Demo only: share of "
          f"the kept patches that overlap the shape's bounding box vs the share of all patches that do (chance), "
          f"and the kept rate of the class's colour/shape word pieces vs the other words.\n")
    print(markdown_table(pd.DataFrame(mask_stats), digits=1))
    print(f"\n### 4. Reduced precision: masks of a bf16 autocast masking pass vs the float32 default\n\n"
          f"{env}. The same samples as above; a sample counts as the same when every one of its patch (word) keep "
          f"flags is.\n")
    print(markdown_table(pd.DataFrame(precision), digits=1))


if __name__ == "__main__":
    main()
