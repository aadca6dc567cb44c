"""SSF: per-channel Scale and Shift of Features (Lian et al., NeurIPS'22), and the freeze policy around it.

An :class:`SSF` sits right after a linear map or a LayerNorm, so it can be folded into that layer for inference
(:func:`merge_ssf`): ``s * (W x + b) + t = (s W) x + (s b + t)``.
"""
from __future__ import annotations

import torch
from torch import nn

from emmcil.settings.general import TUNING_MODES  # noqa: F401  (declared with the settings)


class SSF(nn.Module):
    """``y = x * scale + shift`` over the channel axis; scale ~ N(1, .02), shift ~ N(0, .02) as in the SSF code.

    ``channel_dim``: the axis that holds the channels, fixed by the layer it follows: -1 for token layout
    (..., C) after a Linear or LayerNorm, 1 for convolution layout (B, C, H, W) after a Conv2d. The layout decides,
    never the sizes: a patch grid exactly C patches wide is still scaled along its channels. ValueError when that
    axis is not ``dim`` long.
    """

    def __init__(self, dim: int, channel_dim: int = -1):
        super().__init__()
        if channel_dim not in (-1, 1):
            raise ValueError(f"channel_dim={channel_dim}: -1 (tokens, channels last) or 1 (channels first)")
        self.dim, self.channel_dim = dim, channel_dim
        self.scale = nn.Parameter(torch.empty(dim))
        self.shift = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.scale, mean=1.0, std=0.02)
        nn.init.normal_(self.shift, mean=0.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[self.channel_dim] != self.dim:
            layout = "(..., C)" if self.channel_dim == -1 else "(B, C, ...)"
            raise ValueError(f"SSF({self.dim}) over {layout} got a tensor of shape {tuple(x.shape)}")
        if self.channel_dim == -1:
            return x * self.scale + self.shift
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(view) + self.shift.view(view)

    def extra_repr(self) -> str:
        return f"{self.dim}" + ("" if self.channel_dim == -1 else ", channel_dim=1")


def maybe_ssf(enabled: bool, dim: int, channel_dim: int = -1) -> nn.Module:
    return SSF(dim, channel_dim) if enabled else nn.Identity()


@torch.no_grad()
def folded(layer: nn.Module, ssf: SSF) -> tuple[torch.Tensor, torch.Tensor]:
    """New (weight, bias) of the Linear, Conv2d or LayerNorm ``layer`` that feeds ``ssf``, with ``ssf`` folded in:
    weight rows times scale, bias times scale plus shift (a missing bias counts as 0). Computed in float32 and
    returned in the layer's dtype; the layer itself is not changed."""
    s, t = ssf.scale.float(), ssf.shift.float()
    weight = layer.weight
    w = weight.float() * s.view(-1, *([1] * (weight.dim() - 1)))
    b = (layer.bias.float() if layer.bias is not None else torch.zeros_like(s)) * s + t
    return w.to(weight.dtype), b.to(weight.dtype)


def _ssf_pairs(model: nn.Module):
    """(name of the owning module, owner, layer attribute, SSF) for every SSF of ``model``."""
    for name, module in model.named_modules():
        for layer_name, ssf_name in getattr(module, "ssf_pairs", ()):
            ssf = getattr(module, ssf_name)
            if isinstance(ssf, SSF):
                yield name, module, layer_name, ssf_name, ssf


@torch.no_grad()
def merge_ssf(model: nn.Module) -> nn.Module:
    """Fold every SSF of ``model`` into its preceding layer and replace it by ``nn.Identity`` (in place).

    Modules that own SSFs declare ``ssf_pairs = (("qkv", "ssf_qkv"), ...)``: (preceding layer, SSF) attribute names.
    The merged model computes the same function (to float rounding) with the plain backbone's cost.
    """
    for _, module, layer_name, ssf_name, ssf in list(_ssf_pairs(model)):
        layer = getattr(module, layer_name)
        weight, bias = folded(layer, ssf)
        layer.weight.copy_(weight)
        if layer.bias is None:
            layer.bias = nn.Parameter(bias, requires_grad=layer.weight.requires_grad)
        else:
            layer.bias.copy_(bias)
        setattr(module, ssf_name, nn.Identity())
    return model


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict as :func:`merge_ssf` would leave it, computed without changing ``model``: the SSF
    entries dropped, the layers before them folded. Loads into a merged copy of ``model`` (refreshing its weights
    in place, e.g. after more training)."""
    state = {k: v.detach() for k, v in model.state_dict().items()}
    for name, module, layer_name, ssf_name, ssf in _ssf_pairs(model):
        prefix = f"{name}." if name else ""
        state[f"{prefix}{layer_name}.weight"], state[f"{prefix}{layer_name}.bias"] = folded(
            getattr(module, layer_name), ssf)
        del state[f"{prefix}{ssf_name}.scale"], state[f"{prefix}{ssf_name}.shift"]
    return state


def has_ssf(model: nn.Module) -> bool:
    return any(isinstance(m, SSF) for m in model.modules())


def is_tunable(name: str, tuning: str = "ssf",
               trainable_prefixes: tuple[str, ...] = ("pooler.", "classifier.")) -> bool:
    """Whether parameter ``name`` may train under ``tuning`` (see :func:`apply_freeze_policy`)."""
    if tuning == "full":
        return True
    dotted = "." + name  # match prefixes at any depth: "pooler." also finds "backbone.pooler."
    is_ssf = tuning == "ssf" and ".ssf" in dotted
    return is_ssf or any("." + prefix in dotted for prefix in trainable_prefixes)


def apply_freeze_policy(model: nn.Module, tuning: str = "ssf",
                        trainable_prefixes: tuple[str, ...] = ("pooler.", "classifier.")) -> int:
    """Set ``requires_grad`` by the tuning mode and return the number of trainable parameters.

    - ``ssf``: SSF scales/shifts + parameters under a module named in ``trainable_prefixes`` (pooler, head), at
      any depth (``pooler.`` matches ``backbone.pooler.dense.weight``).
    - ``frozen``: only ``trainable_prefixes`` (a linear probe on the frozen backbone).
    - ``full``: everything.
    """
    if tuning not in TUNING_MODES:
        raise ValueError(f"tuning={tuning!r}: expected one of {TUNING_MODES}")
    if tuning == "ssf" and not has_ssf(model):
        raise ValueError("tuning='ssf' but the model was built without SSF (config key ssf=False)")
    for name, p in model.named_parameters():
        p.requires_grad_(is_tunable(name, tuning, trainable_prefixes))
    return count_parameters(model, trainable_only=True)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
