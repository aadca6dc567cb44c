"""Is a phase bound by data loading or by compute? Loader vs training-step throughput, side by side, one run.

For two settings it measures, in samples/s:

* ``loader``: ``DataLoader(ArrowDataset, collate_fn=collate)`` alone (decode + pixelbert resize + tokenise +
  pad, uint8), for each ``--workers`` value (``persistent_workers`` when > 0, ``pin_memory`` only on CUDA); one warm-up
  pass (worker start-up, page cache), then ``--passes`` timed full passes;
* ``train``: forward + backward + AdamW step of the backbone with SSF + linear head under
  ``apply_freeze_policy(.., "ssf")`` on batches collated beforehand (no loading inside the timing);
* ``loader+train``: the two together, training on batches as the loader delivers them (what a phase sees).

Settings: (a) the embedded demo set (300 images of 96-128 px, transform of size 96 / 16) with the tiny model
(``TINY``), batch ``--batch``; (b) a fixture of ``--fixture-images`` natural-looking JPEGs (500x375, 375x500,
640x480, as Food-101 / ImageNet-R photos) generated at run time, transform of size 384 / 32, with ViLT-B/32
(``VILT_B32``, random weights), batch ``--b32-batch``. The last column compares loader and train alone. Both load
as a phase does: uint8 pixels at the model's size (``PixelbertPixels``, JPEGs decoded at reduced scale), normalised
on the training device (``emmcil.data.model_images``, inside ``Trainer.step`` as inside the Lightning module).

Then, **can the loader keep a GPU fed?** ``--photos`` photo-like JPEGs of 500x375 to 1600x1200 (``PHOTO_SIZES``,
quality 90, as ImageNet-R's and web photos come) are generated at run time and stored three ways: **as found**;
**--resize** (the writers' :class:`emmcil.data.resize.StoredResize`: 384 / 32, JPEG quality 95, 4:4:4); and
**--resize --resize-format ppm** (the same pixels stored uncompressed: exactly the model input, decoded by a copy).
For each, what one DataLoader worker does per sample is timed in this process with one torch thread (as a worker
runs), with each loader:

* **before**: the loader of commit 1f3cfcf (ViLT's float ``pixelbert_transform``: full decode, Pillow resize,
  ToTensor, normalise; float batches), the reference;
* **after**: ``PixelbertPixels`` with ``jpeg_draft``: JPEGs decoded at the smallest DCT scale still >= the model's
  size, torch's uint8 resize (skipped at the model's size), uint8 batches;
* **device decoding** (``decode_on="device"``, JPEG storages): the worker's share only, reading the header and the
  bytes; the JPEGs are decoded on the device.

Per sample, in CPU time of the thread doing the work (what it costs a core of its own; on a machine shared with other
jobs the wall-clock time also holds the waits for a core, shown as "wall samples/s"): the image
(:meth:`ArrowDataset.image`: decode + transform, or the header), tokenising, and ``collate`` per batch of
``--gpu-batch``; median of ``--passes`` passes after one warm-up pass, the passes of all rows interleaved (so that
load from other processes falls on every row alike). The batch's transfer from the worker to the main process is
not counted (a uint8 batch is a quarter of a float one). "samples/s per worker" is the inverse of that per-sample
CPU time, and "workers per GPU" = ceil(GPU samples/s / samples/s per worker): the loader
processes (CPU cores, if each worker gets one) one GPU needs. What a batch then costs on the device
(``model_images``: normalising, and decoding + resizing with device decoding) is timed on ``--device`` ("device ms /
batch"); on CUDA it is added to the GPU step (GPU samples/s = batch / (batch / step rate + device time)), on a CPU
it is the main process's cost, shown for information.

The GPU step rate for ViLT-B/32 (SSF training step: forward + backward + AdamW) is measured on CUDA (bf16 autocast,
batch ``--gpu-batch`` of the --resize photos as the loader delivers them, normalised on the GPU, median of
``--gpu-steps`` steps after 3 warm-up steps). On a CPU it is analytic:

    GPU samples/s = MFU x peak / F
    F = step FLOPs per sample of an SSF step, ``bench_train.step_flops`` (about 2.0x the forward: the backward
        computes activation gradients only; see that docstring), with T = 40 text tokens and P = the photos' mean
        patch count after the transform (12 x 16 = 192 at 384x512): about 86 GFLOP per sample
    peak = ``--gpu-peak-tflops`` (989: H100 SXM / H200 dense bf16), MFU = ``--gpu-mfu`` (0.4: an assumption, the
        share of peak a well-fed bf16 ViT-B training step at batch 32 typically sustains; ``bench_train.py
        --device cuda`` measures it)

so about 4,600 samples/s per H100 by default; ``--gpu-samples-per-s`` replaces it by a figure measured elsewhere.
The output ends with the after / before ratios of samples per worker and the workers per GPU of each storage
beside the targets (<= 8 for images stored by the writers, <= 16 for photos as found).

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

from emmcil.data import (ArrowDataset, PixelbertPixels, StoredResize, collate, decode_image, ensure_demo,
                         get_tokenizer, model_images, pixelbert_transform, write_arrow)
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


STORAGES = {  # name -> how the writers store the photos (None: as found)
    "as found (JPEG q90)": None,
    "--resize 384 (JPEG q95)": StoredResize(),
    "--resize 384 --resize-format ppm": StoredResize(format="ppm"),
}


def write_photos(folder: Path, n: int, seed: int = 1) -> dict[str, Path]:
    """``n`` photos of ``PHOTO_SIZES`` stored each way of :data:`STORAGES` (the writers' ``StoredResize.encode``
    for the resized ones): storage name -> arrow file."""
    rows = fixture_rows(n, PHOTO_SIZES, seed)
    paths = {}
    for k, (name, resize) in enumerate(STORAGES.items()):
        stored = rows if resize is None else [{**r, "image": resize.encode(decode_image(r["image"]), r["image"])}
                                              for r in rows]
        paths[name] = write_arrow(stored, folder / f"photos{k}_train.arrow",
                                  metadata=None if resize is None else resize.metadata())
    return paths


# ---------------------------------------------------------------------------------------------------- timing
def make_loader(dataset, batch: int, workers: int, device: str) -> DataLoader:
    """As a phase's loader: pinned batches on CUDA (copied without blocking in ``Trainer.step``)."""
    return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                      pin_memory=device == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0))


