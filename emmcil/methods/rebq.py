"""RebQ, "Reconstruct before Query" (Zhao et al., arXiv 2403.11373), on our ViLT (``method=rebq``; named config
``rebq``). Exemplar-free; made for continual missing-modality learning (``missing_type``, see config.py).

How it is built, with its sources and defaults: docs/method.md#rebq.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from emmcil.data.missing import IMAGE_MISSING, NONE, TEXT_MISSING
from emmcil.data.tokenizer import CLS_ID, PAD_ID, SEP_ID
from emmcil.model import ViLTOutput
from emmcil.model.keyed import M32, current_state, mix32, sample_keys
from emmcil.settings import MethodSettings, setting

from . import register
from .base import Method

FROZEN_LOGIT = -100.0  # the released FREEZE_LOGITS value ("-inf gives NaN with BCE")


# ---------------------------------------------------------------------------------------------------- prompt pools
@torch.no_grad()
def orthonormal_rows(n: int, previous: torch.Tensor | None = None, dim: int | None = None) -> torch.Tensor:
    """``n`` random unit rows, orthogonal to each other and to the span of ``previous``'s rows (Gram-Schmidt of
    Gaussian vectors, CODA-Prompt's init), as far as the dimension allows (then plain random unit rows).
    Uses the global torch RNG (seeded by the phase driver)."""
    dim = previous.shape[1] if previous is not None else dim
    basis = torch.zeros(dim, 0, dtype=torch.float64)
    if previous is not None and len(previous):
        u, s, _ = torch.linalg.svd(previous.double().T, full_matrices=False)
        basis = u[:, s > 1e-6 * max(float(s.max()), 1e-12)]
    out = torch.empty(n, dim, dtype=torch.float64)
    for i in range(n):
        v = torch.randn(dim, dtype=torch.float64)
        u = v - basis @ (basis.T @ v)
        if u.norm() < 1e-6 * v.norm():  # no direction left
            u = v
        u = u / u.norm()
        basis = torch.cat([basis, u[:, None]], dim=1)
        out[i] = u
    return out.float()


class TaskComponents(nn.Module):
    """One task's share of a pool: for each prompted layer, P (n, length, C), K (n, C), A (n, C); zeros until
    initialised (:meth:`PromptPool.init_task`)."""

    def __init__(self, layers: int, n: int, length: int, dim: int):
        super().__init__()
        self.prompts = nn.Parameter(torch.zeros(layers, n, length, dim))
        self.keys = nn.Parameter(torch.zeros(layers, n, dim))
        self.attention = nn.Parameter(torch.zeros(layers, n, dim))


class PromptPool(nn.Module):
    """A CODA-Prompt component pool over ``layers`` layers, ``per_task`` components for each of ``num_tasks``
    tasks, allocated whole (so every phase's checkpoint fits); task 0's components are initialised, the others
    are zero (the released code's state before any ``REINIT``)."""

    def __init__(self, num_tasks: int, per_task: int, length: int, layers: int, dim: int):
        super().__init__()
        self.per_task, self.length, self.layers, self.dim = per_task, length, layers, dim
        self.tasks = nn.ModuleList([TaskComponents(layers, per_task, length, dim) for _ in range(num_tasks)])
        self.init_task(0)

    @torch.no_grad()
    def init_task(self, t: int) -> None:
        """Gram-Schmidt init of task ``t``'s components, orthogonal to tasks < t's, layer by layer."""
        new = self.tasks[t]
        for name in ("prompts", "keys", "attention"):
            for layer in range(self.layers):
                old = [getattr(self.tasks[s], name)[layer].flatten(1) for s in range(t)]
                rows = orthonormal_rows(self.per_task, torch.cat(old) if old else None,
                                        dim=getattr(new, name)[layer][0].numel())
                getattr(new, name)[layer].copy_(rows.view_as(getattr(new, name)[layer]))

    def forward(self, query: torch.Tensor, t: int) -> torch.Tensor:
        """query (B, C) -> prompts (layers, B, length, C) from the components of tasks 0..t.

        weight_k = cos(query * A_k, K_k) (the normalisation of a zero vector is zero, so uninitialised components
        weigh 0 and get no gradient, as in the released code), prompt = sum_k weight_k P_k. In float32.
        """
        with torch.autocast(query.device.type, enabled=False):
            q = query.float()
            P = torch.cat([c.prompts for c in self.tasks[:t + 1]], dim=1)     # (L, f, length, C)
            K = torch.cat([c.keys for c in self.tasks[:t + 1]], dim=1)        # (L, f, C)
            A = torch.cat([c.attention for c in self.tasks[:t + 1]], dim=1)   # (L, f, C)
            eps2 = 1e-24  # F.normalize's eps, squared; clamping before the square root keeps gradients finite at 0
            dot = torch.einsum("bc,lkc->lbk", q, A * K)
            q_norm = torch.einsum("bc,lkc->lbk", q * q, A * A).clamp_min(eps2).sqrt()
            k_norm = (K * K).sum(-1).clamp_min(eps2).sqrt()                   # (L, f)
            weight = dot / (q_norm * k_norm[:, None, :])                      # (L, B, f)
            return torch.einsum("lbk,lkpc->lbpc", weight, P)


class RebQNet(nn.Module):
    """The three pools: ``memory`` (input prompts of the reconstruction pass), ``image`` and ``text``
    (prefixes of the final pass)."""

    def __init__(self, num_tasks: int, per_task: int, length: int, layers: int, dim: int):
        super().__init__()
        self.memory = PromptPool(num_tasks, per_task, length, layers, dim)
        self.image = PromptPool(num_tasks, per_task, length, layers, dim)
        self.text = PromptPool(num_tasks, per_task, length, layers, dim)

    def pools(self) -> tuple[PromptPool, PromptPool, PromptPool]:
        return self.memory, self.image, self.text


# ---------------------------------------------------------------------------------------------------- the passes
@dataclass
class RebQOutput(ViLTOutput):
    """The final pass's :class:`ViLTOutput` (``pooled`` = what the classifier reads), plus the reconstruction loss
    (a scalar; 0 without copies; None in evaluation), the number of copies it averaged over, and the queries of
    the text and image pools (B, C) (the reconstructed ones for a missing modality)."""

    reconstruction_loss: torch.Tensor | None = None
    num_copies: int = 0
    text_query: torch.Tensor | None = None
    image_query: torch.Tensor | None = None


def reconstruction_loss(reconstructed: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the copies' reconstructed tokens (N, C) and their complete originals' tokens
    (N, C), which get no gradient; the mean over copies of the per-copy mean over channels, as the released code.
    0 (a tensor) for N = 0, so it is 0 exactly when there is nothing to reconstruct."""
    if reconstructed.shape[0] == 0:
        return reconstructed.new_zeros((), dtype=torch.float32)
    return F.mse_loss(reconstructed.float(), target.detach().float())


def drop_text(text_ids: torch.Tensor, text_masks: torch.Tensor):
    """Copies without their text: [CLS] [SEP] [PAD]..., as the empty string tokenises (a missing text)."""
    ids = torch.full_like(text_ids, PAD_ID)
    ids[:, 0], ids[:, 1] = CLS_ID, SEP_ID
    masks = torch.zeros_like(text_masks)
    masks[:, :2] = 1
    return ids, masks


def drop_image(images: torch.Tensor, pixel_masks: torch.Tensor) -> torch.Tensor:
    """Copies with a white image (1.0 after normalisation, as a missing image) on the real pixels, padding kept."""
    return torch.where(pixel_masks[:, None], torch.ones_like(images), torch.zeros_like(images))


def _rows(batch: dict, index: torch.Tensor) -> dict:
    return {k: (v[index] if v is not None else None) for k, v in batch.items()}


@dataclass(frozen=True)
class RebQSettings(MethodSettings):
    rebq_pool_size: int = setting(128, "components per pool over all tasks; pool_size // num_phases per task (RebQ: "
                                  "128)", low=1)
    rebq_prompt_length: int = setting(8, "tokens per prompt (even): memory prompts 8 input tokens, modality 4 keys + "
                                      "4 values")
    rebq_layers: int = setting(8, "the first layers that get prompts, for all three pools (at most the model's depth)",
                              low=1)
    rebq_alpha: float = setting(0.01, "weight of the reconstruction loss (RebQ's ALPHA)", low=0)
    rebq_reinit: bool = setting(False, "init task t's components at phase t (CODA-P); False = released REINIT (see "
                                "docs)")
    rebq_pooler: bool = setting(False, "classify tanh(pooler(text CLS)) instead of the final-normed text CLS (RebQ: "
                                "no)")

    def check(self, settings) -> list[str]:
        length, num_phases = int(self.rebq_prompt_length), int(settings.experiment.num_phases)
        if length < 2 or length % 2:
            return [f"rebq_prompt_length={length}: must be even (half keys, half values)"]
        if int(self.rebq_pool_size) // num_phases < 1:
            return [f"rebq_pool_size={self.rebq_pool_size} gives no component per task for {num_phases} phases"]
        return []

    def layout_dependence(self, model_rng: str) -> str | None:
        return "the reconstruction loss is a mean over the copies of a batch's complete samples (the released code's)"


@register
class RebQ(Method):
    """RebQ's three prompt pools on the frozen ViLT (docs/method.md#rebq)."""

    name = "rebq"
    settings = RebQSettings
    # the released code's frozen Hugging Face ViLT (dropout 0); its optimiser is the `rebq` recipe
    # (emmcil/methods/recipes.py)
    named_config = {"tuning": "frozen", "ssf": False, "drop_rate": 0.0}

    def __init__(self, settings):
        super().__init__(settings)
        tuning = settings.model.tuning
        if tuning != "frozen":
            warnings.warn(f"rebq trains prompts on a frozen backbone, but tuning={tuning!r}: use the "
                          f"`rebq` named config after the dataset's (`with demo rebq`), or tuning=frozen")
        # >= 1 and the prompt length even: RebQSettings.check, run by the constructor
        self.per_task = int(self.own.rebq_pool_size) // int(self.settings.experiment.num_phases)
        self.layers = 0

    # -- structure
    def build_net(self, backbone_cfg) -> RebQNet:
        self.layers = min(int(self.own.rebq_layers), backbone_cfg.num_layers)
        if self.layers < int(self.own.rebq_layers):
            warnings.warn(f"rebq_layers={self.own.rebq_layers} > the model's {backbone_cfg.num_layers} layers: "
                          f"prompting all {self.layers}")
        return RebQNet(int(self.settings.experiment.num_phases), self.per_task, int(self.own.rebq_prompt_length),
                       self.layers, backbone_cfg.hidden_size)

    def set_trainable(self, module) -> None:
        t = self.current_phase(module)
        for pool in module.method_net.pools():
            for s, comps in enumerate(pool.tasks):
                comps.requires_grad_(s == t)
        if not self.own.rebq_pooler:
            module.backbone.pooler.requires_grad_(False)  # not in the forward pass

    def before_phase(self, ctx) -> None:
        if self.own.rebq_reinit and ctx.phase > 0:
            for pool in ctx.module.method_net.pools():
                pool.init_task(ctx.phase)

    # -- forward
    def encode(self, module, batch: dict, return_attention=False) -> RebQOutput:
        bb, net = module.backbone, module.method_net
        t = self.current_phase(module)
        ids, masks, images, pmasks = batch["text_ids"], batch["text_masks"], batch["images"], batch["pixel_masks"]
        B, T = ids.shape
        keep = batch.get("patch_keep")
        types = batch.get("missing_types")
        types = torch.zeros(B, dtype=torch.long, device=ids.device) if types is None else types.to(ids.device)

        # inputs of the query and reconstruction passes: the originals, then (training) each complete one's copies
        x = {"ids": ids, "masks": masks, "images": images, "pmasks": pmasks, "keep": keep}
        complete = (types == NONE).nonzero()[:, 0]
        n_copy = len(complete) if module.training else 0
        if n_copy:
            c = _rows(x, complete)
            no_text_ids, no_text_masks = drop_text(c["ids"], c["masks"])
            x = {"ids": torch.cat([ids, no_text_ids, c["ids"]]), "masks": torch.cat([masks, no_text_masks, c["masks"]]),
                 "images": torch.cat([images, c["images"], drop_image(c["images"], c["pmasks"])]),
                 "pmasks": torch.cat([pmasks, c["pmasks"], c["pmasks"]]),
                 "keep": None if keep is None else torch.cat([keep, c["keep"], c["keep"]])}
            types = torch.cat([types, types.new_full((n_copy,), TEXT_MISSING),
                               types.new_full((n_copy,), IMAGE_MISSING)])

        # the copies' sample keys (model_rng="sample": their dropout, when there is any, is theirs alone)
        state = current_state(bb)
        keys = None if state is None else torch.cat([state.keys] + [mix32((state.keys[complete] & M32) ^ j)
                                                                    for j in ((1, 2) if n_copy else ())])

        # 1. query pass: frozen ViLT, no prompts
        with torch.no_grad(), sample_keys(bb, keys):
            hidden = bb(x["ids"], x["masks"], x["images"], x["pmasks"], patch_keep=x["keep"]).hidden
        text_q, image_q = hidden[:, 0], hidden[:, T]

        # 2-3. memory prompts and the reconstruction pass, on the rows that need it
        need = (types != NONE) | module.training
        rows = need.nonzero()[:, 0]
        rec_text, rec_image = text_q.clone(), image_q.clone()
        loss = None
        if len(rows):
            r_types = types[rows]
            use_text = (r_types != TEXT_MISSING).to(text_q.dtype)[None, :, None, None]
            use_image = (r_types != IMAGE_MISSING).to(text_q.dtype)[None, :, None, None]
            memory = (net.memory(text_q[rows], t) * use_text + net.memory(image_q[rows], t) * use_image)
            deep = list(memory.unbind(0)) + [None] * (bb.num_layers - self.layers)
            r = _rows(x, rows)
            with sample_keys(bb, None if keys is None else keys[rows]):
                out = bb(r["ids"], r["masks"], r["images"], r["pmasks"], patch_keep=r["keep"], deep_tokens=deep).hidden
            rec_text = rec_text.index_put((rows,), out[:, 0].to(rec_text.dtype))
            rec_image = rec_image.index_put((rows,), out[:, T].to(rec_image.dtype))
            if n_copy:
                # copies are the last 2 * n_copy rows of x, all in `rows`, after the originals they copy
                pos = torch.full((len(types),), -1, dtype=torch.long, device=ids.device)
                pos[rows] = torch.arange(len(rows), device=ids.device)
                src, no_text, no_image = pos[complete], pos[B:B + n_copy], pos[B + n_copy:]
                loss = reconstruction_loss(torch.cat([out[no_text, 0], out[no_image, T]]),
                                           torch.cat([out[src, 0], out[src, T]]))
        if loss is None and module.training:
            loss = reconstruction_loss(text_q[:0], text_q[:0])

        # 4. modality prompts from the (reconstructed) queries of the originals
        o_types = types[:B]
        text_query = torch.where((o_types == TEXT_MISSING)[:, None], rec_text[:B], text_q[:B])
        image_query = torch.where((o_types == IMAGE_MISSING)[:, None], rec_image[:B], image_q[:B])
        tp, ip = net.text(text_query, t), net.image(image_query, t)  # (layers, B, length, C)
        h = tp.shape[2] // 2
        prefixes = [(torch.cat([tp[i, :, :h], ip[i, :, :h]], dim=1), torch.cat([tp[i, :, h:], ip[i, :, h:]], dim=1))
                    for i in range(self.layers)] + [None] * (bb.num_layers - self.layers)

        # 5. final pass on the originals
        final = bb(ids, masks, images, pmasks, patch_keep=keep, return_attention=return_attention, prefixes=prefixes)
        values = {f.name: getattr(final, f.name) for f in fields(ViLTOutput)}
        if not self.own.rebq_pooler:
            values["pooled"] = final.hidden[:, 0]
        return RebQOutput(**values, reconstruction_loss=loss, num_copies=n_copy, text_query=text_query,
                          image_query=image_query)

    def training_loss(self, module, batch: dict, output, logits: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the current phase's classes (earlier classes' logits set to -100, the released
        FREEZE_LOGITS) + rebq_alpha x the reconstruction loss."""
        old = torch.arange(logits.shape[1], device=logits.device) < self.known_classes(module)
        ce = F.cross_entropy(logits.masked_fill(old, FROZEN_LOGIT), batch["labels"])
        rec = getattr(output, "reconstruction_loss", None)
        if getattr(module, "_trainer", None) is not None:
            module.log("train/ce", ce, batch_size=logits.shape[0])
            if rec is not None:
                module.log("train/rec_loss", rec, batch_size=logits.shape[0])
        return ce if rec is None else ce + float(self.own.rebq_alpha) * rec
