"""Forward throughput of our ViLT-B/32 against transformers' ViltModel and against the machine's GEMM roofline.

For each image size (default 384x384 and 384x576, batch 4, 40 text tokens), in one run, rows timed interleaved:

* **roofline**: the forward's matrix products alone, back to back (:func:`measure.matmul_chain`): as fast as this
  machine's GEMMs go at ViLT-B/32's shapes;
* **plain ViLT** (``ssf=False``), **ours, SSF** (the training form: a scale-and-shift after every linear map and
  norm), **ours, SSF merged** (:func:`emmcil.model.merge_ssf`, what evaluation, masking, CAM and prediction run:
  ``IncrementalModule.ssf_merged``) and **transformers ViltModel**, all with the weights of one random ViltModel
  (copied with :func:`emmcil.model.checkpoint.convert_hf`; SSF parameters at their initialisation), eval mode,
  ``torch.inference_mode()``, the same inputs.

Achieved FLOP/s = the analytic forward FLOPs (:func:`measure.forward_flops`) / seconds; the roofline row's FLOPs are
the same number. On CUDA also the share of the GPU's dense bf16 peak (``measure.PEAK_BF16_TFLOPS``). Each row's time
is the fastest of ``--iters`` interleaved rounds after ``--warmup``: on a machine shared with other processes the
fastest round is the one least disturbed, and the rows saw the same disturbances. Ratios are printed beside their
targets (issue 16): merged / plain >= 0.98, merged / ViltModel >= 1.0, merged at >= 0.9 of the roofline.

    python benchmarks/bench_backbone.py                  # ViLT-B/32, batch 4, 384x384 and 384x576, CPU fp32
    python benchmarks/bench_backbone.py --device cuda --batch 64 --dtype bf16
"""
from __future__ import annotations

import argparse
import copy
import platform
import time

import pandas as pd
import torch
from transformers import ViltConfig as HFViltConfig
from transformers import ViltModel

from emmcil.markdown import markdown_table
from emmcil.model import VILT_B32, ViLT, ViLTConfig, merge_ssf
from emmcil.model.checkpoint import convert_hf

from machine_load import OtherLoad  # benchmarks/ (scripts run from this folder)
from measure import forward_flops, interleaved_times, matmul_chain, peak_tflops

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TARGETS = {"merged / plain": 0.98, "merged / ViltModel": 1.0, "merged / roofline FLOP/s": 0.9}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--images", type=int, nargs="+", default=[384, 384, 384, 576], metavar="H W",
                    help="image sizes as H W pairs")
    ap.add_argument("--text-len", type=int, default=40)
    ap.add_argument("--iters", type=int, default=5, help="timed interleaved rounds (fastest kept)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                    help="models under torch.autocast of this dtype (fp32: none); the roofline's operands in it")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if len(args.images) % 2:
        ap.error("--images takes H W pairs")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, B, T = args.device, args.batch, args.text_len
    dtype = DTYPES[args.dtype]
    autocast = dtype != torch.float32
    peak = peak_tflops(torch.cuda.get_device_name()) if dev == "cuda" else None
    load = OtherLoad()
    t_start = time.perf_counter()

    torch.manual_seed(0)
    hf = ViltModel(HFViltConfig(max_image_length=-1, layer_norm_eps=1e-6)).eval().to(dev)
    weights = convert_hf(hf.state_dict())
    cfg = ViLTConfig(**VILT_B32, max_text_len=T)

    def ours(ssf: bool) -> ViLT:
        model = ViLT(ViLTConfig.from_dict({**cfg.to_dict(), "ssf": ssf})).eval()
        model.load_state_dict(weights, strict=False)  # SSF parameters keep their initialisation
        return model.to(dev)

    plain, with_ssf = ours(False), ours(True)
    merged = merge_ssf(copy.deepcopy(with_ssf))

    rows, ratios = [], []
    for H, W in zip(args.images[::2], args.images[1::2]):
        g = torch.Generator().manual_seed(0)
        images = torch.randn(B, 3, H, W, generator=g).to(dev)
        pixel_masks = torch.ones(B, H, W, dtype=torch.bool, device=dev)
        text_ids = torch.randint(1000, 30000, (B, T), generator=g).to(dev)
        text_masks = torch.ones(B, T, dtype=torch.long, device=dev)
        P = (H // cfg.patch_size) * (W // cfg.patch_size)
        flops = forward_flops(cfg, B, T, P)

        def model_call(fn):
            def call():
                with torch.inference_mode(), torch.autocast(dev, dtype=dtype, enabled=autocast):
                    fn()
            return call

        chain = matmul_chain(cfg, B, T, P, dev, dtype)
        fns = {
            "roofline (matmul chain)": lambda: chain(),
            "plain ViLT (ssf=False)": model_call(lambda: plain(text_ids, text_masks, images, pixel_masks)),
            "ours, SSF (training form)": model_call(lambda: with_ssf(text_ids, text_masks, images, pixel_masks)),
            "ours, SSF merged": model_call(lambda: merged(text_ids, text_masks, images, pixel_masks)),
            "transformers ViltModel": model_call(lambda: hf(input_ids=text_ids, attention_mask=text_masks,
                                                            pixel_values=images, pixel_mask=pixel_masks.long())),
        }
        with torch.inference_mode():
            chain()  # operands and allocator warm before the first timed round
        times = interleaved_times(fns, args.iters, args.warmup, dev)
        sec = {name: min(t) for name, t in times.items()}
        roof = sec["roofline (matmul chain)"]
        for name, s in sec.items():
            rows.append({"image": f"{H}x{W}", "patches": P, "row": name, "s/batch": s, "samples/s": B / s,
                         "GFLOP/s": flops / s / 1e9, "of roofline": roof / s})
            if peak is not None:
                rows[-1]["% of bf16 peak"] = 100 * flops / s / 1e12 / peak
        m = sec["ours, SSF merged"]
        ratios += [(f"{H}x{W}", "merged / plain", sec["plain ViLT (ssf=False)"] / m),
                   (f"{H}x{W}", "merged / ViltModel", sec["transformers ViltModel"] / m),
                   (f"{H}x{W}", "merged / roofline FLOP/s", roof / m),
                   (f"{H}x{W}", "merged / SSF unmerged", sec["ours, SSF (training form)"] / m)]

    device = torch.cuda.get_device_name() if dev == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"ViLT-B/32 forward, batch {B}, {T} text tokens, {device}, {args.dtype}, torch {torch.__version__}, "
          f"Python {platform.python_version()}, transformers attention {hf.config._attn_implementation}; fastest of "
          f"{args.iters} interleaved rounds after {args.warmup}; {load} during the run; total "
          f"{time.perf_counter() - t_start:.0f} s\n")
    print(markdown_table(pd.DataFrame(rows), digits=3))
    print("\nratios (samples/s, >1: merged is faster; roofline: share of the matmul chain's FLOP/s), target beside")
    for image, name, value in ratios:
        target = TARGETS.get(name)
        mark = "" if target is None else f"  (target >= {target:.2f}: {'met' if value >= target else 'NOT met'})"
        print(f"  {image} {name + ':':28s} {value:.3f}{mark}")


if __name__ == "__main__":
    main()
