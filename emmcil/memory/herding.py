"""Exemplar ranking by herding (Rebuffi et al., iCaRL, CVPR'17; as PyCIL's ``_construct_exemplar``)."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F


def herding_order(features: torch.Tensor, limit: int | None = None) -> Iterator[int]:
    """Yield sample indices in herding order, lazily (the caller stops when its budget is full).

    features: (N, C) of one class. They are L2-normalised; step k picks, among the samples not yet chosen, the one
    whose addition brings the mean of the k chosen closest to the class mean. Ties go to the lowest index, so
    the order is deterministic. ``limit``: stop after that many (default N).
    """
    f = F.normalize(features.detach().double(), dim=1)
    n = f.shape[0]
    mu = f.mean(0)
    chosen_sum = torch.zeros_like(mu)
    available = torch.ones(n, dtype=torch.bool)
    for k in range(1, min(n, n if limit is None else limit) + 1):
        dist = (mu - (chosen_sum + f) / k).norm(dim=1)
        dist[~available] = float("inf")
        i = int(torch.argmin(dist))
        available[i] = False
        chosen_sum += f[i]
        yield i
