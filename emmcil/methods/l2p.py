"""L2P, Learning to Prompt (Wang et al., CVPR'22) on a frozen ViLT; exemplar-free (``method=l2p``).

How it is built, with its sources and defaults: docs/method.md#l2p.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from emmcil.model.vilt import IMAGE_TYPE
from emmcil.settings import MethodSettings, setting

from . import register
from .exemplar_free import ExemplarFreeMethod, backbone_inputs, pull_constraint, select_by_keys

HEADS = ("prompt", "pooler")
PROMPT_POSITIONS = ("image_cls", "none")


@dataclass(frozen=True)
class L2pSettings(MethodSettings):
    l2p_pool_size: int = setting(10, 'prompts in the pool (PILOT l2p_inr.json "size")', low=1)
    l2p_length: int = setting(5, 'tokens per prompt ("length")', low=1)
    l2p_top_k: int = setting(5, 'prompts chosen per sample ("top_k")', low=1)
    l2p_pull: float = setting(0.1, 'weight of the pull constraint ("pull_constraint_coeff"; PILOT subtracts it x the '
                              'key similarity: negative would push keys away)', low=0)
    l2p_batchwise: bool = setting(True, 'the batch\'s most chosen prompts for every sample ("batchwise_prompt")')
    l2p_head: str = setting("prompt", '"prompt": mean of the prompt outputs (PILOT "head_type"); "pooler": ViLT\'s '
                            'pooled')
    l2p_prompt_position: str = setting("image_cls", 'prompts get the image [CLS]\'s position embedding (PILOT); '
                                       '"none"')

    def check(self, settings) -> list[str]:
        for key, allowed in (("l2p_head", ("prompt", "pooler")), ("l2p_prompt_position", ("image_cls", "none"))):
            if getattr(self, key) not in allowed:
                return [f"{key}={getattr(self, key)!r}: expected one of {allowed}"]
        if not 1 <= int(self.l2p_top_k) <= int(self.l2p_pool_size):
            return [f"l2p_top_k={self.l2p_top_k} must lie in [1, l2p_pool_size={self.l2p_pool_size}]"]
        return []

    def layout_dependence(self, model_rng: str) -> str | None:
        return ("l2p_batchwise: a batch's most chosen prompts serve all its samples (training and evaluation)"
                if self.l2p_batchwise else None)


@register
class L2P(ExemplarFreeMethod):
    name = "l2p"
    settings = L2pSettings

    def pull_weight(self) -> float:
        return self.own.l2p_pull

    def build_net(self, backbone_cfg) -> nn.Module:
        C, pool, length = backbone_cfg.hidden_size, int(self.own.l2p_pool_size), int(self.own.l2p_length)
        net = nn.Module()
        net.prompts = nn.Parameter(torch.empty(pool, length, C).uniform_(-1, 1))  # PILOT prompt_init uniform
        net.keys = nn.Parameter(torch.empty(pool, C).uniform_(-1, 1))            # prompt_key_init uniform
        return net

    def encode(self, module, batch: dict, return_attention=False):
        net, backbone = module.method_net, module.backbone
        query = self.query(module, batch)
        idx = select_by_keys(query, net.keys, int(self.own.l2p_top_k), bool(self.own.l2p_batchwise))
        prompts = net.prompts[idx].flatten(1, 2)                                   # (B, top_k * length, C)
        if self.own.l2p_prompt_position == "image_cls":
            prompts = prompts + image_cls_position(backbone)
        args, kwargs = backbone_inputs(batch)
        out = backbone(*args, **kwargs, extra_tokens=prompts, return_attention=return_attention)
        if self.own.l2p_head == "prompt":
            out = replace(out, pooled=out.hidden[:, -prompts.shape[1]:].mean(1))
        out.prompt_idx = idx
        out.pull = pull_constraint(query, net.keys, idx)
        return out


def image_cls_position(backbone) -> torch.Tensor:
    """(C,) what ViLT adds to the image [CLS] token besides the token itself: its position embedding and the image
    token-type embedding (frozen here), for prompts placed at the [CLS]'s position as PILOT places them."""
    return backbone.transformer.pos_embed[0, 0] + backbone.token_type_embeddings.weight[IMAGE_TYPE]
