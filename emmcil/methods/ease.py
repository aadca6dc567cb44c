"""EASE, Expandable Subspace Ensemble (Zhou et al., CVPR'24) on a frozen ViLT; exemplar-free (``method=ease``).

How it is built, with its sources and defaults: docs/method.md#ease.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from emmcil.model import ViLTOutput
from emmcil.model.keyed import KeyedDropout
from emmcil.settings import MethodSettings, setting

from . import register
from .exemplar_free import ExemplarFreeMethod, backbone_inputs


class Adapter(nn.Module):
    """AdaptFormer's parallel bottleneck (PILOT ``vit_ease.Adapter`` with ``init_option="lora"``, no layer norm)."""

    def __init__(self, dim: int, bottleneck: int, scale: float, dropout: float):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.scale, self.dropout = scale, KeyedDropout(dropout)  # per-sample masks in training (model_rng)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.down(h)))
        return self.up(x) * self.scale


class _Grouped:
    """Adapter k applied to the k-th block of ``block`` rows of a batch stacked k times (one pass, k subspaces)."""

    def __init__(self, adapters: list[nn.Module], block: int):
        self.adapters, self.block = adapters, block

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([a(h[k * self.block:(k + 1) * self.block]) for k, a in enumerate(self.adapters)])


@dataclass(frozen=True)
class EaseSettings(MethodSettings):
    ease_bottleneck: int = setting(64, 'adapter width (PILOT ease_inr.json "ffn_num")', low=1)
    ease_scale: float = setting(0.1, 'adapter output scale (PILOT "ffn_adapter_scalar"; 0 would leave the adapters '
                                'untrained)', low=0, open_low=True)
    ease_adapter_dropout: float = setting(0.1, "dropout inside the adapter (PILOT get_new_adapter)", low=0, high=1,
                                          open_high=True)
    ease_alpha: float = setting(0.1, 'weight of the other subspaces at inference, divided by t ("alpha")', low=0)
    ease_adapters_per_pass: int = setting(0, "evaluation: adapter sets batched into one backbone pass (0 = all)",
                                          low=0, result=True)

    def layout_dependence(self, model_rng: str) -> str | None:
        if model_rng == "torch" and float(self.ease_adapter_dropout) > 0:
            return "model_rng='torch' draws the adapters' dropout over each batch"
        return None


