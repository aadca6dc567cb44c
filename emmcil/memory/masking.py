"""Exemplar masking: which image patches and which words of a sample to keep, from the model's attention.

Paper (Fig. 3): the attention of the class token to the image, A_{CLS->I}, thresholded by tau_I gives the image
mask M_I; the attention from the *discarded* image tokens to the text, A_{I->T}, thresholded by tau_T gives the text
mask M_T, so that words describing what the masked image lost survive in the text. [CLS] and [SEP] are always kept,
outside the normalisation. What the paper leaves open is a field of :class:`MaskingConfig` (which layers and heads,
whose [CLS], how tau selects: :func:`select`); the defaults and why:
docs/method.md#the-method-and-what-we-chose-where-the-paper-is-silent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from emmcil.data.transforms import pixelbert_resize
from emmcil.model.vilt import ViLTOutput, cheapest_pack

from emmcil.settings.checks import CLS_TOKENS, NORMS, check_masking  # noqa: F401

from .exemplar import black_value



@dataclass
class MaskingConfig:
    tau_image: float = 0.74
    tau_text: float = 0.5
    layers: Sequence[int] = (-1,)
    layer_reduce: str = "mean"
    head_reduce: str = "mean"
    norm: str = "ratio"
    cls_token: str = "text"

    def __post_init__(self):
        check_masking(self.tau_image, self.tau_text, self.layer_reduce, self.head_reduce, self.norm, self.cls_token)


@dataclass
class Masks:
    """Masks over the token slots of a :class:`ViLTOutput` (P = its number of image-token slots)."""

    patch_keep: torch.Tensor     # (B, P) bool, kept image patches (False on padding slots)
    text_keep: torch.Tensor      # (B, T) bool, kept text tokens (False on padding)
    image_scores: torch.Tensor   # (B, P) normalised A_{CLS->I} (0 on padding), the map of Fig. 4
    text_scores: torch.Tensor    # (B, T) normalised A_{I->T} from the discarded patches (0 on [CLS], [SEP], padding)

    def patch_grid(self, out: ViLTOutput, grid_shape: tuple[int, int]) -> torch.Tensor:
        """Kept patches as a (B, rows, cols) bool grid, the ``patch_keep`` input of :class:`ViLT`."""
        B = self.patch_keep.shape[0]
        grid = torch.zeros(B, *grid_shape, dtype=torch.bool, device=self.patch_keep.device)
        b, slot = self.patch_keep.nonzero(as_tuple=True)
        rc = out.patch_index[b, slot]
        grid[b, rc[:, 0], rc[:, 1]] = True
        return grid


def reduce_attention(attentions: Sequence[torch.Tensor], cfg: MaskingConfig) -> torch.Tensor:
    """Per-layer (B, heads, N, N) maps -> one (B, N, N) map by the configured layers, head and layer reduction."""
    n = len(attentions)
    if any(not -n <= i < n for i in cfg.layers):
        raise ValueError(f"mask layers {list(cfg.layers)} out of range for a {n}-layer model")
    picked = [attentions[i] for i in cfg.layers] if cfg.layers else list(attentions)
    if any(a is None for a in picked):
        raise ValueError(f"the attention of mask layers {list(cfg.layers)} was not returned: call the model with "
                         f"return_attention={list(cfg.layers)}")
    heads = [a.float().amax(1) if cfg.head_reduce == "max" else a.float().mean(1) for a in picked]
    if cfg.layer_reduce == "mean":
        return torch.stack(heads).mean(0)
    N = heads[0].shape[-2]
    eye = torch.eye(N, device=heads[0].device)
    rollout = None
    for a in heads:
        a = 0.5 * a[..., :N] + 0.5 * eye  # token-to-token only: prefix keys (prompt methods) carry no identity
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def _descending(scores: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, rank), both (B, n) long: entries by decreasing score, valid ones first, ties in index order; rank[b, i]
    = the place of entry i in that order."""
    order = scores.masked_fill(~valid, -math.inf).argsort(dim=1, descending=True, stable=True)
    places = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return order, torch.empty_like(order).scatter_(1, order, places)


def _mass_above(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, n) float64: the share of a row's valid mass held by the entries ranked strictly above each entry."""
    s = scores.double().masked_fill(~valid, 0.0)
    order, _ = _descending(s, valid)
    ranked = s.gather(1, order)
    above = (ranked.cumsum(1) - ranked) / ranked.sum(1, keepdim=True).clamp_min(1e-300)
    return torch.empty_like(above).scatter_(1, order, above)


