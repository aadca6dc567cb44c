"""DualPrompt (Wang et al., ECCV'22) on a frozen ViLT; exemplar-free (``method=dualprompt``).

How it is built, with its sources and defaults: docs/method.md#dualprompt.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from emmcil.settings import MethodSettings, setting

from . import register
from .exemplar_free import ExemplarFreeMethod, backbone_inputs, pull_constraint, select_by_keys

TEST_KEYS = ("pool", "seen")
HEADS = ("token", "pooler")


@dataclass(frozen=True)
class DualPromptSettings(MethodSettings):
    dualprompt_g_layers: list[int] = setting([0, 1], 'layers of the G-prompt (PILOT "g_prompt_layer_idx")', low=0,
                                             unique=True)
    dualprompt_g_length: int = setting(5, 'G-prompt tokens per layer ("g_prompt_length")', low=1)
    dualprompt_e_layers: list[int] = setting([2, 3, 4], 'layers of the E-prompts ("e_prompt_layer_idx")', low=0,
                                             unique=True)
    dualprompt_e_length: int = setting(5, 'E-prompt tokens per layer ("length")', low=1)
    dualprompt_pool_size: int = setting(0, 'E-prompts allocated; 0 = one per phase (PILOT "size" 10 = its 10 tasks)',
                                        low=0)
    dualprompt_pull: float = setting(0.1, 'weight of the pull constraint ("pull_constraint_coeff"; PILOT subtracts '
                                     'it x the key similarity: negative would push keys away)', low=0)
    dualprompt_batchwise: bool = setting(True, 'test-time E-prompt by the batch\'s majority ("batchwise_prompt")')
    dualprompt_test_keys: str = setting("pool", 'test-time candidates: "pool" (every key, PILOT) | "seen" (seen '
                                        'phases\')')
    dualprompt_head: str = setting("token", '"token": final-normed text [CLS] (PILOT "head_type"); "pooler": ViLT\'s')
    dualprompt_shared_pool: bool = setting(True, 'E-prompt t starts from E-prompt t-1 ("shared_prompt_pool")')

    def check(self, settings) -> list[str]:
        for key, allowed in (("dualprompt_test_keys", ("pool", "seen")), ("dualprompt_head", ("token", "pooler"))):
            if getattr(self, key) not in allowed:
                return [f"{key}={getattr(self, key)!r}: expected one of {allowed}"]
        depth, num_phases = int(settings.model.num_layers), int(settings.experiment.num_phases)
        bad = [i for i in [*self.dualprompt_g_layers, *self.dualprompt_e_layers] if not 0 <= int(i) < depth]
        if bad:
            return [f"dualprompt_g_layers={list(self.dualprompt_g_layers)}, dualprompt_e_layers="
                    f"{list(self.dualprompt_e_layers)}: layers {bad} do not exist in a {depth}-layer model "
                    f"(num_layers={depth}; the demo's 2 layers take dualprompt_g_layers=[0] dualprompt_e_layers=[1])"]
        if not self.dualprompt_e_layers:
            return ["dualprompt_e_layers=[]: DualPrompt needs E-prompts"]
        if 0 < int(self.dualprompt_pool_size) < num_phases:
            return [f"dualprompt_pool_size={self.dualprompt_pool_size} is smaller than num_phases={num_phases}: "
                    f"DualPrompt needs one E-prompt per phase (0 allocates exactly that)"]
        return []

    def layout_dependence(self, model_rng: str) -> str | None:
        return ("dualprompt_batchwise: at test time a batch's majority E-prompt serves all its samples"
                if self.dualprompt_batchwise else None)


@register
class DualPrompt(ExemplarFreeMethod):
    name = "dualprompt"
    settings = DualPromptSettings

    def pull_weight(self) -> float:
        return self.own.dualprompt_pull

    def pool_size(self) -> int:
        """E-prompts allocated: ``dualprompt_pool_size``, 0 = one per phase (at least num_phases: the settings'
        check)."""
        return int(self.own.dualprompt_pool_size) or int(self.settings.experiment.num_phases)

    def layers(self) -> tuple[list[int], list[int]]:
        """(G-prompt layers, E-prompt layers), each in [0, num_layers) (the settings' check)."""
        return list(self.own.dualprompt_g_layers), list(self.own.dualprompt_e_layers)

    def build_net(self, backbone_cfg) -> nn.Module:
        C = backbone_cfg.hidden_size
        g, e = self.layers()
        net = nn.Module()
        net.g_prompts = nn.Parameter(torch.empty(len(g), 2, int(self.own.dualprompt_g_length), C).uniform_(-1, 1))
        e_shape = (len(e), 2, int(self.own.dualprompt_e_length), C)
        net.e_prompts = nn.ParameterList([nn.Parameter(torch.empty(e_shape).uniform_(-1, 1))
                                          for _ in range(self.pool_size())])
        net.e_keys = nn.ParameterList([nn.Parameter(torch.empty(C).uniform_(-1, 1)) for _ in range(self.pool_size())])
        return net

    def set_trainable(self, module) -> None:
        super().set_trainable(module)
        net, t = module.method_net, self.current_phase(module)
        for j, (prompt, key) in enumerate(zip(net.e_prompts, net.e_keys)):
            prompt.requires_grad_(j == t)
            key.requires_grad_(j == t)

    def before_phase(self, ctx) -> None:
        t = ctx.phase
        if t > 0 and self.own.dualprompt_shared_pool:
            net = ctx.module.method_net
            with torch.no_grad():
                net.e_prompts[t].copy_(net.e_prompts[t - 1])

    def select(self, module, query: torch.Tensor) -> torch.Tensor:
        """(B,) the E-prompt of each sample: the current phase's in training, else top-1 by key among the whole
        pool or the seen phases' keys (``dualprompt_test_keys``)."""
        t = self.current_phase(module)
        if module.training:
            return torch.full((query.shape[0],), t, dtype=torch.long, device=query.device)
        keys = list(module.method_net.e_keys)
        keys = torch.stack(keys if self.own.dualprompt_test_keys == "pool" else keys[:t + 1])
        return select_by_keys(query, keys, 1, bool(self.own.dualprompt_batchwise))[:, 0]

    def encode(self, module, batch: dict, return_attention=False):
        net, backbone = module.method_net, module.backbone
        query = self.query(module, batch)
        idx = self.select(module, query)
        B = query.shape[0]
        g_layers, e_layers = self.layers()
        prefixes: list = [None] * backbone.num_layers

        def add(layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
            old = prefixes[layer]
            prefixes[layer] = (keys, values) if old is None else (torch.cat([old[0], keys], 1),
                                                                  torch.cat([old[1], values], 1))

        for i, layer in enumerate(g_layers):
            add(layer, net.g_prompts[i, 0].expand(B, -1, -1), net.g_prompts[i, 1].expand(B, -1, -1))
        chosen = torch.stack(list(net.e_prompts))[idx]                               # (B, n_e, 2, length, C)
        for i, layer in enumerate(e_layers):
            add(layer, chosen[:, i, 0], chosen[:, i, 1])
        args, kwargs = backbone_inputs(batch)
        out = backbone(*args, **kwargs, prefixes=prefixes, return_attention=return_attention)
        if self.own.dualprompt_head == "token":
            out = replace(out, pooled=out.hidden[:, 0])
        out.prompt_idx = idx
        out.pull = pull_constraint(query, torch.stack(list(net.e_keys)), idx[:, None])
        return out
