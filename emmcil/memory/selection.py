"""Which samples of a class become exemplars, in what order.

The paper (Fig. 3) ranks masked samples by the cosine similarity of their feature f(x~) to the class mean mu_c and
keeps the top ones that fit the memory; herding (iCaRL) and random order are the ablation options.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from .herding import herding_order

SELECTIONS = ("class_mean", "herding", "random")


def cosine_to_mean(features: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """(N,) float64 cosine similarity of each row of ``features`` (N, C) to ``mean`` (C,)."""
    return F.cosine_similarity(features.double(), mean.double()[None], dim=1)


def class_mean_order(features: torch.Tensor, mean: torch.Tensor) -> list[int]:
    """Indices of ``features`` (N, C) by decreasing cosine similarity to ``mean`` (C,); ties keep index order."""
    return torch.argsort(-cosine_to_mean(features, mean), stable=True).tolist()


def selection_order(strategy: str, features: torch.Tensor, mean: torch.Tensor,
                    generator: torch.Generator | None = None) -> Iterator[int] | list[int]:
    """Ranking of one class's candidates. features (N, C): what is ranked (f(x~) for masked exemplars);
    mean (C,): mu_c for ``class_mean``; ``generator`` seeds ``random``."""
    if strategy == "class_mean":
        return class_mean_order(features, mean)
    if strategy == "herding":
        return herding_order(features)
    if strategy == "random":
        return torch.randperm(features.shape[0], generator=generator).tolist()
    raise ValueError(f"exemplar_selection={strategy!r}: expected one of {SELECTIONS}")
