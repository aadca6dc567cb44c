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

Then, **can the loader keep a GPU fed?** ``--photos`` photo-like JPEGs of 500x375 to 1600x1200 (``PHOTO_SIZES``,
quality 90, as ImageNet-R's and web photos come) are generated at run time, once as found and once stored resized
by the writers' ``--resize`` (:class:`emmcil.data.resize.StoredResize`: 384 / 32, JPEG quality 95, 4:4:4). For
each, what one DataLoader worker does per sample is timed in this process with one torch thread (as a worker runs):
``decode_image``, the pixelbert transform (resize, ToTensor, normalise), tokenising, and ``collate`` per batch of
``--b32-batch``; median of ``--passes`` passes after one warm-up pass. The batch's transfer from the worker to the
main process is not counted. "samples/s per worker" is the inverse of that per-sample time, and "workers for the
GPU" = ceil(GPU step rate / samples/s per worker): the loader processes one GPU needs (CPU cores, if each worker
gets one).

The GPU step rate for ViLT-B/32 (SSF training step: forward + backward + AdamW) is measured on CUDA (bf16 autocast,
batch ``--gpu-batch`` of the stored-resized photos, median of ``--gpu-steps`` steps after 3 warm-up steps). On a CPU
it is analytic:

    GPU samples/s = MFU x peak / F
    F = step FLOPs per sample of an SSF step, ``bench_train.step_flops`` (about 2.0x the forward: the backward
        computes activation gradients only; see that docstring), with T = 40 text tokens and P = the photos' mean
        patch count after the transform (12 x 16 = 192 at 384x512): about 86 GFLOP per sample
    peak = ``--gpu-peak-tflops`` (989: H100 SXM / H200 dense bf16), MFU = ``--gpu-mfu`` (0.4: an assumption, the
        share of peak a well-fed bf16 ViT-B training step at batch 32 typically sustains; ``bench_train.py
        --device cuda`` measures it)

so about 4,600 samples/s per H100 by default; ``--gpu-samples-per-s`` replaces it by a figure measured elsewhere.

    python benchmarks/bench_loader.py                        # defaults: ~2 min on a 2-core CPU
    python benchmarks/bench_loader.py --skip-b32 --workers 0 2 4
    python benchmarks/bench_loader.py --device cuda --b32-batch 32 --b32-steps 10
    python benchmarks/bench_loader.py --skip-b32 --gpu-mfu 0.3 --gpu-peak-tflops 312   # an A100 at 30 %
"""
from __future__ import annotations

import argparse
import io
import math
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

from emmcil.data import (ArrowDataset, StoredResize, collate, decode_image, ensure_demo, get_tokenizer,
                         pixelbert_transform, write_arrow)
from emmcil.data.demo import DEMO_NUM_CLASSES
from emmcil.markdown import markdown_table
from emmcil.model import TINY, VILT_B32, ViLTConfig, apply_freeze_policy, build_backbone
from emmcil.model.heads import IncrementalClassifier

from bench_train import step_flops  # benchmarks/ (scripts run from this folder)
from machine_load import OtherLoad

MAX_TEXT_LEN = 40  # ViLT's
FIXTURE_SIZES = [(500, 375), (375, 500), (640, 480)]  # (W, H), as Food-101 photos
# (W, H) of the per-worker photos: web photos and ImageNet-R images, 0.19 to 1.9 megapixels
PHOTO_SIZES = [(500, 375), (375, 500), (640, 480), (800, 600), (1024, 768), (768, 1024), (1280, 960), (1600, 1200)]
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


def fixture_rows(n: int, sizes: list[tuple[int, int]], seed: int = 0) -> list[dict]:
    """``n`` arrow rows of photo-like JPEGs of ``sizes`` (in turn) with 8-25 word captions."""
    rng = np.random.default_rng(seed)
    return [{"image": natural_jpeg(rng, sizes[i % len(sizes)]),
             "text": [" ".join(rng.choice(_WORDS, size=rng.integers(8, 26)))], "label": i % FIXTURE_CLASSES,
             "image_id": f"fixture_{i}.jpg", "split": "train"} for i in range(n)]


def write_fixture(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` photo-like JPEGs of ``FIXTURE_SIZES`` as one arrow file."""
    return write_arrow(fixture_rows(n, FIXTURE_SIZES, seed), path)


