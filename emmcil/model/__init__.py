"""The ViLT-derived backbone with SSF, and how to build it from a config.

>>> from emmcil.model import ViLTConfig, build_backbone
>>> model = build_backbone({"hidden_size": 64, "num_layers": 2, "num_heads": 4, "patch_size": 16,
...                         "image_size": 64})
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from emmcil.settings.general import TINY, VILT_B32  # noqa: F401 (the model sizes, declared with the settings)

from .checkpoint import LoadReport, load_pretrained, read_state_dict
from .ssf import SSF, apply_freeze_policy, count_parameters, merge_ssf
from .vilt import ViLT, ViLTConfig, ViLTOutput

log = logging.getLogger(__name__)

__all__ = ["ViLT", "ViLTConfig", "ViLTOutput", "SSF", "build_backbone", "load_pretrained", "read_state_dict",
           "LoadReport", "merge_ssf", "apply_freeze_policy", "count_parameters", "timm_imagenet_weights"]

# Model sizes as named configs use them (config.py): ViLT-B/32 and a tiny model for CPU tests and the demo.


def timm_imagenet_weights(name: str = "vit_base_patch32_384") -> Path | None:
    """Path of timm's ImageNet weights for ``name`` if they are already in the local Hugging Face cache, else None.

    Never downloads: ViLT's own initialisation (``load_path=""``) was timm's ImageNet ViT, which we honour only
    when it is on disk.
    """
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache
        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    except Exception:  # unknown name or no hub id: nothing local to find
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename) if hub_id else None
        if isinstance(found, str):
            return Path(found)
    return None


# how build_backbone initialises the model: arguments, not fields of ViLTConfig
INIT_ARGUMENTS = ("load_path", "trust_checkpoint", "timm_init")


def build_backbone(cfg: Mapping | ViLTConfig | None = None, load_path: str = "", trust_checkpoint: bool = False,
                   timm_init: str = "") -> ViLT:
    """Build :class:`ViLT` from ``cfg`` (:class:`ViLTConfig`'s fields; other keys are ignored) and initialise it
    (the run's :class:`~emmcil.settings.general.ModelSettings` give the rest): ``load_path`` (a ViLT / Hugging Face /
    timm checkpoint, "" for none), ``trust_checkpoint`` (allow full unpickling), ``timm_init`` (a timm model name
    whose ImageNet weights initialise the image side when no ``load_path`` is given and they are in the local cache).
    TypeError for a mapping that holds one of these three as a key: they are arguments, and a key would be ignored
    (a checkpoint silently not loaded).
    """
    held = sorted(set(INIT_ARGUMENTS) & set(cfg)) if isinstance(cfg, Mapping) else []
    if held:
        raise TypeError(f"build_backbone: {held} in the config mapping are arguments, not ViLTConfig fields: pass "
                        f"them as build_backbone(cfg, load_path=..., trust_checkpoint=..., timm_init=...)")
    config = cfg if isinstance(cfg, ViLTConfig) else ViLTConfig.from_dict(cfg or {})
    model = ViLT(config)
    if load_path:
        report = load_pretrained(model, load_path, trust=bool(trust_checkpoint))
        print(report.summary())
    elif timm_init:
        local = timm_imagenet_weights(timm_init)
        if local is None:
            log.warning("timm weights %s are not in the local cache: random initialisation", timm_init)
        else:
            print(load_pretrained(model, local, allow_missing_backbone=True).summary())
    return model
