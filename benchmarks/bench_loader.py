"""Is a phase bound by data loading or by compute? Loader vs training-step throughput, side by side, one run.

For two settings it measures, in samples/s:

* ``loader``: ``DataLoader(ArrowDataset, collate_fn=collate)`` alone (decode + pixelbert resize + tokenise +
  pad), for each ``--workers`` value (``persistent_workers`` when > 0, ``pin_memory`` only on CUDA); one warm-up
  pass (worker start-up, page cache), then ``--passes`` timed full passes;
* ``train``: forward + backward + AdamW step of the backbone with SSF + linear head under
  ``apply_freeze_policy(.., "ssf")`` on batches collated beforehand (no loading inside the timing);
* ``loader+train``: the two together, training on batches as the loader delivers them (what a phase sees).

Settings: (a) the embedded demo set (300 images of 96-128 px, ``pixelbert_transform(96, 16)``) with the tiny model
(``TINY``), batch ``--batch``; (b) a fixture of ``--fixture-images`` natural-looking JPEGs (500x375, 375x500,
640x480, as Food-101 / ImageNet-R photos) generated at run time, ``pixelbert_transform(384, 32)``, with
ViLT-B/32 (``VILT_B32``, random weights), batch ``--b32-batch``. The last column compares loader and train alone.

    python benchmarks/bench_loader.py                        # defaults: ~1-2 min on a 2-core CPU
    python benchmarks/bench_loader.py --skip-b32 --workers 0 2 4
    python benchmarks/bench_loader.py --device cuda --b32-batch 32 --b32-steps 10
"""
from __future__ import annotations

import argparse
import io
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
from torch.utils.data import DataLoader

from emmcil.data import ArrowDataset, collate, ensure_demo, get_tokenizer, pixelbert_transform, write_arrow
from emmcil.data.demo import DEMO_NUM_CLASSES
from emmcil.model import TINY, VILT_B32, apply_freeze_policy, build_backbone
from emmcil.model.heads import IncrementalClassifier

from machine_load import OtherLoad  # benchmarks/machine_load.py (scripts run from this folder)

MAX_TEXT_LEN = 40  # ViLT's
FIXTURE_SIZES = [(500, 375), (375, 500), (640, 480)]  # (W, H)
FIXTURE_CLASSES = 16
_WORDS = ("homemade roasted chicken with garlic lemon butter sauce crispy skin easy weeknight dinner recipe best "
          "chocolate cake frosting fresh summer salad grilled vegetables spicy noodle soup slow cooker beef "
          "stew baked salmon honey glaze classic french toast berries").split()