def normalise(scores: torch.Tensor, valid: torch.Tensor, norm: str) -> torch.Tensor:
    """(B, n) scores -> values in [0, 1] over each row's valid entries, 0 on invalid ones (the map of Fig. 4).

    ``minmax``: (s - min) / (max - min) (all 1 when the row is constant); ``mass``: 1 - (share of the mass held
    by entries ranked above); ``ratio``: 1 - rank / n. The top entry gets 1.
    """
    s = scores.float().masked_fill(~valid, 0.0)
    if norm == "minmax":
        lo = s.masked_fill(~valid, math.inf).amin(1, keepdim=True)
        hi = s.masked_fill(~valid, -math.inf).amax(1, keepdim=True)
        span = (hi - lo)
        out = torch.where(span > 0, (s - lo) / span.clamp_min(1e-12), torch.ones_like(s))
    elif norm == "mass":
        out = 1.0 - _mass_above(s, valid).float()
    else:
        _, rank = _descending(s, valid)
        out = 1.0 - rank.float() / valid.sum(1, keepdim=True).clamp_min(1)
    return out.masked_fill(~valid, 0.0)


def select(scores: torch.Tensor, valid: torch.Tensor, norm: str, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of each row's valid entries tau keeps, and the normalised scores: ``(keep (B, n) bool, normalise(...))``.

    ``minmax``: normalised score >= tau. ``ratio``: the top ceil((1 - tau) n) of the row's n valid entries (10 words
    at tau = 0.5 keep exactly 5). ``mass``: the fewest top entries holding at least 1 - tau of the row's mass, i.e.
    an entry is kept iff the entries ranked above it hold less than 1 - tau. tau = 0 keeps every valid entry.
    Counts and shares are compared with a small tolerance (1e-9 of a count, 1e-6 of the mass), so that float
    rounding does not add an entry: (1 - 0.7) * 10 = 3.0000000000000004 keeps 3, not 4.
    """
    shown = normalise(scores, valid, norm)
    if tau <= 0:
        keep = valid.clone()
    elif norm == "minmax":
        keep = valid & (shown >= tau)
    elif norm == "ratio":
        _, rank = _descending(scores.float(), valid)
        count = torch.ceil((1.0 - tau) * valid.sum(1, keepdim=True).double() - 1e-9)
        keep = valid & (rank < count)
    else:
        keep = valid & (_mass_above(scores, valid) < (1.0 - tau) - 1e-6)  # float32 attention: 1e-6 of the mass
    return keep, shown


def compute_masks(out: ViLTOutput, text_ids: torch.Tensor, cfg: MaskingConfig,
                  always_keep_ids: Sequence[int] = (101, 102)) -> Masks:
    """Image and text masks of a batch from ``out = model(..., return_attention=True)`` (eval mode).

    M_I: the patches that tau_I selects (:func:`select`) by A_{CLS->I}, the attention of the text [CLS] (position
    0) or of the image [CLS] (position T; ``cfg.cls_token``) to the patches. M_T: the words (valid text tokens
    other than ``always_keep_ids``, [CLS] and [SEP]) that tau_T selects by their mean attention from the discarded
    patches (over those patches and heads), plus the ``always_keep_ids`` tokens, which take no part in the
    normalisation.
    A sample with no discarded patch keeps its whole text (no image context was lost).
    """
    if out.attentions is None:
        raise ValueError("compute_masks needs the attention maps: call the model with return_attention=True")
    T, P = out.text_len, out.num_patches
    attn = reduce_attention(out.attentions, cfg)                     # (B, N, N [+ prefix])
    text_valid = out.masks[:, :T]
    patch_valid = out.image_masks
    patches = slice(T + 1, T + 1 + P)

    cls = 0 if cfg.cls_token == "text" else T
    patch_keep, image_scores = select(attn[:, cls, patches], patch_valid, cfg.norm, cfg.tau_image)

    discarded = (patch_valid & ~patch_keep).float()                  # (B, P)
    n_discarded = discarded.sum(1, keepdim=True)
    from_discarded = (discarded[:, :, None] * attn[:, patches, :T]).sum(1) / n_discarded.clamp_min(1)
    special = text_valid & torch.isin(text_ids, torch.tensor(list(always_keep_ids), device=text_ids.device))
    words = text_valid & ~special
    text_keep, text_scores = select(from_discarded, words, cfg.norm, cfg.tau_text)
    text_keep |= words & (n_discarded == 0)
    text_keep |= special
    return Masks(patch_keep=patch_keep, text_keep=text_keep, image_scores=image_scores, text_scores=text_scores)


def score_grid(out: ViLTOutput, scores: torch.Tensor, grid_shape: tuple[int, int]) -> torch.Tensor:
    """Per-slot patch values (B, P) placed on a (B, rows, cols) grid by ``out.patch_index`` (0 elsewhere)."""
    B = scores.shape[0]
    grid = torch.zeros(B, *grid_shape, dtype=scores.dtype, device=scores.device)
    valid = out.patch_index[..., 0] >= 0
    b, slot = valid.nonzero(as_tuple=True)
    rc = out.patch_index[b, slot]
    grid[b, rc[:, 0], rc[:, 1]] = scores[b, slot]
    return grid


@torch.no_grad()
def masking_step(backbone, batch: dict, cfg: MaskingConfig, grid_shape: tuple[int, int],
                 always_keep_ids: Sequence[int] = (101, 102), masked_replay: str = "patches"
                 ) -> dict[str, torch.Tensor]:
    """Mask one collated batch and encode it twice, with the backbone in eval mode: the full sample returning the
    attention of ``cfg.layers`` only, then the masked sample as it will be replayed (``masked_replay``): over its
    kept tokens only (``"patches"``, packed), or its whole grid with the discarded patches black (``"black"``) and
    its kept words; both forwards compute only what the pooled features need (``pooled_only``).

    Returns per-sample tensors of fixed shapes, so that batches concatenate: ``features`` (B, C) f(x),
    ``masked_features`` (B, C) f(x~), ``patch_keep`` (B, R, C') bool and ``image_scores`` (B, R, C') float on a
    ``grid_shape`` = (R, C') canvas at least as large as any image's patch grid, ``text_keep`` (B, T) bool.
    Runs in float32 even inside an autocast region, so masks do not depend on the training precision.
    """
    # float32 throughout, whatever the surrounding autocast: masks compare attention with thresholds, and must not
    # change with the training precision (the backbone's weights are float32 under Lightning's mixed precision)
    with torch.autocast(device_type=batch["images"].device.type, enabled=False):
        return _masking_step(backbone, batch, cfg, grid_shape, always_keep_ids, masked_replay)


def _masking_step(backbone, batch, cfg, grid_shape, always_keep_ids, masked_replay="patches"):
    layers = list(cfg.layers) if cfg.layers else True
    ids, text_masks, images = batch["text_ids"], batch["text_masks"], batch["images"].float()
    out = backbone(ids, text_masks, images, batch["pixel_masks"], patch_keep=batch.get("patch_keep"),
                   return_attention=layers, pooled_only=True)
    masks = compute_masks(out, ids, cfg, always_keep_ids)
    p = backbone.cfg.patch_size
    Hg, Wg = images.shape[-2] // p, images.shape[-1] // p
    if Hg > grid_shape[0] or Wg > grid_shape[1]:
        raise ValueError(f"images of {Hg}x{Wg} patches do not fit the {grid_shape} mask canvas")
    keep = masks.patch_grid(out, grid_shape)
    if masked_replay == "black":  # the whole grid, the discarded patches black, as a black-filled image is fed
        cells = keep[:, :Hg, :Wg].repeat_interleave(p, 1).repeat_interleave(p, 2)
        black = images.masked_fill(~cells[:, None], float(black_value(images)[0, 0]))
        masked = backbone(ids, masks.text_keep.long(), black, batch["pixel_masks"], patch_keep=batch.get("patch_keep"),
                          pooled_only=True)
    else:
        # the masked sample's forward runs its kept tokens only (dropped words and patches take no slot), packed
        # into rows: its cost follows the kept fraction, not the batch's longest sample
        kept = (masks.text_keep.sum(1) + masks.patch_keep.sum(1) + 1).tolist()  # + the image [CLS]
        masked = backbone(ids, masks.text_keep.long(), images, batch["pixel_masks"], patch_keep=keep[:, :Hg, :Wg],
                          pack=cheapest_pack(kept, backbone.cfg.hidden_size), pooled_only=True)
    return {"features": out.pooled.float(), "masked_features": masked.pooled.float(), "patch_keep": keep,
            "image_scores": score_grid(out, masks.image_scores, grid_shape), "text_keep": masks.text_keep}


def mask_canvas(image_size: int, patch_size: int) -> tuple[int, int]:
    """The largest patch grid ``pixelbert_transform(image_size, patch_size)`` can produce, as (rows, cols): its
    longer side's cap in patches, either way round."""
    longest = pixelbert_resize(image_size, patch_size).longer // patch_size
    return longest, longest
