"""What ``compile=True`` (``torch.compile`` of the backbone's forward) buys: graphs, recompiles and speed-up.

In one run, for one model size (``--model tiny`` or ``b32``, random weights, batch ``--batch``):

1. **graphs**: ``torch._dynamo.explain`` of the forward as :func:`emmcil.model.vilt.compiled_forward` compiles it
   (unbacked token counts), for an evaluation batch of mixed image sizes, the attention-map pass and the packed
   pass of masking, and a training forward: graph count and graph breaks with their reasons;
2. **recompiles**: the number of graphs compiled while the compiled forward runs batches of the sizes the pixelbert
   transform produces (shorter side ``image_size``, the longer one up to 5/3 of it, in patch multiples), one after
   the other (torch's automatic dynamic shapes: the first size is specialised, the second size makes those
   dimensions dynamic, later sizes reuse it);
3. **speed-up**: eager vs compiled, on one fixed batch: the inference forward (SSF merged, as evaluation runs it)
   and the SSF training step (forward + cross-entropy + backward + AdamW), rows timed interleaved, fastest of
   ``--iters`` rounds after the compile; with ``--dtype bf16`` under ``torch.autocast``. Also transformers'
   ``ViltModel`` (same weights) for the GPU target of issue 16: compiled ours >= 1.3x ``ViltModel`` in bf16 on a GPU.

The first compile of each graph is slow (tiny on a 2-core CPU: tens of seconds cold, a few seconds once inductor's
on-disk cache holds it; ViLT-B/32: about a minute); they are reported beside the speed-ups.

    python benchmarks/bench_compile.py                          # tiny model, CPU: a few minutes cold
    python benchmarks/bench_compile.py --model b32 --batch 4    # ViLT-B/32 on CPU: several minutes of compiling
    python benchmarks/bench_compile.py --model b32 --device cuda --batch 32 --dtype bf16
"""
from __future__ import annotations

import argparse
import copy
import platform
import time

import pandas as pd
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters
from transformers import ViltConfig as HFViltConfig
from transformers import ViltModel

from emmcil.markdown import markdown_table
from emmcil.model import TINY, VILT_B32, ViLT, ViLTConfig, apply_freeze_policy, merge_ssf
from emmcil.model.checkpoint import convert_hf

from machine_load import OtherLoad  # benchmarks/ (scripts run from this folder)
from measure import interleaved_times, sync

SIZES = {"tiny": TINY, "b32": VILT_B32}
NUM_CLASSES = 10


