"""Phase time with and without length-grouped batches (``length_group_window``), side by side in one run.

A masked exemplar keeps about a quarter of its patches, but a batch is padded to its longest sample, so among
random batches it costs as much as a full image (``emmcil/engine/loaders.py``). This runs the same ``emm``
experiment twice, with ``length_group_window=0`` (uniformly random batches, the default) and with ``--window``,
phase by phase in turn (phase t of one run, then phase t of the other), so that a change in the machine's load hits
both. Per phase and run it reports:

* new and replayed samples, and the training tokens: **computed** = sum over the real batches of batch size x
  (text positions + 1 + the batch's largest image-token count), counted by a callback on every training batch,
  against **kept** = the tokens the samples have (their own image tokens, merged patches included);
* **train s**: ``Trainer.fit`` (every epoch of the phase), and **phase s**: the whole phase (training, evaluation,
  the masking pass, memory update), which grouping does not change outside training;
* the ratios grouped / random of each.

Default setting: the embedded demo set with a small model (``--hidden`` 128, ``--layers`` 2, 16-px patches) at
``--image-size`` 192, so that an image has 144-192 patches and 40 text positions, the token counts of ViLT-B/32 at
384 px (the demo's 96-128 px pictures are upscaled); ``emm`` with its defaults (masked exemplars at equal memory,
the multimodal augmentation), ``--phases`` 5 (so that late phases replay more exemplars than they have new
samples), ``--epochs`` 3, batch 32, one torch thread; one short untimed phase first takes the one-time costs. The
accuracy of each run is printed too: grouping changes the batches, hence the numbers, and one seed of the demo says
little about which is better.

    python benchmarks/bench_grouping.py                   # about 4-6 min on a 2-core CPU
    python benchmarks/bench_grouping.py --window 8 --epochs 2
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: config.py, emmcil
from emmcil.config import resolve_config  # noqa: E402
from emmcil.engine.driver import IncrementalRun  # noqa: E402
from emmcil.markdown import markdown_table  # noqa: E402

from machine_load import OtherLoad  # noqa: E402  (benchmarks/machine_load.py)


class TokenCount(pl.Callback):
    """Tokens of every training batch: computed (padded to the batch's longest) and kept (each sample's own)."""

    def __init__(self, patch_size: int):
        self.p, self.computed, self.kept = patch_size, 0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        real = batch["pixel_masks"][:, ::self.p, ::self.p]  # (B, rows, cols): patches are whole, so their corner
        if batch.get("patch_keep") is not None:
            real = real & batch["patch_keep"]
        patches = real.flatten(1).sum(1)
        fixed = batch["text_ids"].shape[1] + 1  # every text position and the image [CLS]
        self.computed += len(patches) * (fixed + int(patches.max()))
        self.kept += int((fixed + patches).sum())


class TimedRun(IncrementalRun):
    """An IncrementalRun that counts the tokens of its training batches and times ``fit`` and each phase."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.phases: list[dict] = []
        replay = self.method.replay_dataset

        def counted_replay(ctx):
            extra = replay(ctx)
            self.phases[-1]["replayed"] = 0 if extra is None else len(extra)
            return extra

        self.method.replay_dataset = counted_replay

    def make_trainer(self, phase: int) -> pl.Trainer:
        trainer = super().make_trainer(phase)
        counter = TokenCount(self.cfg["patch_size"])
        trainer.callbacks.append(counter)
        fit = trainer.fit

        def timed_fit(*args, **kwargs):
            t = time.perf_counter()
            fit(*args, **kwargs)
            self.phases[-1].update(train_s=time.perf_counter() - t, computed=counter.computed, kept=counter.kept)

        trainer.fit = timed_fit
        return trainer

    def run_phase(self, phase: int) -> None:
        self.phases.append({"new": len(self.data.scenario.train_dataset(phase))})
        t = time.perf_counter()
        super().run_phase(phase)
        row = self.results()["phases"][phase]
        self.phases[-1].update(phase_s=time.perf_counter() - t, accuracy=row["accuracy"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=int, default=50, help="length_group_window of the grouped run (batches)")
    ap.add_argument("--phases", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per phase")
    ap.add_argument("--image-size", type=int, default=192, help="shorter image side (16-px patches)")
    ap.add_argument("--hidden", type=int, default=128, help="model width")
    ap.add_argument("--layers", type=int, default=2, help="transformer blocks")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--method", default="emm")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: see benchmarks/README.md)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load, t0 = OtherLoad(), time.perf_counter()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_grouping_") as tmp:
        def start(window: int, **more) -> TimedRun:
            updates = dict(num_phases=args.phases, max_epoch=args.epochs, image_size=args.image_size,
                           hidden_size=args.hidden, num_layers=args.layers, num_heads=max(1, args.hidden // 64),
                           batch_size=args.batch, per_gpu_batchsize=args.batch, length_group_window=window,
                           log_dir=tmp, progress_bar=False, mask_figure=0, num_threads=args.threads)
            updates.update(more)
            run = TimedRun(resolve_config(["demo", args.method], **updates))
            run.method.setup(run.context(0))
            return run

        start(0, exp_name="warmup", max_epoch=1, limit_train_batches=2).run_phase(0)  # one-time costs, untimed
        runs = {"random": start(0), "grouped": start(args.window)}
        for phase in range(args.phases):  # interleaved: a burst of load hits both runs
            for r in runs.values():
                r.run_phase(phase)
    rows = []
    for phase in range(args.phases):
        a, b = runs["random"].phases[phase], runs["grouped"].phases[phase]
        rows.append({"phase": phase, "new + replayed": f"{a['new']} + {a['replayed']}", "kept tokens": a["kept"],
                     "computed, random": a["computed"], "computed, grouped": b["computed"],
                     "computed grouped / random": b["computed"] / a["computed"],
                     "train s, random": a["train_s"], "train s, grouped": b["train_s"],
                     "train grouped / random": b["train_s"] / a["train_s"],
                     "phase s, random": a["phase_s"], "phase s, grouped": b["phase_s"],
                     "phase grouped / random": b["phase_s"] / a["phase_s"],
                     "acc random": a["accuracy"], "acc grouped": b["accuracy"]})
    total = {name: {k: sum(p[k] for p in r.phases) for k in ("computed", "train_s", "phase_s")}
             for name, r in runs.items()}
    print(f"\n{args.method} on the demo set, {args.phases} phases x {args.epochs} epochs, image_size {args.image_size} "
          f"(16-px patches), model {args.hidden} wide x {args.layers} layers, batch {args.batch}, grouped window "
          f"{args.window} batches; CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}, Python "
          f"{platform.python_version()}; {load} during the run; total {time.perf_counter() - t0:.0f} s\n")
    print(markdown_table(pd.DataFrame(rows), digits=2))
    random, grouped = total["random"], total["grouped"]
    print("\nall phases, grouped / random:")
    print(f"  computed tokens: {grouped['computed'] / random['computed']:.2f}")
    print(f"  training time:   {grouped['train_s'] / random['train_s']:.2f}")
    print(f"  phase time:      {grouped['phase_s'] / random['phase_s']:.2f}")


if __name__ == "__main__":
    main()
