"""Training-step throughput of our ViLT-B/32 vs transformers' ViltModel, same random weights and inputs.

One training step = forward + cross-entropy + backward + AdamW step, on the same pre-built batch for every row:

* **ours, SSF** (``ViLTConfig(ssf=True)``, ``apply_freeze_policy(model, "ssf")``): SSF scales/shifts, pooler and a
  linear head on ``out.pooled`` train; fused SDPA attention. Activation gradients flow through every layer.
* **ours, frozen** (``ViLTConfig(ssf=False)``, ``apply_freeze_policy(model, "frozen")``): pooler + head train, so
  autograd stops at the pooler (a linear probe on the frozen backbone);
* **transformers ViltModel, frozen**: every parameter frozen except ``pooler.*``, the same head on
  ``pooler_output``: the same setting as the row above;
* with ``--dtype bf16``, also **ours, SSF, autocast bf16** (``torch.autocast(device, torch.bfloat16)``; on a CPU
  without native bf16 matmuls this is usually *slower* than fp32);
* **ours, full fine-tuning** (``apply_freeze_policy(model, "full")``: every weight trains);
* **ours, SSF, forward only**: the SSF model's forward in train mode under ``torch.no_grad()``, the denominator of
  the SSF step's bound below;
* **ours, SSF, per-sample dropout**: the first row's step inside ``emmcil.model.keyed.sample_keys``, as runs train
  by default (``model_rng="sample"``: every mask hashed from its sample's key, so the batch layout does not change
  results); the other rows draw dropout from torch's RNG (``model_rng="torch"``).

All models share the weights of one randomly initialised ``ViltModel`` (copied with
:func:`emmcil.model.checkpoint.convert_hf`); the heads start from the same weights. Train mode, hidden dropout
``--dropout`` (ViLT's 0.1; none on attention probabilities) in every model. Ours follows ViLT / timm and also drops
out the MLP's GELU output (C x 4 wide), which transformers' ``ViltIntermediate`` does not: with ``--dropout 0`` the
frozen rows show the backbones' own speed. Rows are timed interleaved (one step of each row
per round), ``--warmup`` rounds, then the median of ``--steps`` rounds per row.

FLOPs per step (analytic, multiply-adds x 2; B samples, T text + 1 + P patch tokens = N, width C, L layers, MLP
width M = 4C, K classes, p = patch size; the forward as :func:`measure.forward_flops`):

    forward  F = 2 B [ L (4C^2 + 2CM) N  +  3 p^2 C P  +  C^2 + C K ]  +  4 B L N^2 C
                     (qkv, proj, fc1, fc2) (patch embed)  (pooler, head)   (Q K^T and A V)
    SSF backward  = 2 B L (4C^2 + 2CM) N  +  2 x 4 B L N^2 C  +  2 x 2 B (C^2 + C K)
    full backward = 2 (F - 2 B 3 p^2 C P) + 2 B 3 p^2 C P        (activation and weight gradients; no input
                                                                    gradient for the patch embedding)
    frozen backward = 2 x 2 B (C^2 + C K)

The backbone's weights are frozen under SSF too, so its linear layers compute only the activations' gradient
(dX = dY W: 1x their forward FLOPs, no dW); attention's backward costs about 2x its forward; SSF's own gradients
are elementwise (ignored), the patch embedding needs no input gradient. So an SSF step is about 2.04x the forward
at 384x384 / 40 tokens, not 3x (the ``6 x params x tokens`` rule assumes every weight trains, and "backward = 2x
forward" counts weight gradients that are never computed; it would overstate the achieved FLOP/s by ~1.5x). A
frozen step is about 1x the forward, a full fine-tuning step about 3x. Embedding lookups, LayerNorms, softmax,
GELU and the optimiser are ignored.

**The SSF step against its bound**: the script prints the SSF step's time over the forward's (analytic lower
bound about 2.0x, the FLOP ratio above; issue 16 keeps it <= 2.4x) and over a full fine-tuning step (FLOP ratio
about 0.67).

On CUDA the table also gives the achieved fraction of the GPU's peak dense bf16 FLOP/s (``--peak-tflops``, default
looked up from ``torch.cuda.get_device_name()``: H100 SXM 989, H100 PCIe 756, H200 989, A100 312; required for
other GPUs). fp32 rows on CUDA are compared with the same bf16 peak.

    python benchmarks/bench_train.py                     # ViLT-B/32, batch 2, 384x384, 40 tokens, CPU: ~1-2 min
    python benchmarks/bench_train.py --dtype bf16 --threads 2
    python benchmarks/bench_train.py --device cuda --batch 32 --steps 10 --warmup 3 --dtype bf16
"""
from __future__ import annotations