@register
class EASE(ExemplarFreeMethod):
    name = "ease"
    settings = EaseSettings

    def build_net(self, backbone_cfg) -> nn.Module:
        C, n_layers = backbone_cfg.hidden_size, backbone_cfg.num_layers
        L, n_classes = int(self.settings.experiment.num_phases), int(self.settings.data.num_classes)
        make = partial(Adapter, C, int(self.own.ease_bottleneck), float(self.own.ease_scale),
                       float(self.own.ease_adapter_dropout))
        net = nn.Module()
        net.adapters = nn.ModuleList([nn.ModuleList([make() for _ in range(n_layers)]) for _ in range(L)])
        bound = 1.0 / math.sqrt(C)  # PILOT CosineLinear.reset_parameters
        net.proxy_weights = nn.ParameterList([nn.Parameter(torch.empty(n, C).uniform_(-bound, bound))
                                              for n in torch.tensor(self.phase_boundaries()).diff().tolist()])
        net.proxy_sigmas = nn.ParameterList([nn.Parameter(torch.ones(())) for _ in range(L)])
        # class prototypes per subspace, filled by after_training (checkpointed, never trained)
        net.prototypes = nn.Parameter(torch.zeros(n_classes, L, C), requires_grad=False)
        return net

    def set_trainable(self, module) -> None:
        super().set_trainable(module)
        module.classifier.requires_grad_(False)  # the prototype classifier replaces it
        net, t = module.method_net, self.current_phase(module)
        for j, (adapters, weight, sigma) in enumerate(zip(net.adapters, net.proxy_weights, net.proxy_sigmas)):
            for part in (adapters, weight, sigma):
                part.requires_grad_(j == t)
        net.prototypes.requires_grad_(False)

    # -- features
    def subspace_features(self, module, batch: dict, subspaces: list[int], return_attention=False):
        """(B, len(subspaces), C) text [CLS] states, one backbone pass per adapter set (stacked in groups of
        ``ease_adapters_per_pass``), and the backbone output of the first subspace's pass (batch rows [:B])."""
        backbone, net = module.backbone, module.method_net
        args, kwargs = backbone_inputs(batch)
        B = args[0].shape[0]
        per_pass = int(self.own.ease_adapters_per_pass) or len(subspaces)
        feats, first = [], None
        for start in range(0, len(subspaces), per_pass):
            group = subspaces[start:start + per_pass]
            G = len(group)
            rep_args = [_repeat(a, G) for a in args]
            rep_kwargs = {k: _repeat(v, G) for k, v in kwargs.items()}
            adapters = [_Grouped([net.adapters[j][layer] for j in group], B) for layer in range(backbone.num_layers)]
            out = backbone(*rep_args, **rep_kwargs, adapters=adapters,
                           return_attention=return_attention if first is None else False)
            feats.append(out.hidden[:, 0].reshape(G, B, -1).transpose(0, 1))
            if first is None:
                first = _first_rows(out, B)
        return torch.cat(feats, dim=1), first

    def encode(self, module, batch: dict, return_attention=False):
        t = self.current_phase(module)
        if module.training:
            args, kwargs = backbone_inputs(batch)
            out = module.backbone(*args, **kwargs, adapters=list(module.method_net.adapters[t]),
                                  return_attention=return_attention)
            return replace(out, pooled=out.hidden[:, 0])
        # evaluation: every subspace 0..t, concatenated; the other fields are those of subspace 0's pass
        feats, first = self.subspace_features(module, batch, list(range(t + 1)), return_attention)
        return replace(first, pooled=feats.flatten(1))

    # -- heads
    def logits(self, module, output) -> torch.Tensor:
        net, t = module.method_net, self.current_phase(module)
        n_seen, known = module.classifier.num_classes, self.known_classes(module)
        if module.training:  # the proxy head over the current phase's classes
            f = F.normalize(output.pooled.float(), dim=-1)
            w = F.normalize(net.proxy_weights[t].float(), dim=-1)
            new = net.proxy_sigmas[t] * (f @ w.t())
            return torch.cat([new.new_full((new.shape[0], known), float("-inf")), new], dim=1)
        B = output.pooled.shape[0]
        feats = F.normalize(output.pooled.float().reshape(B, t + 1, -1), dim=-1)
        protos = F.normalize(net.prototypes[:n_seen, :t + 1].float(), dim=-1)
        cos = torch.einsum("bjc,njc->bnj", feats, protos)
        return (cos * self.subspace_weights(n_seen, t).to(cos.device)).sum(-1)

    def subspace_weights(self, n_seen: int, t: int) -> torch.Tensor:
        """(n_seen, t + 1): 1 in each class's own subspace, ``ease_alpha`` / t in the others (PILOT reweighting)."""
        sizes = torch.tensor(self.phase_boundaries()).diff()
        own = torch.repeat_interleave(torch.arange(len(sizes)), sizes)[:n_seen]  # each class's phase
        w = torch.full((n_seen, t + 1), float(self.own.ease_alpha) / max(t, 1))
        w[torch.arange(n_seen), own] = 1.0
        return w

    # -- prototypes
    def after_training(self, ctx) -> None:
        module, t = ctx.module, ctx.phase
        data = ctx.eval_scenario.train_dataset(t)
        step = partial(_prototype_step, method=self, module=module, subspaces=list(range(t + 1)))
        out = ctx.predict(data, step=step)
        protos = module.method_net.prototypes
        with torch.no_grad():
            for c in ctx.new_classes:
                members = out["labels"] == c
                if members.any():
                    protos[c, :t + 1] = out["subspace_features"][members].mean(0).to(protos)
            self.synthesise_old_prototypes(protos, t)

    @torch.no_grad()
    def synthesise_old_prototypes(self, protos: torch.Tensor, t: int) -> None:
        """Old classes' prototypes in the newer subspaces, from the semantic similarity of old and new classes
        (PILOT ``solve_sim_reset``): for every earlier phase i and subspace d in i+1..t, with the classes K of
        phases d..t (which have real prototypes in d and in i): P[I, d] = softmax(cos(P[I, i], P[K, i])) @ P[K, d].
        """
        b = self.phase_boundaries()
        for i in range(t):
            old = slice(b[i], b[i + 1])
            for d in range(i + 1, t + 1):
                known = slice(b[d], b[t + 1])
                sim = F.cosine_similarity(protos[old, i][:, None].float(), protos[known, i][None].float(), dim=-1)
                protos[old, d] = (sim.softmax(dim=1) @ protos[known, d].float()).to(protos)


def _repeat(x: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The batch stacked ``n`` times along dim 0."""
    return None if x is None else x.repeat(n, *([1] * (x.dim() - 1)))


def _first_rows(out: ViLTOutput, B: int) -> ViLTOutput:
    """A stacked pass's output restricted to its first ``B`` rows."""
    attentions = None if out.attentions is None else tuple(None if a is None else a[:B] for a in out.attentions)
    return replace(out, pooled=out.pooled[:B], hidden=out.hidden[:B], masks=out.masks[:B],
                   patch_index=out.patch_index[:B], grid_sizes=out.grid_sizes[:B], attentions=attentions)


def _prototype_step(backbone, batch: dict, method: EASE, module, subspaces: list[int]) -> dict:
    """Predict step: per sample, its text [CLS] state in each subspace (B, len(subspaces), C), float32."""
    return {"subspace_features": method.subspace_features(module, batch, subspaces)[0].float()}
