"""Fine-tuning without memory: each phase trains on its new classes only (the lower bound)."""
from __future__ import annotations

from . import register
from .base import Method


@register
class Finetune(Method):
    """SSF tuning phase after phase on the new data only; catastrophic forgetting is expected."""

    name = "finetune"