import argparse
import platform
import time

import pandas as pd
import torch
from torch import nn
from transformers import ViltConfig as HFViltConfig
from transformers import ViltModel

from emmcil.markdown import markdown_table
from emmcil.model import VILT_B32, ViLT, ViLTConfig, apply_freeze_policy, count_parameters
from emmcil.model.checkpoint import convert_hf
from emmcil.model.keyed import sample_keys

from machine_load import OtherLoad  # benchmarks/machine_load.py (scripts run from this folder)
from measure import forward_flops, interleaved_times, peak_tflops

NUM_CLASSES = 10

def step_flops(cfg: ViLTConfig, B: int, T: int, P: int, tuning: str) -> tuple[float, float]:
    """(forward FLOPs, step FLOPs) of one batch under ``tuning`` ("ssf", "frozen", "full", or "forward": no step);
    see the module docstring."""
    C, L, p, K = cfg.hidden_size, cfg.num_layers, cfg.patch_size, NUM_CLASSES
    M = int(C * cfg.mlp_ratio)
    N = T + 1 + P
    forward = forward_flops(cfg, B, T, P, K)
    blocks = 2 * B * L * (4 * C * C + 2 * C * M) * N
    attention = 4 * B * L * N * N * C
    patch_embed = 2 * B * 3 * p * p * C * P
    top = 2 * B * (C * C + C * K)  # pooler + head
    backward = {"ssf": 2 * top + blocks + 2 * attention, "frozen": 2 * top,
                "full": 2 * (forward - patch_embed) + patch_embed, "forward": 0.0}[tuning]
    return forward, forward + backward


