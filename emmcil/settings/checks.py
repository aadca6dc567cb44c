"""The checks the settings and the library share (one copy): memory budget, replay, masking, backbone sizes.

Torch-free, so that the config is checked when it is resolved (``print_config``, the scripts' dry runs, a run's
start) without importing the model; the memory buffer, the replay dataset, the masking step and the backbone call
the same functions on their own arguments.
"""
from __future__ import annotations

UNITS = ("tokens", "byte_share", "bytes")  # memory_unit: the default first
BUDGET_MODES = ("per_class", "total")
FILL_POLICIES = ("skip", "stop")
# memory_unit values of older versions -> today's name (a saved buffer still loads; a config gets an error)
RENAMED_UNITS = {"exemplar": "byte_share"}
AUG_MODES = ("in_place", "beside")
MASKED_REPLAY = ("patches", "black")  # how a masked image is fed to the model (emm's masked_replay)
NORMS = ("minmax", "mass", "ratio")
CLS_TOKENS = ("text", "image")
SELECTIONS = ("class_mean", "herding", "random")


def check_memory(memory_per_class: float, mode: str, memory_total: float, fill: str, unit: str) -> None:
    """ValueError for an unknown unit (naming the new name of a renamed one), mode or fill policy, a negative
    memory_per_class, or a "total" mode without a positive memory_total."""
    if unit in RENAMED_UNITS:
        raise ValueError(f"memory_unit={unit!r} is now called {RENAMED_UNITS[unit]!r} (each exemplar's share of "
                         f"the sample's bytes); the default is 'tokens'. Expected one of {UNITS}")
    if unit not in UNITS:
        raise ValueError(f"memory_unit={unit!r}: expected one of {UNITS}")
    if fill not in FILL_POLICIES:
        raise ValueError(f"memory_fill={fill!r}: expected one of {FILL_POLICIES}")
    if mode not in BUDGET_MODES:
        raise ValueError(f"memory_budget_mode={mode!r}: expected one of {BUDGET_MODES}")
    if not memory_per_class >= 0:
        raise ValueError(f"memory_per_class={memory_per_class} must be >= 0 (full exemplars a class)")
    if mode == "total" and not memory_total > 0:
        raise ValueError(f"memory_budget_mode='total' needs memory_total > 0 (full exemplars shared by the seen "
                         f"classes), not {memory_total!r}")


def check_augmentation(p_text_swap: float, p_patch_merge: float, mode: str = "in_place",
                       masked_replay: str = "patches") -> None:
    """ValueError naming the key (``aug_text_swap`` / ``aug_patch_merge``) of a probability outside [0, 1], or an
    unknown ``aug_mode`` / ``masked_replay``."""
    for name, p in (("aug_text_swap", p_text_swap), ("aug_patch_merge", p_patch_merge)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p} must lie in [0, 1]")
    if mode not in AUG_MODES:
        raise ValueError(f"aug_mode={mode!r}: expected one of {AUG_MODES}")
    if masked_replay not in MASKED_REPLAY:
        raise ValueError(f"masked_replay={masked_replay!r}: expected one of {MASKED_REPLAY}")


def check_replay_ratio(replay_ratio: float) -> None:
    """ValueError for a ``replay_ratio`` outside [0, 1)."""
    if not 0.0 <= replay_ratio < 1.0:
        raise ValueError(f"replay_ratio={replay_ratio} must lie in [0, 1)")


def check_masking(tau_image: float, tau_text: float, layer_reduce: str, head_reduce: str, norm: str,
                  cls_token: str) -> None:
    """ValueError naming the key of a masking setting (emm's ``mask_*`` / ``tau_*``) no masking step takes."""
    if layer_reduce not in ("mean", "rollout"):
        raise ValueError(f"mask layer_reduce={layer_reduce!r}: expected 'mean' or 'rollout'")
    if head_reduce not in ("mean", "max"):
        raise ValueError(f"mask head_reduce={head_reduce!r}: expected 'mean' or 'max'")
    if norm not in NORMS:
        raise ValueError(f"mask norm={norm!r}: expected one of {NORMS}")
    if cls_token not in CLS_TOKENS:
        raise ValueError(f"mask_cls_token={cls_token!r}: expected one of {CLS_TOKENS}")
    for name, tau in (("tau_image", tau_image), ("tau_text", tau_text)):
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"{name}={tau} must lie in [0, 1]")


def backbone_problems(sizes: dict) -> list[str]:
    """The sizes no backbone can have (``max_text_len``, ``vocab_size``, ``hidden_size``, ``num_layers``,
    ``num_heads``, ``patch_size``, ``image_size``, an ``mlp_ratio`` that leaves no MLP unit, the dropout
    probabilities), one line each naming the key."""
    problems = []
    if sizes["max_text_len"] < 2:
        problems.append(f"max_text_len={sizes['max_text_len']}: at least 2 ([CLS] and [SEP])")
    for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "patch_size", "image_size"):
        if sizes[key] < 1:
            problems.append(f"{key}={sizes[key]}: at least 1")
    if "mlp_ratio" in sizes and sizes["hidden_size"] >= 1 and int(sizes["hidden_size"] * sizes["mlp_ratio"]) < 1:
        problems.append(f"mlp_ratio={sizes['mlp_ratio']}: an MLP of int(hidden_size x mlp_ratio) = "
                        f"{int(sizes['hidden_size'] * sizes['mlp_ratio'])} units (hidden_size={sizes['hidden_size']})"
                        f"; at least 1")
    if sizes["num_heads"] >= 1 and sizes["hidden_size"] % sizes["num_heads"]:
        problems.append(f"hidden_size={sizes['hidden_size']} is not divisible by num_heads={sizes['num_heads']}")
    if sizes["patch_size"] >= 1 and sizes["image_size"] % sizes["patch_size"]:
        problems.append(f"image_size={sizes['image_size']} is not a multiple of patch_size={sizes['patch_size']}")
    for key in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
        if not 0.0 <= sizes[key] < 1.0:
            problems.append(f"{key}={sizes[key]}: a probability in [0, 1)")
    return problems
