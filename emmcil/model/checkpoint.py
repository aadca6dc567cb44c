"""Load pretrained weights into :class:`~emmcil.model.vilt.ViLT` from a local file.

Formats, detected from the keys:
- the original ViLT Lightning checkpoint (``vilt_200k_mlm_itm.ckpt``: ``{"state_dict": {...}}``, keys as our module);
- Hugging Face ``ViltModel`` / ``Vilt*For*`` weights (``model.safetensors`` or ``pytorch_model.bin``, a file or the
  folder holding it): separate query/key/value are concatenated into ``qkv``;
- a timm ViT state dict (``vit_base_patch32_384`` names: ``blocks.*``, ``pos_embed``, ...), for the image side only.

Position embeddings are resized to the model: the 40 text positions bilinearly to ``max_text_len`` (as
``missing_aware_prompts``), the image grid bilinearly to ``image_size / patch_size``.
"""
from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

log = logging.getLogger(__name__)

BACKBONE_PREFIXES = ("text_embeddings.", "token_type_embeddings.", "transformer.")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. ``missing`` leaves out SSF and head parameters, which no checkpoint has."""

    path: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    @property
    def missing_backbone(self) -> list[str]:
        return [k for k in self.missing if k.startswith(BACKBONE_PREFIXES)]

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} tensors from {self.path} ({self.format}); "
                f"missing {len(self.missing)} (backbone {len(self.missing_backbone)}), "
                f"unexpected {len(self.unexpected)}, resized {self.resized or 'none'}")


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.ckpt``/``.pt``/``.bin``/``.safetensors`` file or a Hugging Face model folder.

    Pickled files load with ``torch.load(weights_only=True)`` unless ``trust`` is set: a Lightning checkpoint that
    pickles other objects then fails with a message that says how to opt in.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f"{path}: refused by torch.load(weights_only=True) because it pickles more than tensors ({e}). "
            "If you trust this file, load it with trust=True (config key trust_checkpoint=True).") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (or {{'state_dict': ...}}), got {type(obj).__name__}")
    return obj


def detect_format(sd: dict[str, torch.Tensor]) -> str:
    keys = list(sd)
    if any(k.startswith(("transformer.blocks.", "text_embeddings.")) for k in keys):
        return "vilt"
    if any(re.match(r"^(vilt\.)?(embeddings\.text_embeddings|encoder\.layer)\.", k) for k in keys):
        return "hf"
    if any(k.startswith("blocks.") for k in keys) and "pos_embed" in sd:
        return "timm"
    raise ValueError("unrecognised checkpoint: no ViLT (transformer.blocks.*), Hugging Face ViLT "
                     "(encoder.layer.*) or timm ViT (blocks.*) keys; first keys: " + ", ".join(keys[:5]))


_HF_RENAMES = [
    (r"^embeddings\.text_embeddings\.", "text_embeddings."),
    (r"^embeddings\.cls_token$", "transformer.cls_token"),
    (r"^embeddings\.position_embeddings$", "transformer.pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "transformer.patch_embed.proj."),
    (r"^embeddings\.token_type_embeddings\.", "token_type_embeddings."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"transformer.blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"transformer.blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"transformer.blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"transformer.blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"transformer.blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "transformer.norm."),
    (r"^pooler\.dense\.", "pooler.dense."),
]


def convert_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ViLT names -> original ViLT names (the inverse of transformers' conversion script)."""
    out, qkv = {}, {}
    for key, value in sd.items():
        key = key[len("vilt."):] if key.startswith("vilt.") else key
        m = re.match(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$", key)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        for pattern, repl in _HF_RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            out[key] = value  # left as is; reported as unexpected
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"layer {layer}: incomplete query/key/value {kind} ({sorted(parts)})")
        out[f"transformer.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def convert_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ViT names -> ``transformer.*``; the classification head and unused norms are dropped."""
    drop = ("head.", "fc_norm.", "norm_pre.")
    return {f"transformer.{k}": v for k, v in sd.items() if not k.startswith(drop)}


def resize_text_positions(weight: torch.Tensor, length: int) -> torch.Tensor:
    """(L, C) -> (length, C), bilinear over the position axis as ``missing_aware_prompts`` does."""
    return F.interpolate(weight[None, None], size=(length, weight.shape[1]), mode="bilinear",
                         align_corners=False)[0, 0]


def resize_image_positions(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g*g, C) -> (1, 1 + grid*grid, C): the [CLS] entry kept, the square grid resized bilinearly with
    ``align_corners=True`` and no antialiasing, as ViLT resizes its table to each image's grid
    (``timm.layers.resample_abs_pos_embed``, whose default is bicubic). Raises ValueError for a grid that is not square.
    """
    g = int(round((pos.shape[1] - 1) ** 0.5))
    if g * g != pos.shape[1] - 1:
        raise ValueError(f"pos_embed has {pos.shape[1] - 1} patch positions, not a square grid")
    return resample_abs_pos_embed(pos, [grid, grid], [g, g], num_prefix_tokens=1, interpolation="bilinear",
                                  antialias=False, align_corners=True)


def load_pretrained(model: nn.Module, path: str | Path, trust: bool = False,
                    allow_missing_backbone: bool = False) -> LoadReport:
    """Load a checkpoint into ``model`` (a :class:`ViLT`, or a module holding one as ``.backbone``) by name.

    Raises on any shape mismatch that resizing cannot fix (naming key and both shapes) and, unless
    ``allow_missing_backbone``, when a backbone tensor is absent. Returns a :class:`LoadReport`, also logged.
    """
    target = getattr(model, "backbone", model)
    sd = read_state_dict(path, trust=trust)
    fmt = detect_format(sd)
    sd = {"hf": convert_hf, "timm": convert_timm}.get(fmt, dict)(sd)
    sd.pop("text_embeddings.position_ids", None)  # a buffer in transformers 4.2, rebuilt by BertEmbeddings now

    own = target.state_dict()
    report = LoadReport(path=str(path), format=fmt)
    key = "text_embeddings.position_embeddings.weight"
    if key in sd and key in own and sd[key].shape[0] != own[key].shape[0] and sd[key].shape[1] == own[key].shape[1]:
        sd[key] = resize_text_positions(sd[key], own[key].shape[0])
        report.resized.append(key)
    key = "transformer.pos_embed"
    if key in sd and key in own and sd[key].shape != own[key].shape and sd[key].shape[-1] == own[key].shape[-1]:
        sd[key] = resize_image_positions(sd[key], target.cfg.grid)
        report.resized.append(key)

    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"{path}: shape mismatch, is the model config (hidden_size, num_layers, patch_size, "
                         f"vocab_size) the checkpoint's?\n  " + "\n  ".join(mismatched))
    report.unexpected = sorted(k for k in sd if k not in own)
    report.missing = sorted(k for k in own if k not in sd and ".ssf" not in k)
    if fmt == "timm":  # an image-only checkpoint: the text side legitimately stays at its init
        report.missing = [k for k in report.missing if k.startswith("transformer.")]
    if report.missing_backbone and not allow_missing_backbone:
        raise ValueError(f"{path}: {len(report.missing_backbone)} backbone tensors missing, e.g. "
                         f"{report.missing_backbone[:5]}; pass allow_missing_backbone=True to load anyway")
    report.loaded = sorted(k for k in sd if k in own)
    target.load_state_dict({k: sd[k] for k in report.loaded}, strict=False)
    log.info(report.summary())
    return report
