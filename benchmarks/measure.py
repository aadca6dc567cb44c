"""What the benchmark scripts share: the ViLT forward's analytic FLOPs, its matmul roofline, interleaved timing.

FLOPs of one forward (multiply-adds x 2; B samples, N = T text + 1 + P patch tokens, width C, L layers, MLP width
M = mlp_ratio x C, p = patch size, K classes of a linear head, 0 for the backbone alone)::

    F = 2 B [ L (4C^2 + 2CM) N  +  3 p^2 C P  +  C^2 + C K ]  +  4 B L N^2 C
             (qkv, proj, fc1, fc2) (patch embed) (pooler, head)  (Q K^T and A V)

LayerNorms, GELU, softmax, residual adds and embedding lookups are not counted: they are what separates a forward
from its **roofline**, the same matrix products run back to back (:func:`matmul_chain`), which is as fast as this
machine's GEMMs go at these shapes.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from emmcil.model import ViLTConfig


def forward_flops(cfg: ViLTConfig, B: int, T: int, P: int, num_classes: int = 0) -> float:
    """FLOPs of one forward of ``B`` samples with ``T`` text tokens and ``P`` patches (module docstring)."""
    C, L, p = cfg.hidden_size, cfg.num_layers, cfg.patch_size
    M = int(C * cfg.mlp_ratio)
    N = T + 1 + P
    blocks = 2 * B * L * (4 * C * C + 2 * C * M) * N
    attention = 4 * B * L * N * N * C
    patch_embed = 2 * B * 3 * p * p * C * P
    top = 2 * B * (C * C + C * num_classes)
    return float(blocks + attention + patch_embed + top)


def matmul_chain(cfg: ViLTConfig, B: int, T: int, P: int, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> Callable[[], None]:
    """A function that runs the forward's matrix products only, with its shapes, on random operands made once:
    the patch embedding as (B P, 3 p^2) x (3 p^2, C), then per layer (B N, C) x (C, 3C), per head (N, d) x (d, N)
    and (N, N) x (N, d), (B N, C) x (C, C), (B N, C) x (C, M), (B N, M) x (M, C), and the pooler. Its FLOPs are
    :func:`forward_flops`'s (K = 0)."""
    C, L, H, p = cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.patch_size
    M, N, d = int(C * cfg.mlp_ratio), T + 1 + P, cfg.hidden_size // cfg.num_heads
    g = torch.Generator(device=device).manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=dtype)

    patches, w_patch = rand(B * P, 3 * p * p), rand(3 * p * p, C)
    x, h = rand(B * N, C), rand(B * N, M)
    w_qkv, w_proj, w_fc1, w_fc2 = rand(C, 3 * C), rand(C, C), rand(C, M), rand(M, C)
    q, k_t, attn, v = rand(B * H, N, d), rand(B * H, d, N), rand(B * H, N, N), rand(B * H, N, d)
    cls, w_pool = rand(B, C), rand(C, C)

    def run() -> None:
        patches @ w_patch
        for _ in range(L):
            x @ w_qkv
            torch.bmm(q, k_t)
            torch.bmm(attn, v)
            x @ w_proj
            x @ w_fc1
            h @ w_fc2
        cls @ w_pool
    return run


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                      device: str = "cpu") -> dict[str, list[float]]:
    """Seconds of every call: ``warmup`` untimed rounds, then ``rounds`` rounds, each calling every function once
    in turn, so that a disturbance from other processes (or clock changes) hits every row alike."""
    times = {name: [] for name in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


# Dense bf16 tensor-core peak (TFLOP/s, no sparsity), matched against torch.cuda.get_device_name() in this order.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
                    ("A100", 312.0)]


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the GPU called ``name`` (``torch.cuda.get_device_name()``), None if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops
    return None