def photo_dataset(path, tokenizer, loader: str) -> ArrowDataset:
    """The dataset of ``path`` as the ``loader`` of the per-worker table reads it (module docstring)."""
    if loader == "before":
        return ArrowDataset(path, tokenizer, pixelbert_transform(384, 32), MAX_TEXT_LEN)
    return ArrowDataset(path, tokenizer, PixelbertPixels(384, 32), MAX_TEXT_LEN, jpeg_draft=True,
                        decode_on="device" if loader == "device decoding" else "cpu")


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
        self.backbone = build_backbone({**size, "max_text_len": MAX_TEXT_LEN})
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
        b = model_images(b)  # on the device, as IncrementalModule.on_after_batch_transfer
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
def worker_pass(dataset: ArrowDataset, batch: int) -> tuple[dict[str, float], dict]:
    """(seconds per sample of what one DataLoader worker does over ``dataset`` with one torch thread: CPU time of
    ``image`` (decode + transform, or the header with device decoding), ``text`` (tokenise) and ``collate`` per
    batch of ``batch``, and ``wall``, the wall-clock time of it all), and the first collated batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    # this thread's CPU time: what the work costs a core of its own (with one torch thread it all runs here);
    # time.process_time sums every thread of the process and took up to 5 ms a call on the development machine
    clock = time.thread_time
    try:
        t, items, first = dict.fromkeys(("image", "text", "collate"), 0.0), [], None
        start = time.perf_counter()
        for i in range(len(dataset)):
            t0 = clock()
            image = dataset.image(i)
            t1 = clock()
            ids, masks = dataset.tokenize(dataset.caption(i))
            t2 = clock()
            items.append({"image": image, "text_ids": ids, "text_masks": masks, "label": 0, "index": i})
            t["image"], t["text"] = t["image"] + t1 - t0, t["text"] + t2 - t1
            if len(items) == batch or i == len(dataset) - 1:
                t3 = clock()
                collated = collate(items)
                t["collate"] += clock() - t3
                first = collated if first is None else first
                items = []
        t["wall"] = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {k: v / len(dataset) for k, v in t.items()}, first


def worker_times(datasets: dict, batch: int, passes: int) -> dict:
    """``worker_pass`` of every dataset, interleaved (one pass of each in turn, so that load from other processes
    falls on all of them alike): per dataset key the median pass of ``passes`` after a warm-up pass, and its first
    batch."""
    runs = {key: [] for key in datasets}
    for _ in range(passes + 1):
        for key, data in datasets.items():
            runs[key].append(worker_pass(data, batch))
    out = {}
    for key, r in runs.items():
        timed = sorted(r[1:], key=lambda x: x[0]["image"] + x[0]["text"] + x[0]["collate"])
        out[key] = (timed[len(timed) // 2][0], r[0][1])
    return out


def device_time(batch: dict, device: str, repeats: int = 5) -> float:
    """Seconds ``model_images`` takes on ``device`` for a collated ``batch`` already there (its tensors copied; JPEG
    files stay in host memory, as after Lightning's transfer): normalising, and decoding + resizing the files;
    median of ``repeats`` after one warm-up."""
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats + 1):
        sync()
        t = time.perf_counter()
        model_images(moved)
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


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
                     f"uint8 batches normalised on the GPU, median of {args.gpu_steps} steps")
    cfg = ViLTConfig(**VILT_B32)
    p = cfg.patch_size
    patches = np.mean([(h // p) * (w // p) for w, h in (decode_image(photos.image_bytes(i)).size
                                                         for i in range(len(photos)))])
    flops = step_flops(cfg, 1, MAX_TEXT_LEN, int(round(patches)), "ssf")[1]
    sps = args.gpu_mfu * args.gpu_peak_tflops * 1e12 / flops
    return sps, (f"analytic: MFU {args.gpu_mfu:g} x peak {args.gpu_peak_tflops:g} TFLOP/s / {flops / 1e9:.1f} GFLOP "
                 f"per sample (SSF step, {MAX_TEXT_LEN} text + 1 + {patches:.0f} image tokens)")


def path_is_jpeg(storage: str) -> bool:
    """Whether a storage of :data:`STORAGES` holds JPEGs (what device decoding takes)."""
    return STORAGES[storage] is None or STORAGES[storage].format == "jpeg"


def gpu_name(args) -> str:
    return torch.cuda.get_device_name() if args.device == "cuda" and not args.gpu_samples_per_s else "H100"


def worker_rows(args, tmp: Path, tokenizer) -> tuple[list[dict], str]:
    """The per-worker table (each storage with each loader) and the line that says where the GPU rate comes from."""
    t0 = time.perf_counter()
    paths = write_photos(tmp, args.photos)
    print(f"photos: {args.photos} JPEGs of {PHOTO_SIZES[0][0]}x{PHOTO_SIZES[0][1]} to "
          f"{PHOTO_SIZES[-1][0]}x{PHOTO_SIZES[-1][1]}, written and stored {len(STORAGES)} ways in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    gpu_sps, how = gpu_step_rate(args, photo_dataset(paths["--resize 384 (JPEG q95)"], tokenizer, "after"))
    load, rows = OtherLoad(), []
    datasets = {(storage, loader): photo_dataset(path, tokenizer, loader) for storage, path in paths.items()
                for loader in ("before", "after") + (("device decoding",) if path_is_jpeg(storage) else ())}
    for (storage, loader), (t, batch) in worker_times(datasets, args.gpu_batch, args.passes).items():
        data = datasets[(storage, loader)]
        per_sample = t["image"] + t["text"] + t["collate"]  # CPU seconds
        on_device = device_time(batch, args.device) if loader != "before" else 0.0
        # the GPU step with what the device does to each batch; on a CPU that cost is the main process's
        gpu = (1 / (1 / gpu_sps + on_device / args.gpu_batch)) if args.device == "cuda" else gpu_sps
        sizes = [decode_image(data.image_bytes(i)).size for i in range(len(data))]
        rows.append({"storage": storage, "loader": loader,
                     "megapixels stored": np.mean([w * h for w, h in sizes]) / 1e6,
                     "kB / image": np.mean([len(data.image_bytes(i)) for i in range(len(data))]) / 1e3,
                     "image ms": 1e3 * t["image"], "tokenise ms": 1e3 * t["text"],
                     "collate ms": 1e3 * t["collate"], "samples/s per worker": 1 / per_sample,
                     "wall samples/s": 1 / t["wall"],
                     f"device ms / batch ({args.device})": 1e3 * on_device,
                     "workers per GPU": math.ceil(gpu / (1 / per_sample))})
    print(f"  per worker: {time.perf_counter() - t0:.0f} s, {load}", flush=True)
    return rows, f"GPU step rate, ViLT-B/32: {gpu_sps:.0f} samples/s ({how})"


def worker_summary(rows: list[dict], gpu: str) -> str:
    """The closing lines: samples per worker after / before, and each storage's workers per GPU with its target."""
    by = {(r["storage"], r["loader"]): r for r in rows}
    lines = ["ratios (samples/s per worker, after / before, this run)"]
    for storage in STORAGES:
        before = by[(storage, "before")]["samples/s per worker"]
        for loader in ("after", "device decoding"):
            if (storage, loader) in by:
                lines.append(f"  {storage}, {loader} / before: "
                             f"{by[(storage, loader)]['samples/s per worker'] / before:.2f}")
    lines += ["", f"ratios (loader workers per {gpu}, this CPU's cores; targets: <= 8 for images stored by the "
                  f"writers, <= 16 as found)"]
    for storage, resize in STORAGES.items():
        target = 16 if resize is None else 8  # workers per GPU (issue 28): photos as found / stored by the writers
        for loader in ("before", "after", "device decoding"):
            if (storage, loader) in by:
                n = by[(storage, loader)]["workers per GPU"]
                lines.append(f"  workers per {gpu}, {storage}, {loader}: {n}  (target <= {target}: "
                             f"{'met' if n <= target else 'NOT met'})")
    return "\n".join(lines)


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
                                                           "per-worker table, stored three ways")
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
        demo = ArrowDataset(ensure_demo(tmp / "demo") / "demo_train.arrow", tokenizer, PixelbertPixels(96, 16),
                            MAX_TEXT_LEN, jpeg_draft=True)
        print(f"demo set: {len(demo)} images in {time.perf_counter() - t0:.1f} s", flush=True)
        rows += run_setting("demo, 96 px", demo, TINY, "tiny", DEMO_NUM_CLASSES, args.batch, args.steps, args)
        if not args.skip_b32:
            t0 = time.perf_counter()
            path = write_fixture(tmp / "fixture_train.arrow", args.fixture_images)
            fixture = ArrowDataset(path, tokenizer, PixelbertPixels(384, 32), MAX_TEXT_LEN, jpeg_draft=True)
            print(f"384-px fixture: {len(fixture)} JPEGs, {path.stat().st_size / len(fixture) / 1e3:.0f} kB each, "
                  f"written in {time.perf_counter() - t0:.1f} s", flush=True)
            rows += run_setting("photos, 384 px", fixture, VILT_B32, "ViLT-B/32", FIXTURE_CLASSES, args.b32_batch,
                                args.b32_steps, args)
        workers, gpu_line = worker_rows(args, tmp, tokenizer)

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"Python {platform.python_version()}, "
          f"{load} during the run; "
          f"loader: {args.passes} passes after a warm-up pass; train: SSF + pooler + head, AdamW, fp32, "
          f"median of {args.steps} (tiny) / {args.b32_steps} (B/32) steps after two warm-up steps\n")
    print(markdown_table(pd.DataFrame(rows), digits=1))
    print(f"\nCan the loader feed a GPU? One worker (one process, one torch thread) per sample: the image, "
          f"tokenising, collate (batches of {args.gpu_batch}); {gpu_line}\n")
    print(markdown_table(pd.DataFrame(workers), digits=1))
    print("\n" + worker_summary(workers, gpu_name(args)))

if __name__ == "__main__":
    main()
