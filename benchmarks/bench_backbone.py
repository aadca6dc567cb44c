"""Forward throughput of our ViLT vs transformers' ViltModel, same random weights and inputs.

Prints, side by side from one run: ours (fused SDPA) vs ViltModel, ours with attention maps vs without, and merged
vs unmerged SSF, as samples/s and ratios.

    python benchmarks/bench_backbone.py                  # ViLT-B/32, batch 4, 384x384 (144 patches), CPU
    python benchmarks/bench_backbone.py --device cuda --batch 64 --dtype bf16
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import ViltConfig as HFViltConfig
from transformers import ViltModel

from emmcil.model import ViLT, ViLTConfig, merge_ssf
from emmcil.model.checkpoint import convert_hf


def timed(fn, iters: int, warmup: int, device: str) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image", type=int, nargs=2, default=(384, 384), metavar=("H", "W"))
    ap.add_argument("--text-len", type=int, default=40)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, B, (H, W), T = args.device, args.batch, args.image, args.text_len
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)

    torch.manual_seed(0)
    hf = ViltModel(HFViltConfig(max_image_length=-1, layer_norm_eps=1e-6)).eval().to(dev)
    ours = ViLT(ViLTConfig(max_text_len=T, ssf=True)).eval()
    ours.load_state_dict(convert_hf(hf.state_dict()), strict=False)
    ours = ours.to(dev)
    merged = merge_ssf(copy.deepcopy(ours))

    g = torch.Generator().manual_seed(0)
    images = torch.randn(B, 3, H, W, generator=g).to(dev)
    pixel_masks = torch.ones(B, H, W, dtype=torch.bool, device=dev)
    text_ids = torch.randint(1000, 30000, (B, T), generator=g).to(dev)
    text_masks = torch.ones(B, T, dtype=torch.long, device=dev)

    def run(fn):
        def call():
            with torch.inference_mode(), torch.autocast(dev, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                fn()
        return timed(call, args.iters, args.warmup, dev)

    rows = {
        "ours, SSF, fused attention": run(lambda: ours(text_ids, text_masks, images, pixel_masks)),
        "ours, SSF, attention maps": run(lambda: ours(text_ids, text_masks, images, pixel_masks,
                                                      return_attention=True)),
        "ours, SSF merged, fused": run(lambda: merged(text_ids, text_masks, images, pixel_masks)),
        "transformers ViltModel": run(lambda: hf(input_ids=text_ids, attention_mask=text_masks,
                                                 pixel_values=images, pixel_mask=pixel_masks.long())),
        "transformers ViltModel, attentions": run(lambda: hf(input_ids=text_ids, attention_mask=text_masks,
                                                             pixel_values=images, pixel_mask=pixel_masks.long(),
                                                             output_attentions=True)),
    }
    P = (H // 32) * (W // 32)
    print(f"ViLT-B/32 forward, batch {B}, {H}x{W} ({P} patches), {T} text tokens, {dev}, {args.dtype}, "
          f"threads {torch.get_num_threads()}, median of {args.iters}")
    print(f"{'model':40s} {'s/batch':>9s} {'samples/s':>10s}")
    for name, sec in rows.items():
        print(f"{name:40s} {sec:9.3f} {B / sec:10.1f}")
    r = rows
    print("ratios (>1: first is faster)")
    print(f"  ours fused / ViltModel:                 {r['transformers ViltModel'] / r['ours, SSF, fused attention']:.2f}")
    print(f"  ours maps / ViltModel maps:             "
          f"{r['transformers ViltModel, attentions'] / r['ours, SSF, attention maps']:.2f}")
    print(f"  ours fused / ours with attention maps:  {r['ours, SSF, attention maps'] / r['ours, SSF, fused attention']:.2f}")
    print(f"  SSF merged / SSF unmerged:              {r['ours, SSF, fused attention'] / r['ours, SSF merged, fused']:.2f}")


if __name__ == "__main__":
    main()