class Classifier(nn.Module):
    """A backbone + the linear head on its pooled [CLS] (``out.pooled`` / ``pooler_output``)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear, hf: bool):
        super().__init__()
        self.backbone, self.classifier, self.hf = backbone, head, hf

    def forward(self, b: dict) -> torch.Tensor:
        if self.hf:
            pooled = self.backbone(input_ids=b["text_ids"], attention_mask=b["text_masks"], pixel_values=b["images"],
                                   pixel_mask=b["pixel_masks"].long()).pooler_output
        else:
            pooled = self.backbone(b["text_ids"], b["text_masks"], b["images"], b["pixel_masks"]).pooled
        return self.classifier(pooled)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--image", type=int, nargs=2, default=(384, 384), metavar=("H", "W"))
    ap.add_argument("--text-len", type=int, default=40)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per row (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per row first")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--dropout", type=float, default=0.1,
                    help="hidden dropout of every model (ViLT's 0.1; transformers' ViltConfig defaults to 0.0)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: add a row of ours with SSF under torch.autocast bf16 (the other rows stay fp32)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's peak dense bf16 TFLOP/s (default: looked up by device name)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, B, (H, W), T = args.device, args.batch, args.image, args.text_len
    peak = None
    if dev == "cuda":
        gpu = torch.cuda.get_device_name()
        peak = args.peak_tflops or peak_tflops(gpu)
        if peak is None:
            ap.error(f"no known bf16 peak for {gpu!r}: give --peak-tflops")
    load = OtherLoad()
    t_start = time.perf_counter()

    # ------------------------------------------------------------------ models: one set of random weights
    torch.manual_seed(0)
    hf_cfg = HFViltConfig(max_image_length=-1, layer_norm_eps=1e-6, hidden_dropout_prob=args.dropout,
                          attention_probs_dropout_prob=0.0)
    hf = ViltModel(hf_cfg)
    weights = convert_hf(hf.state_dict())
    head = nn.Linear(hf_cfg.hidden_size, NUM_CLASSES)
    cfg = ViLTConfig(**VILT_B32, max_text_len=T, drop_rate=args.dropout)

    def ours(ssf: bool, tuning: str) -> Classifier:
        backbone = ViLT(ViLTConfig.from_dict({**cfg.to_dict(), "ssf": ssf}))
        backbone.load_state_dict(weights, strict=False)  # SSF parameters keep their init
        model = Classifier(backbone, nn.Linear(cfg.hidden_size, NUM_CLASSES), hf=False)
        model.classifier.load_state_dict(head.state_dict())
        apply_freeze_policy(model, tuning)
        return model

    hf_model = Classifier(hf, head, hf=True)
    for name, p in hf_model.named_parameters():
        p.requires_grad_(name.startswith(("backbone.pooler.", "classifier.")))

    rows = [("ours, SSF, fused attention", ours(True, "ssf"), "ssf", None),
            ("ours, frozen (pooler + head)", ours(False, "frozen"), "frozen", None),
            ("transformers ViltModel, frozen (pooler + head)", hf_model, "frozen", None),
            ("ours, full fine-tuning", ours(True, "full"), "full", None),
            ("ours, SSF, forward only (no_grad)", ours(True, "ssf"), "forward", None)]
    if args.dtype == "bf16":
        rows.append(("ours, SSF, autocast bf16", ours(True, "ssf"), "ssf", torch.bfloat16))
    keyed_row = len(rows)
    rows.append(("ours, SSF, per-sample dropout", ours(True, "ssf"), "ssf", None))

    # ------------------------------------------------------------------ the same batch for every row
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.randn(B, 3, H, W, generator=g).to(dev),
             "pixel_masks": torch.ones(B, H, W, dtype=torch.bool, device=dev),
             "text_ids": torch.randint(1000, 30000, (B, T), generator=g).to(dev),
             "text_masks": torch.ones(B, T, dtype=torch.long, device=dev),
             "labels": torch.randint(0, NUM_CLASSES, (B,), generator=g).to(dev),
             "keys": torch.randint(0, 2**32, (B,), generator=g).to(dev)}

    steps = {}
    for name, model, tuning, amp in rows:
        model.to(dev).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)

        def step(model=model, opt=opt, amp=amp, keyed=name.endswith("per-sample dropout")):
            with torch.autocast(dev, dtype=amp or torch.bfloat16, enabled=amp is not None), \
                    sample_keys(model, batch["keys"] if keyed else None):
                loss = nn.functional.cross_entropy(model(batch), batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def forward(model=model):
            with torch.no_grad():
                model(batch)
        steps[name] = forward if tuning == "forward" else step

    # ------------------------------------------------------------------ interleaved timing
    times = interleaved_times(steps, args.steps, args.warmup, dev)
    sec = [sorted(t)[len(t) // 2] for t in times.values()]

    # ------------------------------------------------------------------ report
    P = (H // cfg.patch_size) * (W // cfg.patch_size)
    hf_frozen = sec[2]
    table = []
    for (name, model, tuning, amp), s in zip(rows, sec):
        fwd, total = step_flops(cfg, B, T, P, tuning)
        row = {"model": name, "dtype": "bf16 autocast" if amp is not None else "fp32",
               "trainable": f"{count_parameters(model, trainable_only=True) / 1e3:.0f}k of "
                            f"{count_parameters(model) / 1e6:.1f}M",
               "s/step": s, "samples/s": B / s, "GFLOP/step": total / 1e9, "step / fwd FLOPs": total / fwd,
               "achieved TFLOP/s": total / s / 1e12}
        if peak is not None:
            row["% of bf16 peak"] = 100 * total / s / 1e12 / peak
        row["speed vs HF frozen"] = hf_frozen / s
        table.append(row)
    device = (f"{torch.cuda.get_device_name()} (bf16 peak {peak:.0f} TFLOP/s)" if dev == "cuda"
              else f"CPU ({torch.get_num_threads()} threads)")
    print(f"ViLT-B/32 training step (forward + backward + AdamW), batch {B}, {H}x{W} ({P} patches), {T} text tokens, "
          f"{device}, torch {torch.__version__}, Python {platform.python_version()}, transformers attention "
          f"{hf.config._attn_implementation}, dropout {args.dropout}, median of {args.steps} steps after "
          f"{args.warmup} warm-up; {load} during the run; total {time.perf_counter() - t_start:.0f} s\n")
    print(markdown_table(pd.DataFrame(table), digits=3))
    print("\nratios of samples/s (>1: first is faster)")
    print(f"  ours SSF / HF frozen:     {hf_frozen / sec[0]:.2f}")
    print(f"  ours frozen / HF frozen:  {hf_frozen / sec[1]:.2f}")
    print(f"  ours SSF / ours frozen:   {sec[1] / sec[0]:.2f}")
    if args.dtype == "bf16":
        print(f"  ours SSF bf16 / SSF fp32: {sec[0] / sec[5]:.2f}")
    print(f"  SSF per-sample dropout / torch dropout: {sec[0] / sec[keyed_row]:.2f}")
    ssf, full = step_flops(cfg, B, T, P, "ssf"), step_flops(cfg, B, T, P, "full")
    ratio = sec[0] / sec[4]
    print("\ntimes (>1: the SSF step takes longer), the analytic FLOP ratio beside")
    print(f"  SSF step / forward:       {ratio:.2f}  (FLOPs {ssf[1] / ssf[0]:.2f}; target <= 2.40: "
          f"{'met' if ratio <= 2.4 else 'NOT met'})")
    print(f"  SSF step / full FT step:  {sec[0] / sec[3]:.2f}  (FLOPs {ssf[1] / full[1]:.2f})")


if __name__ == "__main__":
    main()