# ---------------------------------------------------------------------------------------------------- fixtures
def natural_jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    """A JPEG that compresses like a photo (smooth colour fields, blobs, edges, fine grain), not like noise."""
    w, h = size
    low = rng.integers(0, 256, size=(rng.integers(3, 7), rng.integers(3, 7), 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(4, 10)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.05, 0.25) * min(w, h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)([x - r, y - r * rng.uniform(0.5, 1.5), x + r,
                                                                   y + r], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0)))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, size=(h, w, 1))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_fixture(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` photo-like JPEGs of ``FIXTURE_SIZES`` (in turn) with 8-25 word captions, as one arrow file."""
    rng = np.random.default_rng(seed)
    rows = ({"image": natural_jpeg(rng, FIXTURE_SIZES[i % len(FIXTURE_SIZES)]),
             "text": [" ".join(rng.choice(_WORDS, size=rng.integers(8, 26)))], "label": i % FIXTURE_CLASSES,
             "image_id": f"fixture_{i}.jpg", "split": "train"} for i in range(n))
    return write_arrow(rows, path)


# ---------------------------------------------------------------------------------------------------- timing
def make_loader(dataset, batch: int, workers: int, device: str) -> DataLoader:
    return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                      pin_memory=device == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0))


def loader_throughput(loader: DataLoader, passes: int) -> float:
    """samples/s of the median of ``passes`` timed full passes, after one warm-up pass."""
    for _ in loader:
        pass
    rates = []
    for _ in range(passes):
        n, t = 0, time.perf_counter()
        for b in loader:
            n += len(b["labels"])
        rates.append(n / (time.perf_counter() - t))
    return float(np.median(rates))


class Classifier(nn.Module):
    """Backbone + linear head; ``classifier.`` and ``pooler.`` are what ``apply_freeze_policy`` leaves trainable."""

    def __init__(self, size: dict, num_classes: int):
        super().__init__()
        self.backbone = build_backbone({**size, "max_text_len": MAX_TEXT_LEN, "load_path": ""})
        self.classifier = IncrementalClassifier(self.backbone.cfg.hidden_size, num_classes)

    def forward(self, b: dict) -> torch.Tensor:
        return self.classifier(self.backbone(b["text_ids"], b["text_masks"], b["images"], b["pixel_masks"]).pooled)


class Trainer:
    """One forward + backward + AdamW step per call (what a training phase does per batch)."""

    def __init__(self, size: dict, num_classes: int, device: str, seed: int = 0):
        torch.manual_seed(seed)
        self.device = device
        self.model = Classifier(size, num_classes).to(device).train()
        self.trainable = apply_freeze_policy(self.model, "ssf")
        self.total = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)

    def step(self, b: dict) -> None:
        b = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        loss = nn.functional.cross_entropy(self.model(b), b["labels"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.device == "cuda":
            torch.cuda.synchronize()


def train_throughput(trainer: Trainer, batches: list[dict], steps: int, warmup: int = 1) -> float:
    """samples/s of the median of ``steps`` training steps on pre-collated ``batches`` (cycled), after ``warmup``
    steps (the median, so that a burst of load from another process does not decide the figure)."""
    for i in range(warmup):
        trainer.step(batches[i % len(batches)])
    rates = []
    for i in range(steps):
        b = batches[(warmup + i) % len(batches)]
        t = time.perf_counter()
        trainer.step(b)
        rates.append(len(b["labels"]) / (time.perf_counter() - t))
    return float(np.median(rates))


def pipeline_throughput(trainer: Trainer, loader: DataLoader, steps: int) -> float:
    """samples/s of ``steps`` training steps fed by ``loader`` (its workers already started), after one step."""
    it, n = iter(loader), 0
    trainer.step(next(it))
    t = time.perf_counter()
    for _ in range(steps):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        trainer.step(b)
        n += len(b["labels"])
    return n / (time.perf_counter() - t)


def shutdown(loader: DataLoader) -> None:
    """Stop a loader's persistent workers now (they would linger until garbage collection)."""
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    loader._iterator = None


# ---------------------------------------------------------------------------------------------------- report
def bound(loader_sps: float, train_sps: float) -> str:
    r = loader_sps / train_sps
    return f"data (loader {r:.2f}x train)" if r < 1 else f"compute (loader {r:.1f}x train)"


def to_markdown(df: pd.DataFrame) -> str:
    try:
        return df.to_markdown(index=False)
    except ImportError:  # pandas needs `tabulate` for that; a plain pipe table is just as readable
        cells = [[str(c) for c in df.columns]] + [[str(v) for v in row] for row in df.itertuples(index=False)]
        widths = [max(len(r[j]) for r in cells) for j in range(len(df.columns))]
        right = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
        fmt = lambda r: "| " + " | ".join(v.rjust(w) if a else v.ljust(w) for v, w, a in zip(r, widths, right)) + " |"
        rule = "|" + "|".join(("-" * (w + 1) + ":") if a else ("-" * (w + 2)) for w, a in zip(widths, right)) + "|"
        return "\n".join([fmt(cells[0]), rule] + [fmt(r) for r in cells[1:]])


def run_setting(name: str, dataset: ArrowDataset, size: dict, size_name: str, num_classes: int, batch: int,
                steps: int, args) -> list[dict]:
    t0, load = time.perf_counter(), OtherLoad()
    trainer = Trainer(size, num_classes, args.device)
    # training batches: real collated batches of this set, so image sizes, padding and text lengths are the real ones
    batches = []
    for b in make_loader(dataset, batch, 0, args.device):
        batches.append(b)
        if len(batches) == min(steps + 1, 4):
            break
    train_sps = train_throughput(trainer, batches, steps, warmup=2)
    rows = []
    for w in args.workers:
        loader = make_loader(dataset, batch, w, args.device)
        loader_sps = loader_throughput(loader, args.passes)
        pipe_sps = pipeline_throughput(trainer, loader, steps)
        shutdown(loader)
        rows.append({"setting": name, "model": f"{size_name} ({trainer.trainable / 1e3:.0f}k of "
                                                 f"{trainer.total / 1e6:.1f}M train)",
                     "batch": batch, "workers": w, "loader samples/s": round(loader_sps, 1),
                     "train samples/s": round(train_sps, 1), "loader+train samples/s": round(pipe_sps, 1),
                     "bound (loader vs train)": bound(loader_sps, train_sps)})
    print(f"  {name}: {time.perf_counter() - t0:.0f} s, {load}", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="batch of the demo loader and the tiny model")
    ap.add_argument("--passes", type=int, default=3, help="timed full loader passes (after one warm-up pass)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="num_workers values to compare")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps of the tiny model")
    ap.add_argument("--b32-batch", type=int, default=4, help="batch of the 384-px loader and ViLT-B/32")
    ap.add_argument("--b32-steps", type=int, default=3, help="timed training steps of ViLT-B/32")
    ap.add_argument("--fixture-images", type=int, default=256, help="photo-like JPEGs in the 384-px fixture")
    ap.add_argument("--skip-b32", action="store_true", help="only the demo set and the tiny model")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="training device")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads of the main process (0: default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = get_tokenizer()
    load = OtherLoad()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        demo = ArrowDataset(ensure_demo(tmp / "demo") / "demo_train.arrow", tokenizer,
                            pixelbert_transform(size=96, size_divisor=16), MAX_TEXT_LEN)
        print(f"demo set: {len(demo)} images in {time.perf_counter() - t0:.1f} s", flush=True)
        rows += run_setting("demo, 96 px", demo, TINY, "tiny", DEMO_NUM_CLASSES, args.batch, args.steps, args)
        if not args.skip_b32:
            t0 = time.perf_counter()
            path = write_fixture(tmp / "fixture_train.arrow", args.fixture_images)
            fixture = ArrowDataset(path, tokenizer, pixelbert_transform(384, 32), MAX_TEXT_LEN)
            print(f"384-px fixture: {len(fixture)} JPEGs, {path.stat().st_size / len(fixture) / 1e3:.0f} kB each, "
                  f"written in {time.perf_counter() - t0:.1f} s", flush=True)
            rows += run_setting("photos, 384 px", fixture, VILT_B32, "ViLT-B/32", FIXTURE_CLASSES, args.b32_batch,
                                args.b32_steps, args)

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}, "
          f"{load} during the run; "
          f"loader: {args.passes} passes after a warm-up pass; train: SSF + pooler + head, AdamW, fp32, "
          f"median of {args.steps} (tiny) / {args.b32_steps} (B/32) steps after two warm-up steps\n")
    print(to_markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