def write_photos(folder: Path, n: int, seed: int = 1) -> tuple[Path, Path]:
    """``n`` photos of ``PHOTO_SIZES`` as found, and the same stored resized as ``--resize`` stores them (the
    writers' ``StoredResize.encode``): two arrow files."""
    rows = fixture_rows(n, PHOTO_SIZES, seed)
    resize = StoredResize()
    resized = [{**r, "image": resize.encode(decode_image(r["image"]), r["image"])} for r in rows]
    return (write_arrow(rows, folder / "photos_train.arrow"),
            write_arrow(resized, folder / "photos_resized_train.arrow", metadata=resize.metadata()))


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
    """One forward + backward + AdamW step per call (what a training phase does per batch); ``bf16``: under
    ``torch.autocast`` bf16 (the GPU step rate)."""

    def __init__(self, size: dict, num_classes: int, device: str, seed: int = 0, bf16: bool = False):
        torch.manual_seed(seed)
        self.device, self.bf16 = device, bf16
        self.model = Classifier(size, num_classes).to(device).train()
        self.trainable = apply_freeze_policy(self.model, "ssf")
        self.total = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)

    def step(self, b: dict) -> None:
        b = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
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


# ---------------------------------------------------------------------------------------------------- per worker
def worker_time(dataset: ArrowDataset, batch: int, passes: int) -> dict[str, float]:
    """Seconds per sample of what one DataLoader worker does (one torch thread): decode, transform, tokenise, and
    ``collate`` per batch of ``batch``; the median pass of ``passes`` after a warm-up pass."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        runs = []
        for _ in range(passes + 1):
            t = dict.fromkeys(("decode", "transform", "text", "collate"), 0.0)
            items = []
            for i in range(len(dataset)):
                t0 = time.perf_counter()
                image = dataset.load_image(i)
                t1 = time.perf_counter()
                pixels = dataset.transform(image)
                t2 = time.perf_counter()
                ids, masks = dataset.tokenize(dataset.caption(i))
                t3 = time.perf_counter()
                items.append({"image": pixels, "text_ids": ids, "text_masks": masks, "label": 0, "index": i})
                t["decode"], t["transform"], t["text"] = t["decode"] + t1 - t0, t["transform"] + t2 - t1, \
                    t["text"] + t3 - t2
                if len(items) == batch or i == len(dataset) - 1:
                    t4 = time.perf_counter()
                    collate(items)
                    t["collate"] += time.perf_counter() - t4
                    items = []
            runs.append({k: v / len(dataset) for k, v in t.items()})
    finally:
        torch.set_num_threads(threads)
    runs = sorted(runs[1:], key=lambda r: sum(r.values()))
    return runs[len(runs) // 2]


def gpu_step_rate(args, photos: ArrowDataset) -> tuple[float, str]:
    """(samples/s, how it was obtained) of a ViLT-B/32 SSF training step on the GPU; see the module docstring."""
    if args.gpu_samples_per_s:
        return args.gpu_samples_per_s, "given by --gpu-samples-per-s"
    if args.device == "cuda":
        trainer = Trainer(VILT_B32, FIXTURE_CLASSES, "cuda", bf16=True)
        loader = make_loader(photos, args.gpu_batch, 0, "cuda")
        batches = [b for b, _ in zip(loader, range(4))]
        sps = train_throughput(trainer, batches, args.gpu_steps, warmup=3)
        return sps, (f"measured on {torch.cuda.get_device_name()}: SSF step, bf16 autocast, batch {args.gpu_batch}, "
                     f"median of {args.gpu_steps} steps")
    cfg = ViLTConfig(**VILT_B32)
    p = cfg.patch_size
    patches = np.mean([(h // p) * (w // p) for w, h in (decode_image(photos.image_bytes(i)).size
                                                         for i in range(len(photos)))])
    flops = step_flops(cfg, 1, MAX_TEXT_LEN, int(round(patches)), "ssf")[1]
    sps = args.gpu_mfu * args.gpu_peak_tflops * 1e12 / flops
    return sps, (f"analytic: MFU {args.gpu_mfu:g} x peak {args.gpu_peak_tflops:g} TFLOP/s / {flops / 1e9:.1f} GFLOP "
                 f"per sample (SSF step, {MAX_TEXT_LEN} text + 1 + {patches:.0f} image tokens)")


def worker_rows(args, tmp: Path, tokenizer) -> tuple[list[dict], str]:
    """The per-worker table (originals vs stored resized) and the line that says where the GPU rate comes from."""
    t0 = time.perf_counter()
    paths = write_photos(tmp, args.photos)
    tf = pixelbert_transform(384, 32)
    sets = {"as found (JPEG q90)": ArrowDataset(paths[0], tokenizer, tf, MAX_TEXT_LEN),
            "stored resized (--resize 384, q95)": ArrowDataset(paths[1], tokenizer, tf, MAX_TEXT_LEN)}
    print(f"photos: {args.photos} JPEGs of {PHOTO_SIZES[0][0]}x{PHOTO_SIZES[0][1]} to "
          f"{PHOTO_SIZES[-1][0]}x{PHOTO_SIZES[-1][1]}, written and resized in {time.perf_counter() - t0:.1f} s",
          flush=True)
    gpu_sps, how = gpu_step_rate(args, sets["stored resized (--resize 384, q95)"])
    load, rows = OtherLoad(), []
    for name, data in sets.items():
        t = worker_time(data, args.gpu_batch, args.passes)
        per_sample = sum(t.values())
        sizes = [decode_image(data.image_bytes(i)).size for i in range(len(data))]
        rows.append({"images": name, "megapixels stored": np.mean([w * h for w, h in sizes]) / 1e6,
                     "kB / image": np.mean([len(data.image_bytes(i)) for i in range(len(data))]) / 1e3,
                     "decode ms": 1e3 * t["decode"], "transform ms": 1e3 * t["transform"],
                     "tokenise + collate ms": 1e3 * (t["text"] + t["collate"]),
                     "samples/s per worker": 1 / per_sample,
                     "workers for the GPU": math.ceil(gpu_sps / (1 / per_sample))})
    print(f"  per worker: {time.perf_counter() - t0:.0f} s, {load}", flush=True)
    return rows, f"GPU step rate, ViLT-B/32: {gpu_sps:.0f} samples/s ({how})"


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
    ap.add_argument("--photos", type=int, default=48, help="photo-like JPEGs (500x375 to 1600x1200) of the "
                                                           "per-worker table")
    ap.add_argument("--gpu-batch", type=int, default=32, help="per-GPU batch: the GPU step on CUDA, the workers' "
                                                              "collate")
    ap.add_argument("--gpu-steps", type=int, default=10, help="timed GPU steps (CUDA only)")
    ap.add_argument("--gpu-peak-tflops", type=float, default=989.0,
                    help="analytic GPU rate (no CUDA): dense bf16 peak, TFLOP/s (989: H100 SXM / H200)")
    ap.add_argument("--gpu-mfu", type=float, default=0.4, help="analytic GPU rate: assumed share of that peak")
    ap.add_argument("--gpu-samples-per-s", type=float, default=0.0,
                    help="a GPU step rate measured elsewhere, samples/s (replaces the measured / analytic one)")
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
        workers, gpu_line = worker_rows(args, tmp, tokenizer)

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}, "
          f"{load} during the run; "
          f"loader: {args.passes} passes after a warm-up pass; train: SSF + pooler + head, AdamW, fp32, "
          f"median of {args.steps} (tiny) / {args.b32_steps} (B/32) steps after two warm-up steps\n")
    print(markdown_table(pd.DataFrame(rows), digits=1))
    print(f"\nCan the loader feed a GPU? One worker (one process, one torch thread) per sample: decode, pixelbert "
          f"transform, tokenise, collate (batches of {args.gpu_batch}); {gpu_line}\n")
    print(markdown_table(pd.DataFrame(workers), digits=1))
    print(f"\nstored resized / as found, samples/s per worker: "
          f"{workers[1]['samples/s per worker'] / workers[0]['samples/s per worker']:.2f}")


if __name__ == "__main__":
    main()
