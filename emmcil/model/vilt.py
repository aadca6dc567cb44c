"""ViLT (Kim et al., ICML'21) re-written for exemplar masking, with SSF.

Parameter names follow the original ``dandelin/ViLT`` module tree (``text_embeddings.*``, ``token_type_embeddings``,
``transformer.{cls_token,pos_embed,patch_embed.proj,blocks.i.*,norm}``, ``pooler.dense``), so the released
``vilt_200k_mlm_itm.ckpt`` loads by name (see :mod:`emmcil.model.checkpoint`). SSF parameters live in extra
``ssf_*`` sub-modules and never clash with checkpoint keys.

The joint sequence is ``[text tokens (T) | image CLS (1) | image patches (P)]``; the pooled feature is
``tanh(pooler(norm(x)[:, 0]))``, i.e. taken at the *text* [CLS].

Differences from the original, all deliberate:
- the image padding mask is an explicit ``pixel_masks`` input (ViLT read it off ``pixels.sum() != 0``, which would
  mistake black exemplar patches for padding), and an optional ``patch_keep`` mask drops further patches;
- at evaluation, image tokens are the valid patches in row-major order (ViLT shuffled them with
  ``torch.multinomial`` even at test time); random sampling happens only in training with ``max_image_len > 0``;
- a second image entry point embeds a stored subset of patches (``patches`` + ``patch_index`` + ``grid_sizes``),
  which is how masked exemplars are replayed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings

from .ssf import maybe_ssf

TEXT_TYPE, IMAGE_TYPE = 0, 1


@dataclass
class ViLTConfig:
    """Sizes and regularisation of the backbone. Defaults are ViLT-B/32 (``vit_base_patch32_384``)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 32
    image_size: int = 384          # pos_embed covers (image_size / patch_size)^2 patches, interpolated per image
    max_text_len: int = 40
    max_image_len: int = -1        # training patch budget; -1 keeps every patch
    drop_rate: float = 0.1
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    qkv_bias: bool = True
    ssf: bool = True

    @classmethod
    def from_dict(cls, cfg: Mapping) -> "ViLTConfig":
        """Pick this dataclass's fields out of a larger (sacred) config; other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: cfg[k] for k in names if k in cfg})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class ViLTOutput:
    """What :meth:`ViLT.forward` returns. N = T + 1 + P tokens (+ E extra tokens when given)."""

    pooled: torch.Tensor                 # (B, C) tanh(pooler(hidden[:, 0]))
    hidden: torch.Tensor                 # (B, N, C) after the final norm (and its SSF)
    masks: torch.Tensor                  # (B, N) bool, True = token attended to
    text_len: int                        # T; the image CLS is token T, patches start at T + 1
    patch_index: torch.Tensor            # (B, P, 2) (row, col) of each image token on its grid; -1 for padding
    grid_sizes: torch.Tensor             # (B, 2) (rows, cols) of each image's patch grid
    attentions: tuple[torch.Tensor | None, ...] | None = None  # per layer (B, heads, N, N) float32; None if not asked
    num_extra: int = 0                   # E extra tokens (input prompts) at the end: N = T + 1 + P + E

    @property
    def num_patches(self) -> int:
        return self.patch_index.shape[1]

    @property
    def image_masks(self) -> torch.Tensor:
        """(B, P) bool: which image-patch tokens are real."""
        return self.masks[:, self.text_len + 1:self.text_len + 1 + self.num_patches]


class Attention(nn.Module):
    ssf_pairs = (("qkv", "ssf_qkv"), ("proj", "ssf_proj"))

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float, ssf: bool):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.ssf_qkv = maybe_ssf(ssf, dim * 3)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.ssf_proj = maybe_ssf(ssf, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, N, C), mask (B, N) bool over keys -> (B, N, C), attention (B, heads, N, N + Lp) float32 or None.

        prefix: (keys, values), each (B, Lp, C), appended to this layer's keys and values after the projection
        (prefix tuning, as DualPrompt / CODA-Prompt / RebQ); always attended to. They come *after* the N tokens,
        so attention columns [:N] keep the token order.
        """
        B, N, C = x.shape
        H = self.num_heads
        qkv = self.ssf_qkv(self.qkv(x)).reshape(B, N, 3, H, C // H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if prefix is not None:
            pk, pv = (t.to(k.dtype).reshape(B, -1, H, C // H).transpose(1, 2) for t in prefix)
            k, v = torch.cat([k, pk], dim=2), torch.cat([v, pv], dim=2)
            mask = torch.cat([mask, mask.new_ones(B, pk.shape[2])], dim=1)
        key_mask = mask[:, None, None, :]
        drop = self.attn_drop if self.training else 0.0
        attn = None
        if need_weights:
            # float32 softmax: the maps feed thresholds, so they must not depend on the autocast dtype
            scores = (q.float() * self.scale) @ k.float().transpose(-2, -1)
            attn = scores.masked_fill(~key_mask, float("-inf")).softmax(dim=-1)
            x = F.dropout(attn, drop, self.training).to(v.dtype) @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=drop)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.ssf_proj(self.proj(x))), attn


class Mlp(nn.Module):
    ssf_pairs = (("fc1", "ssf_fc1"), ("fc2", "ssf_fc2"))

    def __init__(self, dim: int, hidden: int, drop: float, ssf: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.ssf_fc1 = maybe_ssf(ssf, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.ssf_fc2 = maybe_ssf(ssf, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.ssf_fc1(self.fc1(x))))
        return self.drop(self.ssf_fc2(self.fc2(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm / ViLT), with SSF after norm1, qkv, proj, norm2, fc1 and fc2."""

    ssf_pairs = (("norm1", "ssf_norm1"), ("norm2", "ssf_norm2"))

    def __init__(self, cfg: ViLTConfig, drop_path: float):
        super().__init__()
        dim = cfg.hidden_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.ssf_norm1 = maybe_ssf(cfg.ssf, dim)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate, cfg.ssf)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ssf_norm2 = maybe_ssf(cfg.ssf, dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate, cfg.ssf)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False, prefix=None,
                adapter: nn.Module | None = None):
        """adapter: a module run in parallel to the MLP on the residual stream before ``norm2`` (the MLP's input
        before its norm), its output added outside drop-path: AdaptFormer's parallel adapter as PILOT's EASE runs
        it (``backbone/vit_ease.py`` ``Block.forward``: ``adapt(x, add_residual=False)`` on that ``x``)."""
        y, attn = self.attn(self.ssf_norm1(self.norm1(x)), mask, need_weights, prefix)
        x = x + self.drop_path(y)
        out = x + self.drop_path(self.mlp(self.ssf_norm2(self.norm2(x))))
        if adapter is not None:
            out = out + adapter(x)
        return out, attn


class PatchEmbed(nn.Module):
    ssf_pairs = (("proj", "ssf"),)

    def __init__(self, patch_size: int, dim: int, ssf: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.ssf = maybe_ssf(ssf, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H // p, W // p)."""
        return self.ssf(self.proj(images))


class VisionTransformer(nn.Module):
    """The image side and the shared encoder of ViLT (``transformer.*`` in the checkpoint)."""

    ssf_pairs = (("norm", "ssf_norm"),)

    def __init__(self, cfg: ViLTConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.hidden_size
        self.patch_embed = PatchEmbed(cfg.patch_size, dim, cfg.ssf)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.grid ** 2, dim))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.num_layers).tolist()
        self.blocks = nn.ModuleList([Block(cfg, dpr[i]) for i in range(cfg.num_layers)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.ssf_norm = maybe_ssf(cfg.ssf, dim)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)

    def grid_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """Patch position embeddings bilinearly resized (align_corners, as ViLT) to a rows x cols grid: (C, rows, cols)."""
        g, C = self.cfg.grid, self.pos_embed.shape[-1]
        spatial = self.pos_embed[0, 1:].transpose(0, 1).reshape(1, C, g, g)
        return F.interpolate(spatial, size=(rows, cols), mode="bilinear", align_corners=True)[0]

    def _pos_for_grids(self, grid_sizes: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
        return {(r, c): self.grid_pos_embed(r, c) for r, c in {tuple(s) for s in grid_sizes.tolist()}}

    def embed_images(self, images: torch.Tensor, pixel_masks: torch.Tensor | None = None,
                     patch_keep: torch.Tensor | None = None):
        """Padded images -> patch tokens with position embeddings, before selection.

        images (B, 3, H, W); pixel_masks (B, H, W) bool, True = real pixel (None: all real);
        patch_keep (B, H//p, W//p) bool, False drops a real patch. Returns tokens (B, G, C), valid (B, G) bool,
        patch_index (B, G, 2) and grid_sizes (B, 2), with G = (H//p) * (W//p) in row-major order.
        """
        x = self.patch_embed(images)
        B, C, Hg, Wg = x.shape
        if pixel_masks is None:
            valid = torch.ones(B, Hg, Wg, dtype=torch.bool, device=x.device)
        else:
            # nearest resampling of the pixel mask onto the patch grid, as ViLT's visual_embed
            valid = F.interpolate(pixel_masks[:, None].float(), size=(Hg, Wg)).bool()[:, 0]
        grid_sizes = torch.stack([valid[:, :, 0].sum(1), valid[:, 0, :].sum(1)], dim=1)  # padding is bottom/right
        pos = x.new_zeros(B, C, Hg, Wg)
        for (r, c), p in self._pos_for_grids(grid_sizes).items():
            sel = (grid_sizes[:, 0] == r) & (grid_sizes[:, 1] == c)
            pos[sel, :, :r, :c] = p.to(pos.dtype)
        if patch_keep is not None:
            if patch_keep.shape != valid.shape:
                raise ValueError(f"patch_keep has shape {tuple(patch_keep.shape)}, expected the patch grid "
                                 f"{tuple(valid.shape)} of images {tuple(images.shape)}")
            valid = valid & patch_keep.bool()
        rows, cols = torch.meshgrid(torch.arange(Hg, device=x.device), torch.arange(Wg, device=x.device),
                                    indexing="ij")
        index = torch.stack([rows, cols], dim=-1).reshape(1, Hg * Wg, 2).expand(B, -1, -1)
        tokens = (x + pos).flatten(2).transpose(1, 2)
        return tokens, valid.flatten(1), index, grid_sizes

    def embed_patches(self, patches: torch.Tensor, patch_index: torch.Tensor, grid_sizes: torch.Tensor,
                      patch_masks: torch.Tensor | None = None):
        """Stored patch subsets -> tokens. patches (B, K, 3, p, p) normalised pixels; patch_index (B, K, 2) long
        (row, col); grid_sizes (B, 2) the full image's grid; patch_masks (B, K) bool (False = slot unused).
        Returns tokens (B, K, C), valid (B, K), patch_index, grid_sizes as :meth:`embed_images`.
        """
        B, K = patches.shape[:2]
        p = self.cfg.patch_size
        if patches.shape[2:] != (3, p, p):
            raise ValueError(f"patches must be (B, K, 3, {p}, {p}), got {tuple(patches.shape)}")
        x = self.patch_embed(patches.reshape(B * K, 3, p, p)).reshape(B, K, -1)
        valid = torch.ones(B, K, dtype=torch.bool, device=x.device) if patch_masks is None else patch_masks.bool()
        rows, cols = patch_index.unbind(-1)
        outside = valid & ((rows < 0) | (cols < 0) | (rows >= grid_sizes[:, :1]) | (cols >= grid_sizes[:, 1:]))
        if outside.any():
            b = int(outside.nonzero()[0, 0])
            raise ValueError(f"sample {b}: patch_index outside its grid {tuple(grid_sizes[b].tolist())}")
        pos = x.new_zeros(x.shape)
        for (r, c), grid_pos in self._pos_for_grids(grid_sizes).items():
            sel = (grid_sizes[:, 0] == r) & (grid_sizes[:, 1] == c)
            flat = (rows[sel].clamp(0, r - 1) * c + cols[sel].clamp(0, c - 1))  # unused slots read a dummy
            pos[sel] = grid_pos.flatten(1).transpose(0, 1)[flat].to(pos.dtype)
        return x + pos, valid, patch_index, grid_sizes

    def select_tokens(self, tokens: torch.Tensor, valid: torch.Tensor, index: torch.Tensor,
                      max_image_len: int = -1):
        """Keep the valid tokens, padded to the batch's longest: (B, P, C), (B, P), (B, P, 2).

        In training with ``max_image_len > 0`` each sample keeps a random subset of at most that many valid patches
        (ViLT's patch sampling); otherwise valid tokens keep their row-major order, so evaluation is deterministic.
        """
        counts = valid.sum(1)
        length = int(counts.max()) if counts.numel() else 0
        if self.training and max_image_len > 0 and length > max_image_len:
            length = max_image_len
            key = valid.float() * (1 + torch.rand(valid.shape, device=valid.device))
            order = key.topk(length, dim=1).indices.sort(dim=1).values
        else:
            order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)[:, :length]
        tokens = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
        valid = valid.gather(1, order)
        index = index.gather(1, order[..., None].expand(-1, -1, 2)).masked_fill(~valid[..., None], -1)
        return tokens, valid, index

    def prepend_cls(self, tokens: torch.Tensor, valid: torch.Tensor):
        """Add the image [CLS] (its own position embedding) and the embedding dropout: (B, 1 + P, C), (B, 1 + P)."""
        B = tokens.shape[0]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1).to(tokens.dtype)
        x = self.pos_drop(torch.cat([cls, tokens], dim=1))
        return x, torch.cat([valid.new_ones(B, 1), valid], dim=1)


class Pooler(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))


class ViLT(nn.Module):
    """ViLT backbone + pooler. See the module docstring for the sequence layout and the image entry points."""

    def __init__(self, cfg: ViLTConfig | Mapping | None = None):
        super().__init__()
        cfg = cfg if isinstance(cfg, ViLTConfig) else ViLTConfig.from_dict(cfg or {})
        if cfg.hidden_size % cfg.num_heads:
            raise ValueError(f"hidden_size={cfg.hidden_size} is not divisible by num_heads={cfg.num_heads}")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size={cfg.image_size} is not a multiple of patch_size={cfg.patch_size}")
        self.cfg = cfg
        bert_cfg = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                              intermediate_size=int(cfg.hidden_size * cfg.mlp_ratio),
                              max_position_embeddings=cfg.max_text_len, hidden_dropout_prob=cfg.drop_rate,
                              attention_probs_dropout_prob=cfg.drop_rate)
        self.text_embeddings = BertEmbeddings(bert_cfg)
        self.token_type_embeddings = nn.Embedding(2, cfg.hidden_size)
        self.transformer = VisionTransformer(cfg)
        self.pooler = Pooler(cfg.hidden_size)
        self.apply(_init_vilt_weights)

    @property
    def num_layers(self) -> int:
        return len(self.transformer.blocks)

    def embed_text(self, text_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C); token t keeps position t, so a masked text keeps its words' original places."""
        T = text_ids.shape[1]
        if T > self.cfg.max_text_len:
            raise ValueError(f"text of {T} tokens is longer than max_text_len={self.cfg.max_text_len}")
        x = self.text_embeddings(input_ids=text_ids)
        return x + self.token_type_embeddings(torch.full_like(text_ids, TEXT_TYPE))

    def forward(self, text_ids: torch.Tensor, text_masks: torch.Tensor, images: torch.Tensor | None = None,
                pixel_masks: torch.Tensor | None = None, patch_keep: torch.Tensor | None = None, *,
                patches: torch.Tensor | None = None, patch_index: torch.Tensor | None = None,
                grid_sizes: torch.Tensor | None = None, patch_masks: torch.Tensor | None = None,
                return_attention: bool | Sequence[int] = False, extra_tokens: torch.Tensor | None = None,
                prefixes: Sequence | None = None, adapters: Sequence | None = None,
                deep_tokens: Sequence | None = None) -> ViLTOutput:
        """Encode a batch of image-text pairs.

        text_ids, text_masks: (B, T); a 0 in text_masks removes that token (padding or a masked-out word).
        Image, one of two ways:
          - ``images`` (B, 3, H, W) zero-padded, ``pixel_masks`` (B, H, W) bool, optional ``patch_keep``
            (B, H//p, W//p) bool that drops patches;
          - ``patches`` (B, K, 3, p, p) + ``patch_index`` (B, K, 2) + ``grid_sizes`` (B, 2) [+ ``patch_masks``
            (B, K)]: only these patches, at their places on the original grid (a stored masked exemplar).
        ``return_attention``: also return every layer's attention (B, heads, N, N), or, given layer indices, only
        those layers' (None elsewhere, so a masking pass holds no more than it needs); the other layers use the
        fused SDPA kernel.
        Hooks for prompt and adapter methods (all optional): ``extra_tokens`` (B, E, C) appended after the image
        tokens as they are (input prompts, L2P-style; ``hidden[:, -E:]`` are their outputs); ``prefixes``, one entry
        per layer, None or (keys, values) each (B, Lp, C) appended to that layer's attention (prefix tuning);
        ``adapters``, one entry per layer, None or a module run in parallel to that layer's MLP (on the residual
        stream before ``norm2``, see :class:`Block`);
        ``deep_tokens`` (instead of ``extra_tokens``), one entry per layer: entry 0 (B, E, C) is the extra tokens'
        input, and a later entry (B, E, C) replaces their states before that layer, None leaving them as the layer
        below made them (deep prompts: VPT-deep, RebQ's memory prompts).
        """
        vt = self.transformer
        if (images is None) == (patches is None):
            raise ValueError("give exactly one of images= or patches=")
        if patches is not None:
            if patch_index is None or grid_sizes is None:
                raise ValueError("patches= needs patch_index= and grid_sizes=")
            tokens, valid, index, grid_sizes = vt.embed_patches(patches, patch_index, grid_sizes, patch_masks)
        else:
            tokens, valid, index, grid_sizes = vt.embed_images(images, pixel_masks, patch_keep)
        tokens, valid, index = vt.select_tokens(tokens, valid, index, self.cfg.max_image_len)
        image_x, image_masks = vt.prepend_cls(tokens, valid)
        image_x = image_x + self.token_type_embeddings.weight[IMAGE_TYPE].to(image_x.dtype)

        text_x = self.embed_text(text_ids)
        if deep_tokens is not None:
            if extra_tokens is not None or deep_tokens[0] is None:
                raise ValueError("deep_tokens needs its layer-0 entry and replaces extra_tokens: give one of them")
            extra_tokens = deep_tokens[0]
        parts, part_masks = [text_x, image_x.to(text_x.dtype)], [text_masks.bool(), image_masks]
        if extra_tokens is not None:
            parts.append(extra_tokens.to(text_x.dtype))
            part_masks.append(image_masks.new_ones(extra_tokens.shape[:2]))
        x, masks = torch.cat(parts, dim=1), torch.cat(part_masks, dim=1)
        n = len(vt.blocks)
        for name, per_layer in (("prefixes", prefixes), ("adapters", adapters), ("deep_tokens", deep_tokens)):
            if per_layer is not None and len(per_layer) != n:
                raise ValueError(f"{name} has {len(per_layer)} entries for {n} layers")
        if isinstance(return_attention, bool):
            wanted = set(range(n)) if return_attention else set()
        else:
            if any(not -n <= i < n for i in return_attention):
                raise ValueError(f"return_attention={list(return_attention)}: layers out of range for {n} layers")
            wanted = {i % n for i in return_attention}
        attentions = []
        for i, blk in enumerate(vt.blocks):
            if deep_tokens is not None and i > 0 and deep_tokens[i] is not None:
                E = extra_tokens.shape[1]
                if deep_tokens[i].shape[1] != E:
                    raise ValueError(f"deep_tokens[{i}] has {deep_tokens[i].shape[1]} tokens, layer 0 had {E}")
                x = torch.cat([x[:, :-E], deep_tokens[i].to(x.dtype)], dim=1)
            x, attn = blk(x, masks, i in wanted, prefixes[i] if prefixes is not None else None,
                          adapters[i] if adapters is not None else None)
            attentions.append(attn)
        hidden = vt.ssf_norm(vt.norm(x))
        return ViLTOutput(pooled=self.pooler(hidden), hidden=hidden, masks=masks, text_len=text_ids.shape[1],
                          patch_index=index, grid_sizes=grid_sizes,
                          attentions=tuple(attentions) if wanted else None,
                          num_extra=0 if extra_tokens is None else extra_tokens.shape[1])


def _init_vilt_weights(module: nn.Module) -> None:
    """ViLT's ``objectives.init_weights``: Linear/Embedding ~ N(0, .02), zero bias, LayerNorm (1, 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