def batch_of(B: int, T: int, sizes: list[tuple[int, int]], device: str, seed: int = 0) -> dict:
    """Random images of ``sizes`` (one per sample, cycled) zero-padded to the largest, with pixel masks."""
    g = torch.Generator().manual_seed(seed)
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    images = torch.zeros(B, 3, H, W)
    pixel_masks = torch.zeros(B, H, W, dtype=torch.bool)
    for b in range(B):
        h, w = sizes[b % len(sizes)]
        images[b, :, :h, :w] = torch.randn(3, h, w, generator=g)
        pixel_masks[b, :h, :w] = True
    text_ids = torch.randint(1000, 30000, (B, T), generator=g)
    text_masks = torch.ones(B, T, dtype=torch.long)
    text_masks[1::2, T // 2:] = 0
    batch = {"text_ids": text_ids, "text_masks": text_masks, "images": images, "pixel_masks": pixel_masks,
             "labels": torch.randint(0, NUM_CLASSES, (B,), generator=g)}
    return {k: v.to(device) for k, v in batch.items()}


def args_of(b: dict) -> tuple:
    return b["text_ids"], b["text_masks"], b["images"], b["pixel_masks"]


def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def explain_rows(model: ViLT, batch: dict) -> list[dict]:
    """torch._dynamo.explain of the forward variants, with compiled_forward's dynamo settings."""
    out = []
    half = batch["pixel_masks"].clone()
    half[:, :, half.shape[-1] // 2:] = False  # drop patches as a masked sample does
    p = model.cfg.patch_size
    keep = half[:, ::p, ::p]
    variants = {
        "evaluation (mixed image sizes)": (False, {}),
        "attention map of the last layer (masking, 1st)": (False, {"return_attention": [-1], "pooled_only": True}),
        "kept tokens only, packed (masking, 2nd)": (False, {"patch_keep": keep, "pack": 2, "pooled_only": True}),
        "training forward": (True, {}),
    }
    for name, (train, kwargs) in variants.items():
        model.train(train)
        with torch._dynamo.config.patch(capture_scalar_outputs=True):
            ex = torch._dynamo.explain(ViLT.forward)(model, *args_of(batch), **kwargs)
        out.append({"forward": name, "graphs": ex.graph_count, "graph breaks": ex.graph_break_count,
                    "reasons": "; ".join(str(r.reason).splitlines()[0][:80] for r in ex.break_reasons) or "-"})
    model.eval()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(SIZES), default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text-len", type=int, default=40)
    ap.add_argument("--iters", type=int, default=5, help="timed interleaved rounds (fastest kept)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, B, T = args.device, args.batch, args.text_len
    amp = torch.bfloat16 if args.dtype == "bf16" else None
    load = OtherLoad()
    t_start = time.perf_counter()

    size = dict(SIZES[args.model])
    hf = ViltModel(HFViltConfig(hidden_size=size["hidden_size"], num_hidden_layers=size["num_layers"],
                                num_attention_heads=size["num_heads"],
                                intermediate_size=int(size["hidden_size"] * size["mlp_ratio"]),
                                patch_size=size["patch_size"], image_size=size["image_size"],
                                max_position_embeddings=T, max_image_length=-1, layer_norm_eps=1e-6,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval().to(dev)
    weights = convert_hf(hf.state_dict())

    def ours(compile_: bool) -> ViLT:
        model = ViLT(ViLTConfig(**size, max_text_len=T, compile=compile_))
        model.load_state_dict(weights, strict=False)
        return model.to(dev).eval()

    eager, compiled = ours(False), ours(True)
    compiled.load_state_dict(eager.state_dict())
    s, p = size["image_size"], size["patch_size"]
    longest = int(s * 5 / 3) // p * p
    pixelbert = [(s, s), (s, s + 4 * p), (s + 4 * p, s), (s, longest), (s + 2 * p, s), (longest, s)]
    fixed = batch_of(B, T, [(s, s + 4 * p), (s + 4 * p, s)], dev)

    # ------------------------------------------------------------------ 1. graphs
    explained = explain_rows(eager, fixed)

    # ------------------------------------------------------------------ 2. recompiles over pixelbert sizes
    merged_eager = merge_ssf(copy.deepcopy(eager))
    merged_compiled = merge_ssf(copy.deepcopy(compiled))
    recompiles = []
    with torch.inference_mode():
        for k, (h, w) in enumerate(pixelbert):
            b = batch_of(B, T, [(h, w), (min(h, w), min(h, w))], dev, seed=k)
            before = graphs()
            sync(dev)
            t = time.perf_counter()
            out = merged_compiled(*args_of(b))
            sync(dev)
            seconds = time.perf_counter() - t
            ref = merged_eager(*args_of(b))
            recompiles.append({"batch": k + 1, "padded image": f"{b['images'].shape[-2]}x{b['images'].shape[-1]}",
                               "new graphs": graphs() - before, "first call s": seconds,
                               "max abs diff of pooled, compiled vs eager":
                                   float((out.pooled - ref.pooled).abs().max())})

    # ------------------------------------------------------------------ 3. speed-up
    def forward(model):
        def call():
            with torch.inference_mode(), torch.autocast(dev, dtype=amp or torch.bfloat16, enabled=amp is not None):
                if isinstance(model, ViltModel):
                    model(input_ids=fixed["text_ids"], attention_mask=fixed["text_masks"],
                          pixel_values=fixed["images"], pixel_mask=fixed["pixel_masks"].long())
                else:
                    model(*args_of(fixed))
        return call

    def train_step(backbone):
        head = nn.Linear(backbone.cfg.hidden_size, NUM_CLASSES).to(dev)
        model = nn.ModuleDict({"backbone": backbone, "classifier": head}).train()
        apply_freeze_policy(model, "ssf")
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)

        def step():
            with torch.autocast(dev, dtype=amp or torch.bfloat16, enabled=amp is not None):
                logits = head(backbone(*args_of(fixed)).pooled)
                loss = nn.functional.cross_entropy(logits, fixed["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    rows = {"forward, merged SSF, eager": forward(merged_eager),
            "forward, merged SSF, compiled": forward(merged_compiled),
            "transformers ViltModel": forward(hf),
            "SSF training step, eager": train_step(copy.deepcopy(eager)),
            "SSF training step, compiled": train_step(copy.deepcopy(compiled))}
    first = {}
    for name, fn in rows.items():  # the compile happens here, outside the timing
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        first[name] = time.perf_counter() - t
    times = interleaved_times(rows, args.iters, warmup=1, device=dev)
    sec = {name: min(t) for name, t in times.items()}
    speed = [{"row": name, "first call s (compiles)": first[name], "s/batch": s_, "samples/s": B / s_}
             for name, s_ in sec.items()]

    # ------------------------------------------------------------------ report
    device = torch.cuda.get_device_name() if dev == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"compile=True, model {args.model}, batch {B}, {T} text tokens, {device}, {args.dtype}, torch "
          f"{torch.__version__}, Python {platform.python_version()}; {load} during the run; total "
          f"{time.perf_counter() - t_start:.0f} s\n")
    print("### 1. Graphs of the compiled forward (torch._dynamo.explain)\n")
    print(markdown_table(pd.DataFrame(explained)))
    print(f"\n### 2. Compiles over pixelbert({s}, {p}) batch sizes (inference, merged SSF)\n")
    print(markdown_table(pd.DataFrame(recompiles), digits=3))
    total = sum(r["new graphs"] for r in recompiles)
    print(f"\n{total} graphs compiled for {len(pixelbert)} batch sizes")
    print(f"\n### 3. Eager vs compiled, one batch of {fixed['images'].shape[-2]}x{fixed['images'].shape[-1]} "
          f"padded images, fastest of {args.iters} interleaved rounds\n")
    print(markdown_table(pd.DataFrame(speed), digits=3))
    fwd = sec["forward, merged SSF, eager"] / sec["forward, merged SSF, compiled"]
    step = sec["SSF training step, eager"] / sec["SSF training step, compiled"]
    vs_hf = sec["transformers ViltModel"] / sec["forward, merged SSF, compiled"]
    print("\nratios (samples/s, >1: compiled is faster)")
    print(f"  compiled / eager forward:          {fwd:.3f}")
    print(f"  compiled / eager SSF step:         {step:.3f}")
    if dev == "cuda" and args.dtype == "bf16" and args.model == "b32":
        met = "met" if vs_hf >= 1.3 else "NOT met"
        print(f"  compiled ours / ViltModel forward: {vs_hf:.3f}  (target >= 1.30: {met})")
    else:  # issue 16's target is for a GPU in bf16 at ViLT-B/32
        print(f"  compiled ours / ViltModel forward: {vs_hf:.3f}  (the 1.30 target is for a GPU, bf16, ViLT-B/32)")


if __name__ == "__main__":
    main()
