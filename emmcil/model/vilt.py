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

Dropout, stochastic depth and patch sampling draw from each sample's own key in training
(:mod:`emmcil.model.keyed`), so a run's numbers do not depend on how its batches are spread over devices.

Why the layers are ours and not timm's (``timm.layers.Mlp``, ``Attention``, ``PatchEmbed``, ``DropPath``;
``trunc_normal_`` is timm's): SSF scales and shifts the output of each linear layer *before* what follows it (fc1
-> SSF -> GELU, qkv -> SSF -> heads, proj -> SSF), where timm's layers have no place for it (SSF's own code,
``dongzelian/SSF`` ``models/vision_transformer.py``, rewrites timm's blocks for the same reason); the attention also
takes prefixes, per-query rows and returns its maps, and the parameter names must stay the checkpoint's.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings

from emmcil.settings.checks import backbone_problems

from .keyed import PREFIX, KeyedDropout, KeyedDropPath, PatchSampler, keyed_mask, token_positions
from .ssf import maybe_ssf

if TYPE_CHECKING:
    from emmcil.settings import Settings

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
    compile: bool = False          # run forward as one torch.compile graph (compiled_forward); same outputs

    def __post_init__(self):
        """Raises ValueError naming the key of a size no backbone can have, when the model is built (before any
        training), not as a shape error inside the first forward."""
        problems = backbone_problems(asdict(self))
        if problems:
            raise ValueError("backbone config: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ViLTConfig":
        """The backbone of a run's typed settings: its sizes and regularisation from ``settings.model``, the text
        length from ``settings.data``, ``compile`` from ``settings.hardware``."""
        m = settings.model
        return cls(vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
                   mlp_ratio=m.mlp_ratio, patch_size=m.patch_size, image_size=m.image_size,
                   max_text_len=settings.data.max_text_len, max_image_len=m.max_image_len, drop_rate=m.drop_rate,
                   attn_drop_rate=m.attn_drop_rate, drop_path_rate=m.drop_path_rate, qkv_bias=m.qkv_bias, ssf=m.ssf,
                   compile=settings.hardware.compile)

    @classmethod
    def from_dict(cls, cfg: Mapping) -> "ViLTConfig":
        """Pick this dataclass's fields out of a mapping (a test's or a benchmark's sizes); other keys are ignored."""
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
    hidden: torch.Tensor                 # (B, N, C) after the final norm (and its SSF); (B, 1, C) pooled_only
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
        self.attn_dropout = KeyedDropout(attn_drop)  # its key state; the dropout itself is in forward
        self.proj = nn.Linear(dim, dim)
        self.ssf_proj = maybe_ssf(ssf, dim)
        self.proj_drop = KeyedDropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None, queries: torch.Tensor | None = None):
        """x (B, N, C), mask bool (B, 1, 1, N) over keys or (B, 1, N, N) per query, True = attended -> (B, N, C),
        attention (B, heads, N, N + Lp) float32 or None.

        prefix: (keys, values), each (B, Lp, C), appended to this layer's keys and values after the projection
        (prefix tuning, as DualPrompt / CODA-Prompt / RebQ); always attended to. They come *after* the N tokens,
        so attention columns [:N] keep the token order.
        queries: (B, Q) long, the tokens whose outputs are wanted (every token stays a key and a value): the
        output is (B, Q, C); the attention map, when asked, still has every query row.
        """
        B, N, C = x.shape
        H = self.num_heads
        qkv = self.ssf_qkv(self.qkv(x)).reshape(B, N, 3, H, C // H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if prefix is not None:
            pk, pv = (t.to(k.dtype).reshape(B, -1, H, C // H).transpose(1, 2) for t in prefix)
            k, v = torch.cat([k, pk], dim=2), torch.cat([v, pv], dim=2)
            mask = torch.cat([mask, mask.new_ones(*mask.shape[:-1], pk.shape[2])], dim=-1)
        drop = self.attn_drop if self.training else 0.0
        keyed = drop > 0 and self.attn_dropout.state is not None  # per-sample masks: not SDPA's own dropout
        attn = None
        if need_weights or keyed:
            # float32 softmax: the maps feed thresholds, so they must not depend on the autocast dtype
            scores = (q.float() * self.scale) @ k.float().transpose(-2, -1)
            attn = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            probs = attn if queries is None else query_rows(attn, queries)
            probs = self.keyed_probs(probs, N, queries) if keyed else F.dropout(probs, drop, self.training)
            x = probs.to(v.dtype) @ v
            attn = attn if need_weights else None
        else:
            if queries is not None:
                q = query_rows(q, queries)
                # a key mask (B, 1, 1, K) has one row for all queries: broadcast it (a view) before picking rows
                mask = query_rows(mask.expand(B, mask.shape[1], N, mask.shape[-1]), queries)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        x = x.transpose(1, 2).reshape(B, -1, C)
        return self.proj_drop(self.ssf_proj(self.proj(x))), attn

    def keyed_probs(self, probs: torch.Tensor, n_tokens: int, queries: torch.Tensor | None) -> torch.Tensor:
        """Attention dropout of probs (B, H, Q, N + Lp) from the sample keys: element (b, h, i, j) by (key_b, h,
        position of query i, position of key j), prefix keys numbered apart from the tokens."""
        state = self.attn_dropout.state
        B, H, Q, K = probs.shape
        ids = state.token_ids if state.token_ids is not None and state.token_ids.shape[0] == n_tokens \
            else torch.arange(n_tokens, device=probs.device)
        ids = ids.to(probs.device)
        rows = (ids[queries] if queries is not None else ids.expand(B, -1)).reshape(B, 1, Q, 1)
        cols = torch.cat([ids, PREFIX + torch.arange(K - n_tokens, device=probs.device)])
        heads = torch.arange(H, device=probs.device).view(1, H, 1)
        keep = keyed_mask(state.row_keys(B).to(probs.device), self.attn_dropout.site or 0, (heads, rows[..., 0]),
                          cols, self.attn_drop)
        return probs * keep.to(probs.dtype) * (1.0 / (1.0 - self.attn_drop))


def query_rows(t: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Rows ``queries`` (B, Q) long of ``t`` (B, X, N, Y) along dim 2: (B, X, Q, Y)."""
    return t.gather(2, queries[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))


class Mlp(nn.Module):
    ssf_pairs = (("fc1", "ssf_fc1"), ("fc2", "ssf_fc2"))

    def __init__(self, dim: int, hidden: int, drop: float, ssf: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.ssf_fc1 = maybe_ssf(ssf, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.ssf_fc2 = maybe_ssf(ssf, dim)
        self.drop1, self.drop2 = KeyedDropout(drop), KeyedDropout(drop)  # two sites: two independent masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.ssf_fc1(self.fc1(x))))
        return self.drop2(self.ssf_fc2(self.fc2(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm / ViLT), with SSF after norm1, qkv, proj, norm2, fc1 and fc2."""

    ssf_pairs = (("norm1", "ssf_norm1"), ("norm2", "ssf_norm2"))

    def __init__(self, cfg: ViLTConfig, drop_path: float):
        super().__init__()
        dim = cfg.hidden_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.ssf_norm1 = maybe_ssf(cfg.ssf, dim)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate, cfg.ssf)
        self.drop_path = KeyedDropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ssf_norm2 = maybe_ssf(cfg.ssf, dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate, cfg.ssf)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False, prefix=None,
                adapter: nn.Module | None = None, queries: torch.Tensor | None = None):
        """adapter: a module run in parallel to the MLP on the residual stream before ``norm2`` (the MLP's input
        before its norm), its output added outside drop-path: AdaptFormer's parallel adapter as PILOT's EASE runs
        it (``backbone/vit_ease.py`` ``Block.forward``: ``adapt(x, add_residual=False)`` on that ``x``)."""
        y, attn = self.attn(self.ssf_norm1(self.norm1(x)), mask, need_weights, prefix, queries)
        if queries is not None:  # only these tokens go on (Attention's queries)
            x = x.gather(1, queries[..., None].expand(-1, -1, x.shape[-1]))
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
        self.ssf = maybe_ssf(ssf, dim, channel_dim=1)  # on the conv output (B, C, Hg, Wg)

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
        self.pos_drop = KeyedDropout(cfg.drop_rate)
        self.patch_sampler = PatchSampler()  # max_image_len's random patches
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.num_layers).tolist()
        self.blocks = nn.ModuleList([Block(cfg, dpr[i]) for i in range(cfg.num_layers)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.ssf_norm = maybe_ssf(cfg.ssf, dim)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)

    def pos_embed_at(self, patch_index: torch.Tensor, grid_sizes: torch.Tensor) -> torch.Tensor:
        """Position embeddings of patch tokens: (B, K, C) for cells ``patch_index`` (B, K, 2) long (row, col) on
        image grids ``grid_sizes`` (B, 2) (rows, cols).

        ViLT resizes the g x g table (g = image_size / patch_size) to each image's grid with
        ``F.interpolate(mode="bilinear", align_corners=True)``; this is that interpolation written out and evaluated
        only at the given cells, for every grid of the batch at once: no loop over grid sizes and no host sync, so
        it traces into one compiled graph. Cells outside [0, grid) (padding slots, -1) read a clamped dummy.
        """
        g = self.cfg.grid
        table = self.pos_embed[0, 1:]                                          # (g * g, C), row-major
        cells = patch_index.clamp_min(0)
        # F.interpolate's source coordinate for align_corners=True: dst * (in - 1) / (out - 1), 0 when out == 1
        scale = (g - 1) / (grid_sizes - 1).clamp_min(1).to(table.dtype)        # (B, 2)
        src = cells.to(table.dtype) * scale[:, None, :]                        # (B, K, 2)
        lo = src.long().clamp(max=g - 1)
        hi = (lo + 1).clamp(max=g - 1)
        w1 = (src - lo)[..., None]                                             # (B, K, 2, 1) weight of hi
        w0 = 1 - w1
        # index_select, not table[cells]: the backward of advanced indexing (index_put_ with accumulate) sums the
        # gradient of a cell that several tokens read in thread order on a CPU, so two runs differed in the last bits
        at = lambda r, c: table.index_select(0, (r * g + c).flatten()).view(*r.shape, table.shape[-1])  # noqa: E731
        (r0, c0), (r1, c1) = lo.unbind(-1), hi.unbind(-1)
        (wr0, wc0), (wr1, wc1) = w0.unbind(-2), w1.unbind(-2)
        return wr0 * (wc0 * at(r0, c0) + wc1 * at(r0, c1)) + wr1 * (wc0 * at(r1, c0) + wc1 * at(r1, c1))

    def embed_images(self, images: torch.Tensor, pixel_masks: torch.Tensor | None = None,
                     patch_keep: torch.Tensor | None = None):
        """Padded images -> patch tokens before selection, without position embeddings (added to the selected
        tokens only, :meth:`pos_embed_at`).

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
        if patch_keep is not None:
            if patch_keep.shape != valid.shape:
                raise ValueError(f"patch_keep has shape {tuple(patch_keep.shape)}, expected the patch grid "
                                 f"{tuple(valid.shape)} of images {tuple(images.shape)}")
            valid = valid & patch_keep.bool()
        rows, cols = torch.meshgrid(torch.arange(Hg, device=x.device), torch.arange(Wg, device=x.device),
                                    indexing="ij")
        index = torch.stack([rows, cols], dim=-1).reshape(1, Hg * Wg, 2).expand(B, -1, -1)
        return x.flatten(2).transpose(1, 2), valid.flatten(1), index, grid_sizes

    def embed_patches(self, patches: torch.Tensor, patch_index: torch.Tensor, grid_sizes: torch.Tensor,
                      patch_masks: torch.Tensor | None = None):
        """Stored patch subsets -> tokens (without position embeddings, as :meth:`embed_images`).
        patches (B, K, 3, p, p) normalised pixels; patch_index (B, K, 2) long (row, col); grid_sizes (B, 2) the
        full image's grid; patch_masks (B, K) bool (False = slot unused).
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
        if torch.compiler.is_compiling():  # a data-dependent branch would break the graph: check on the device
            torch._assert_async(~outside.any(), "patch_index outside its grid")
        elif outside.any():
            b = int(outside.nonzero()[0, 0])
            raise ValueError(f"sample {b}: patch_index outside its grid {tuple(grid_sizes[b].tolist())}")
        return x, valid, patch_index, grid_sizes

    def select_tokens(self, tokens: torch.Tensor, valid: torch.Tensor, index: torch.Tensor,
                      max_image_len: int = -1):
        """Keep the valid tokens, padded to the batch's longest: (B, P, C), (B, P), (B, P, 2).

        In training with ``max_image_len > 0`` each sample keeps a random subset of at most that many valid patches
        (ViLT's patch sampling), in row-major order; otherwise valid tokens keep their row-major order, so
        evaluation is deterministic. P is data-dependent: under ``torch.compile`` it is an unbacked size (see
        :func:`compiled_forward`), so the graph does not break here.
        """
        G = valid.shape[1]
        length = valid.sum(1).max().item() if G else 0
        torch._check(length >= 0)
        torch._check(length <= G)
        if self.training and max_image_len > 0:
            # random keys on every call (also when every image fits), so that eager and compiled runs draw alike
            length = torch.sym_min(length, max_image_len)
            key = valid.float() * (1 + self.patch_sampler.uniform(index))
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
        self.cfg = cfg
        bert_cfg = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                              intermediate_size=int(cfg.hidden_size * cfg.mlp_ratio),
                              max_position_embeddings=cfg.max_text_len, hidden_dropout_prob=cfg.drop_rate,
                              attention_probs_dropout_prob=cfg.drop_rate)
        self.text_embeddings = BertEmbeddings(bert_cfg)
        self.text_embeddings.dropout = KeyedDropout(cfg.drop_rate)  # what BertEmbeddings.forward calls
        self.token_type_embeddings = nn.Embedding(2, cfg.hidden_size)
        self.transformer = VisionTransformer(cfg)
        self.pooler = Pooler(cfg.hidden_size)
        self.apply(_init_vilt_weights)
        self.compiled = None  # the compiled forward (a function of the module), or None: eager
        if cfg.compile:
            if torch._dynamo.is_dynamo_supported():
                self.compiled = compiled_forward()
            else:
                warnings.warn("compile=True but torch.compile does not support this platform: running eagerly")

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
                deep_tokens: Sequence | None = None, pack: int = 0, pooled_only: bool = False) -> ViLTOutput:
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
        ``pack``: 0 (default) runs every token slot of the padded batch; k > 0 runs only the attended tokens,
        those of k consecutive samples packed into one row with a block-diagonal attention mask
        (:func:`pack_tokens`), so the cost follows the tokens kept, not the batch's longest sample (a masked
        sample's second forward in the masking pass). Outputs keep the unpacked layout and equal the unpacked
        ones to float rounding, except ``hidden`` at unattended slots (0 here). Not with ``return_attention``,
        ``prefixes`` or ``deep_tokens``.
        ``pooled_only``: compute what ``pooled`` needs: in the last layer every token is a key and a value, but only
        the text [CLS] goes through its attention output, projection and MLP (about 1/16 of a ViLT-B/32 forward
        saved); ``hidden`` is then (B, 1, C), the text [CLS] only. Attention maps keep every row.
        Hooks for prompt and adapter methods (all optional): ``extra_tokens`` (B, E, C) appended after the image
        tokens as they are (input prompts, L2P-style; ``hidden[:, -E:]`` are their outputs); ``prefixes``, one entry
        per layer, None or (keys, values) each (B, Lp, C) appended to that layer's attention (prefix tuning);
        ``adapters``, one entry per layer, None or a module run in parallel to that layer's MLP (on the residual
        stream before ``norm2``, see :class:`Block`);
        ``deep_tokens`` (instead of ``extra_tokens``), one entry per layer: entry 0 (B, E, C) is the extra tokens'
        input, and a later entry (B, E, C) replaces their states before that layer, None leaving them as the layer
        below made them (deep prompts: VPT-deep, RebQ's memory prompts).
        With ``ViLTConfig.compile`` the whole call runs as one compiled graph (:func:`compiled_forward`).
        """
        args = (text_ids, text_masks, images, pixel_masks, patch_keep)
        kwargs = dict(patches=patches, patch_index=patch_index, grid_sizes=grid_sizes, patch_masks=patch_masks,
                      return_attention=return_attention, extra_tokens=extra_tokens, prefixes=prefixes,
                      adapters=adapters, deep_tokens=deep_tokens, pack=pack, pooled_only=pooled_only)
        if self.compiled is not None:
            try:
                # the token counts of select_tokens / pack_tokens become unbacked sizes instead of graph breaks;
                # several entry points (attention maps, packing, train / eval) each take a cache entry
                with torch._dynamo.config.patch(capture_scalar_outputs=True, recompile_limit=64):
                    return self.compiled(self, *args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as err:
                warnings.warn(f"torch.compile failed on this platform, the backbone runs eagerly: {err}")
                self.compiled = None
        return self._forward(*args, **kwargs)

    def _forward(self, text_ids, text_masks, images, pixel_masks, patch_keep, *, patches, patch_index, grid_sizes,
                 patch_masks, return_attention, extra_tokens, prefixes, adapters, deep_tokens, pack,
                 pooled_only) -> ViLTOutput:
        """The computation of :meth:`forward` (what :func:`compiled_forward` compiles)."""
        vt = self.transformer
        if (images is None) == (patches is None):
            raise ValueError("give exactly one of images= or patches=")
        if pack and (return_attention or prefixes is not None or deep_tokens is not None):
            raise ValueError("pack= runs without attention maps, prefixes and deep_tokens: give none of them")
        if patches is not None:
            if patch_index is None or grid_sizes is None:
                raise ValueError("patches= needs patch_index= and grid_sizes=")
            tokens, valid, index, grid_sizes = vt.embed_patches(patches, patch_index, grid_sizes, patch_masks)
        else:
            tokens, valid, index, grid_sizes = vt.embed_images(images, pixel_masks, patch_keep)
        tokens, valid, index = vt.select_tokens(tokens, valid, index, self.cfg.max_image_len)
        tokens = tokens + vt.pos_embed_at(index, grid_sizes).to(tokens.dtype)
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
        B = x.shape[0]
        state = vt.pos_drop.state  # sample keys (training): the blocks' dropout needs each token's place
        if state is not None and self.training:
            if pack:
                raise ValueError("pack= is for passes without gradients; in training the sample keys follow rows")
            E = 0 if extra_tokens is None else extra_tokens.shape[1]
            state.token_ids = token_positions(text_x.shape[1], image_x.shape[1], E, device=x.device)
        if pack:
            x, attn_mask, slots = pack_tokens(x, masks, pack)
            # the text [CLS] of each sample is the first token of its place in its row (the last row padded with
            # a repeat of its own first [CLS])
            rows, L = x.shape[:2]
            cls = slots[:, 0] - (torch.arange(B, device=x.device) // pack) * L
            cls_queries = torch.cat([cls, cls[-1:].expand(rows * pack - B)]).view(rows, pack)
        else:
            attn_mask = masks[:, None, None, :]  # over keys
            cls_queries = torch.zeros(B, 1, dtype=torch.long, device=x.device)
        attentions = []
        for i, blk in enumerate(vt.blocks):
            if deep_tokens is not None and i > 0 and deep_tokens[i] is not None:
                E = extra_tokens.shape[1]
                if deep_tokens[i].shape[1] != E:
                    raise ValueError(f"deep_tokens[{i}] has {deep_tokens[i].shape[1]} tokens, layer 0 had {E}")
                x = torch.cat([x[:, :-E], deep_tokens[i].to(x.dtype)], dim=1)
            x, attn = blk(x, attn_mask, i in wanted, prefixes[i] if prefixes is not None else None,
                          adapters[i] if adapters is not None else None,
                          cls_queries if pooled_only and i == n - 1 else None)
            attentions.append(attn)
        if state is not None:
            state.token_ids = None
        hidden = vt.ssf_norm(vt.norm(x))
        if pooled_only:
            hidden = hidden.flatten(0, 1)[:B, None]  # (B, 1, C): one [CLS] per sample, in sample order
        elif pack:
            hidden = unpack_tokens(hidden, slots)
        return ViLTOutput(pooled=self.pooler(hidden), hidden=hidden, masks=masks, text_len=text_ids.shape[1],
                          patch_index=index, grid_sizes=grid_sizes,
                          attentions=tuple(attentions) if wanted else None,
                          num_extra=0 if extra_tokens is None else extra_tokens.shape[1])


def pack_tokens(x: torch.Tensor, masks: torch.Tensor, per_row: int):
    """Pack the attended tokens of every ``per_row`` consecutive samples into one row.

    x (B, N, C), masks (B, N) bool. Returns packed (R, L, C) with R = ceil(B / per_row) and L the longest row's
    token count, the attention mask (R, 1, L, L) bool (a token attends to the tokens of its own sample; the row's
    padding to padding, so no softmax row is empty) and ``slots`` (B, N) long, where each token went in the
    flattened rows, unattended ones to a spare area after them (:func:`unpack_tokens` reads them back as 0).
    Token order inside a sample is kept; positions were embedded before, so packing changes nothing but cost.
    """
    B, N, C = x.shape
    R = -(-B // per_row)
    lengths = masks.sum(1)                                              # (B,)
    sample = torch.arange(B, device=x.device)
    row = sample // per_row
    start = lengths.cumsum(0) - lengths                                  # offset of each sample among all tokens
    in_row = (start - start[row * per_row])[:, None] + masks.cumsum(1) - 1  # (B, N) place of each token in its row
    L = torch.zeros(R, dtype=lengths.dtype, device=x.device).index_add(0, row, lengths).max().item()
    torch._check(L >= 1)
    torch._check(L <= per_row * N)
    spare = R * L + sample[:, None] * N + torch.arange(N, device=x.device)  # a slot of its own: no index repeats
    slots = torch.where(masks, row[:, None] * L + in_row, spare)
    flat = slots.flatten()
    packed = x.new_zeros(R * L + B * N, C).index_copy(0, flat, x.flatten(0, 1))[:R * L].view(R, L, C)
    owner = torch.full((R * L + B * N,), -1, device=x.device).index_copy(0, flat, sample.repeat_interleave(N))
    owner = owner[:R * L].view(R, L)
    return packed, (owner[:, :, None] == owner[:, None, :])[:, None], slots


def cheapest_pack(lengths: Sequence[int], width: int) -> int:
    """Samples per row that make :func:`pack_tokens` cheapest for samples of ``lengths`` attended tokens, at model
    width ``width`` (C). Per layer, a row of L slots costs about 24 C^2 L multiply-adds in its linear maps and
    4 C L^2 in attention: longer rows waste fewer padding slots until their attention outweighs that."""
    def cost(per_row: int) -> int:
        rows = [sum(lengths[i:i + per_row]) for i in range(0, len(lengths), per_row)]
        return len(rows) * max(rows) * (6 * width + max(rows))
    return min(range(1, len(lengths) + 1), key=cost)


def unpack_tokens(packed: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_tokens`: packed (R, L, C), slots (B, N) -> (B, N, C), 0 at unattended slots."""
    B, N = slots.shape
    flat = torch.cat([packed.flatten(0, 1), packed.new_zeros(B * N, packed.shape[-1])])
    return flat[slots]


@functools.cache
def compiled_forward():
    """``torch.compile`` of :meth:`ViLT._forward` (one function for every ViLT, called with the module as argument).

    It traces into one graph without breaks: position embeddings are computed for all grid sizes at once and the
    data-dependent token counts (``select_tokens``, ``pack_tokens``) are unbacked sizes (``capture_scalar_outputs``,
    set around each call). ``dynamic=True``: batch, text length and image height and width are symbolic from the
    first compile, so the pixelbert transform's varying image sizes reuse one graph per entry point (train / eval,
    attention maps, packing) instead of recompiling as each dimension first changes. ``fallback_random``: dropout
    and patch sampling draw from torch's eager RNG in the same order, so a compiled run reproduces an eager one to
    float rounding (``benchmarks/bench_compile.py`` measures graphs, recompiles and speed).
    """
    return torch.compile(ViLT._forward, dynamic=True, options={"fallback_random": True})


def _init_vilt_weights(module: nn.Module) -> None:
    """ViLT's ``objectives.init_weights``: Linear/Embedding ~ N(0, .02), zero bias, LayerNorm (1, 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
