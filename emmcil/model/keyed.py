"""Randomness keyed by sample: dropout, stochastic depth and ViLT's patch sampling drawn from each sample's own key.

In training, the loader gives every sample a 32-bit ``sample_seed``, a function of (seed, phase, epoch, index) only
(:mod:`emmcil.engine.loaders`), and the Lightning module trains each batch inside :func:`sample_keys`. There every
:class:`SampleKeyed` module (:class:`KeyedDropout`, :class:`KeyedDropPath`, :class:`PatchSampler`) takes the bit of
element (b, i, j, ...) from a hash of (key of sample b, the module's ``site``, i, j, ...) instead of torch's RNG
stream. The coordinates are the element's place within its own sample (token position, channel), which batch
padding does not move: text tokens first, then the valid image tokens, padding last, and tokens appended after the
padded image part (prompts) numbered apart (:func:`token_positions`). So a sample gets the same masks in a batch of
32 on one device, in 4 batches of 8 on 4 devices or in 4 accumulation steps of 8: with the loader's order, the run's
numbers do not depend on how its batches are spread (docs/experiments.md, "Reproducibility").

Outside :func:`sample_keys` (no keys: a model used on its own, the tests) the modules draw from torch's RNG as
``nn.Dropout`` and timm's ``DropPath`` do. The hash: two rounds of a 32-bit multiply-xorshift mixer (the
``0x45d9f3b`` constant of Thomas Mueller's integer hash) per coordinate, in int64 arithmetic that never overflows.
"""
from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

M32 = 0xFFFFFFFF
_MULT = 0x45D9F3B  # < 2**27: a product with a 32-bit value stays below 2**59
_MULT2 = 0x7FEB352D  # odd, < 2**31: a product with a 32-bit value stays below 2**63
APPENDED = 1 << 20  # token positions of tokens appended after the (padded) image part start here
PREFIX = 1 << 21    # attention columns of prefix keys (prefix tuning) start here


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash of int64 values in [0, 2**32); same shape, values in [0, 2**32)."""
    x = ((x >> 16) ^ x) * _MULT & M32
    x = ((x >> 16) ^ x) * _MULT & M32
    return (x >> 16) ^ x


def mix32_int(x: int) -> int:
    """:func:`mix32` of one Python int (no tensor: nothing to trace or sync)."""
    x &= M32
    x = ((x >> 16) ^ x) * _MULT & M32
    x = ((x >> 16) ^ x) * _MULT & M32
    return (x >> 16) ^ x


def keyed_bits(keys: torch.Tensor, site: int, coords: Sequence[torch.Tensor]) -> torch.Tensor:
    """32 random bits per element, as int64 in [0, 2**32): keys (B,) int64; coords: int64 tensors in [0, 2**32),
    each of rank 1 + its dimension count, broadcasting against (B, ...) (e.g. (1, N, 1) token positions, then
    (1, 1, C) channels). Returns (B, *broadcast shape)."""
    h = mix32((keys.to(torch.int64) & M32) ^ (site & M32))
    for c in coords:
        h = h.reshape(h.shape + (1,) * (c.dim() - h.dim()))
        h = mix32(h ^ c)
    return h


def keep_mask(bits: torch.Tensor, p: float) -> torch.Tensor:
    """bool: True where ``bits`` (uniform in [0, 2**32)) fall at or above ``p`` of the range (probability 1 - p)."""
    return bits >= int(round(p * 2**32))


@dataclass
class SampleState:
    """What :func:`sample_keys` hands its modules: ``keys`` (B,) int64 and, while a ViLT runs its blocks, the
    padding-invariant position of every token of the joint sequence (``token_ids`` (N,) int64)."""

    keys: torch.Tensor
    token_ids: torch.Tensor | None = None

    def row_keys(self, rows: int) -> torch.Tensor:
        """The keys of ``rows`` rows: the batch's own, or for a batch stacked k times (EASE runs its subspaces that
        way), copy j of sample b keyed by (key_b, j). ValueError for any other row count."""
        B = self.keys.shape[0]
        if rows == B:
            return self.keys
        if B and rows % B == 0:
            copy = torch.arange(rows, device=self.keys.device) // B
            return mix32((self.keys.repeat(rows // B) & M32) ^ copy)
        raise ValueError(f"sample keys for {B} samples, but a layer ran on {rows} rows: a method that runs the "
                         f"backbone on other rows than the batch's (copies, subsets) gives them keys with "
                         f"emmcil.model.keyed.sample_keys")


class SampleKeyed(nn.Module):
    """A module whose random draws come from its ``state`` (set by :func:`sample_keys`) when there is one."""

    def __init__(self):
        super().__init__()
        self.state: SampleState | None = None
        self.site: int | None = None  # a hash of the module's name, given by the first sample_keys


class KeyedDropout(SampleKeyed):
    """``nn.Dropout(p)``; inside :func:`sample_keys`, element (b, n, c) of a (B, N, C...) input is kept by the bits
    of (key_b, site, token position n, c...), the token positions those of the joint sequence when N is its length
    (:attr:`SampleState.token_ids`), else 0..N-1."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p}: expected [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.state is None:
            return F.dropout(x, self.p, True)
        ids = self.state.token_ids
        if x.dim() < 2 or ids is None or ids.shape[0] != x.shape[1]:
            ids = None
        return keyed_dropout(x, self.p, self.state.row_keys(x.shape[0]), self.site or 0, ids)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def keyed_mask(keys: torch.Tensor, site: int, row_coords: Sequence[torch.Tensor], last: torch.Tensor,
               p: float) -> torch.Tensor:
    """bool keep mask (B, ..., L), True with probability 1 - p: each row (b, ...) gets :func:`keyed_bits` of
    (keys[b], site, ``row_coords``), and element l of it the row's bits mixed with those of coordinate ``last[l]``
    (two multiply-xorshift rounds: as few full-size passes as the mask allows; masks of different rows are as
    uncorrelated as torch's)."""
    row = keyed_bits(keys, site, row_coords).unsqueeze(-1)
    t = (row ^ mix32((last.to(torch.int64) & M32) ^ mix32_int(site))) * _MULT2 & M32
    t = (t ^ (t >> 16)) * _MULT2 & M32
    return t >= int(round(p * 2**32))


