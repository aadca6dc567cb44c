"""L2P, Learning to Prompt (Wang et al., CVPR'22) on a frozen ViLT; exemplar-free (``method=l2p``).

A pool of ``l2p_pool_size`` prompts (each ``l2p_length`` tokens) with one learnable key each. For a batch:
1. **query**: the text [CLS] state of the frozen backbone without prompts (no gradient; see
   :mod:`~emmcil.methods.exemplar_free`), the multimodal counterpart of L2P's image [CLS] ``pre_logits``;
2. **selection**: the ``l2p_top_k`` keys most cosine-similar to the query; with ``l2p_batchwise`` (the original's
   ``batchwise_prompt``, in training and at test time alike) the whole batch uses the keys chosen most often over
   it;
3. **prompted pass**: the chosen prompts (top_k x length tokens) enter the sequence as extra input tokens (our hook
   appends them after the image tokens; L2P prepends them to the patch tokens: without position embeddings on the
   prompts, attention does not see the difference);
4. **head** (``l2p_head``): ``"prompt"`` (PILOT's ``head_type: prompt``) = the mean of the prompt tokens' outputs,
   through ViLT's (frozen) pooler, then the classifier; ``"cls"`` = ViLT's usual pooled text [CLS];
5. **loss**: cross-entropy over the current phase's classes (earlier classes' logits at -inf, PILOT's learner)
   minus ``l2p_pull`` x the pull constraint (mean over the batch of the summed cosine between the query and the
   chosen keys), which draws the chosen keys towards the queries.
The pool is shared by all phases (no freezing); the classifier grows by phase.

Defaults: PILOT ``exps/l2p_inr.json`` (ImageNet-R): size 10, length 5, top_k 5, ``prompt_init``/``prompt_key_init``
uniform(-1, 1), ``batchwise_prompt`` true, ``pull_constraint_coeff`` 0.1, ``drop`` 0, frozen backbone. The paper
says nothing else about its L2P. The optimiser is the project's (AdamW, 10 % warmup then linear decay, per phase;
PILOT: Adam lr 0.001875, constant, 10 epochs) with ``weight_decay=0`` (PILOT's value): with old logits masked, any
decay would only shrink old classes' classifier rows.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .exemplar_free import FROZEN_BACKBONE, ExemplarFreeMethod, backbone_inputs, pull_constraint, select_by_keys

HEADS = ("prompt", "cls")


@register
class L2P(ExemplarFreeMethod):
    name = "l2p"
    config = {
        "l2p_pool_size": 10,      # prompts in the pool (PILOT l2p_inr.json "size")
        "l2p_length": 5,          # tokens per prompt ("length")
        "l2p_top_k": 5,           # prompts chosen per sample ("top_k")
        "l2p_pull": 0.1,          # weight of the pull constraint ("pull_constraint_coeff")
        "l2p_batchwise": True,    # the batch's most chosen prompts for every sample ("batchwise_prompt")
        "l2p_head": "prompt",     # "prompt": mean of the prompt outputs (PILOT "head_type"); "cls": pooled [CLS]
    }
    named_config = {**FROZEN_BACKBONE, "weight_decay": 0.0}

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.cfg["l2p_head"] not in HEADS:
            raise ValueError(f"l2p_head={self.cfg['l2p_head']!r}: expected one of {HEADS}")
        if not 1 <= int(self.cfg["l2p_top_k"]) <= int(self.cfg["l2p_pool_size"]):
            raise ValueError(f"l2p_top_k={self.cfg['l2p_top_k']} must lie in [1, l2p_pool_size="
                             f"{self.cfg['l2p_pool_size']}]")

    def build_net(self, backbone_cfg) -> nn.Module:
        C, pool, length = backbone_cfg.hidden_size, int(self.cfg["l2p_pool_size"]), int(self.cfg["l2p_length"])
        net = nn.Module()
        net.prompts = nn.Parameter(torch.empty(pool, length, C).uniform_(-1, 1))  # PILOT prompt_init uniform
        net.keys = nn.Parameter(torch.empty(pool, C).uniform_(-1, 1))            # prompt_key_init uniform
        return net

    def encode(self, module, batch: dict, return_attention=False):
        net, backbone = module.method_net, module.backbone
        query = self.query(module, batch)
        idx = select_by_keys(query, net.keys, int(self.cfg["l2p_top_k"]), bool(self.cfg["l2p_batchwise"]))
        prompts = net.prompts[idx].flatten(1, 2)                                   # (B, top_k * length, C)
        args, kwargs = backbone_inputs(batch)
        out = backbone(*args, **kwargs, extra_tokens=prompts, return_attention=return_attention)
        if self.cfg["l2p_head"] == "prompt":
            mean = out.hidden[:, -prompts.shape[1]:].mean(1, keepdim=True)
            out = replace(out, pooled=backbone.pooler(mean))
        out.prompt_idx = idx
        out.pull = pull_constraint(query, net.keys, idx)
        return out

    def logits(self, module, output) -> torch.Tensor:
        return self.mask_old_classes(module, module.classifier(output.pooled))

    def training_loss(self, module, batch: dict, output, logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, batch["labels"]) - float(self.cfg["l2p_pull"]) * output.pull