def keyed_dropout(x: torch.Tensor, p: float, keys: torch.Tensor, site: int,
                  positions: torch.Tensor | None = None) -> torch.Tensor:
    """Dropout of x (B, d1, ..., dk) with the bits of (keys[b], site, coordinates); ``positions`` (d1,) replaces
    0..d1-1 as the coordinates of the first axis after the batch."""
    dims = x.shape[1:]
    coords = []
    for d, n in enumerate(dims[:-1]):
        c = positions if d == 0 and positions is not None else torch.arange(n, device=x.device)
        coords.append(c.to(device=x.device, dtype=torch.int64).reshape((1,) * (d + 1) + (n,)))
    last = positions if len(dims) == 1 and positions is not None else torch.arange(dims[-1], device=x.device)
    keep = keyed_mask(keys.to(x.device), site, coords, last.to(x.device), p)
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


class KeyedDropPath(SampleKeyed):
    """Stochastic depth (timm's ``DropPath``: a whole residual branch dropped per sample, the rest scaled by
    1 / (1 - p)); inside :func:`sample_keys`, sample b's draw is the bits of (key_b, site)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        if self.state is None:
            keep = x.new_empty(shape).bernoulli_(1.0 - self.p)
        else:
            bits = keyed_bits(self.state.row_keys(x.shape[0]).to(x.device), self.site or 0, ())
            keep = keep_mask(bits, self.p).to(x.dtype).view(shape)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"drop_prob={self.p}"


class PatchSampler(SampleKeyed):
    """ViLT's training-time patch sampling (``max_image_len``): a uniform number in [0, 1) per patch, from torch's
    RNG, or inside :func:`sample_keys` from (key_b, site, row, column) of the patch on its image grid."""

    def uniform(self, index: torch.Tensor) -> torch.Tensor:
        """(B, G) floats in [0, 1) for patches at grid cells ``index`` (B, G, 2) long (row, col)."""
        if self.state is None:
            return torch.rand(index.shape[:2], device=index.device)
        cells = index.clamp_min(0).to(torch.int64)
        bits = keyed_bits(self.state.row_keys(index.shape[0]).to(index.device), self.site or 0,
                          (cells[..., 0], cells[..., 1]))
        return bits.to(torch.float64).div(2**32).to(torch.float32)


def token_positions(text_len: int, image_tokens: int, appended: int, device=None) -> torch.Tensor:
    """(text_len + image_tokens + appended,) int64: where each token of a joint sequence sits in its sample whatever
    the batch's padding: text 0..T-1, image [CLS] and patches T.. (valid patches come first), and tokens appended
    after the padded image part (prompts) from :data:`APPENDED` on."""
    return torch.cat([torch.arange(text_len + image_tokens, device=device),
                      APPENDED + torch.arange(appended, device=device)])


def keyed_modules(module: nn.Module) -> list[SampleKeyed]:
    """Every :class:`SampleKeyed` of ``module``, each given its ``site`` (a hash of its name) if it has none."""
    found = []
    for name, m in module.named_modules():
        if isinstance(m, SampleKeyed):
            if m.site is None:
                m.site = zlib.crc32(name.encode())
            found.append(m)
    return found


def current_state(module: nn.Module) -> SampleState | None:
    """The :class:`SampleState` that :func:`sample_keys` gave ``module``'s keyed modules, or None."""
    for m in module.modules():
        if isinstance(m, SampleKeyed):
            return m.state
    return None


@contextlib.contextmanager
def sample_keys(module: nn.Module, keys: torch.Tensor | None) -> Iterator[SampleState | None]:
    """Within the block, the random draws of ``module``'s keyed modules come from ``keys`` (B,) (one per sample of
    the batch it runs); ``keys=None`` leaves them to torch's RNG. What they drew from before is restored on exit,
    so a method may key a derived batch (copies, subsets) inside the training step's block. ``module`` keeps one
    :class:`SampleState` whose fields change from batch to batch (a compiled backbone sees the same object)."""
    if keys is None:
        yield None
        return
    modules = keyed_modules(module)
    state = module.__dict__.get("_sample_state")
    if state is None:
        state = module.__dict__["_sample_state"] = SampleState(keys)
    previous = [m.state for m in modules]
    saved = state.keys, state.token_ids
    state.keys, state.token_ids = keys.to(torch.int64), None
    for m in modules:
        m.state = state
    try:
        yield state
    finally:
        state.keys, state.token_ids = saved
        for m, old in zip(modules, previous):
            m.state = old
