"""Every method's training recipe, as data: optimiser, learning-rate schedule, epochs and batch size per phase;
each row names the reference files its values come from (``source``). The table, the values as each reference
file sets them, and what we chose where a reference has no setting: docs/method.md#how-each-method-trains
(``python -m emmcil.methods.recipes`` prints the resolved table for every method and dataset).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from emmcil.settings.general import INTERVALS, OPTIMIZERS, SCHEDULES

if TYPE_CHECKING:  # torch and transformers are imported where an optimiser is built: the config reads the table
    import torch


@dataclass(frozen=True)
class Recipe:
    """How a method trains in every phase. Each field is the config key of the same name (see config.py)."""

    optimizer: str              # adamw | adam | sgd (torch.optim)
    lr: float                   # peak learning rate
    weight_decay: float
    weight_decay_1d: bool       # also decay 1-D parameters (biases, norms, SSF scales/shifts); False: only the others
    lr_schedule: str            # linear | cosine (to 0 after the warmup) | constant (after the warmup)
    max_epoch: int              # epochs per phase
    batch_size: int             # effective batch (per_gpu_batchsize x devices x accumulation)
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw (torch's default)
    eps: float = 1e-8           # adam / adamw (torch's default)
    momentum: float = 0.0       # sgd
    warmup: float = 0.0         # linear warmup from 0: a fraction of the schedule's length (< 1) or a count
    schedule_interval: str = "step"  # the schedule advances every optimiser step, or every epoch
    per_dataset: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # dataset -> changed fields
    source: str = ""            # where the values come from (docs/method.md#how-each-method-trains)

    def values(self, dataset: str) -> dict[str, Any]:
        """The config values on ``dataset`` (JSON-able: betas as a list)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("per_dataset", "source")}
        out.update(self.per_dataset.get(dataset, {}))
        out["betas"] = list(out["betas"])
        return out


PROJECT = Recipe(optimizer="adamw", lr=1e-2, weight_decay=2e-2, weight_decay_1d=False, lr_schedule="linear",
                 max_epoch=20, batch_size=256, betas=(0.9, 0.98), eps=1e-8, warmup=0.1,
                 per_dataset={"demo": {"batch_size": 32}},
                 source="missing_aware_prompts vilt/config.py (task_finetune_food101), vilt/modules/vilt_utils.py")

RECIPES: dict[str, Recipe] = {
    "l2p": Recipe(optimizer="adam", lr=1.875e-3, weight_decay=0.0, weight_decay_1d=True, lr_schedule="constant",
                  max_epoch=10, batch_size=32, source="LAMDA-PILOT exps/l2p_inr.json, models/l2p.py"),
    "dualprompt": Recipe(optimizer="adam", lr=1e-3, weight_decay=0.0, weight_decay_1d=True, lr_schedule="constant",
                         max_epoch=10, batch_size=24,
                         source="LAMDA-PILOT exps/dualprompt_inr.json, models/dualprompt.py"),
    "ease": Recipe(optimizer="sgd", lr=0.05, weight_decay=5e-3, weight_decay_1d=True, lr_schedule="cosine",
                   max_epoch=20, batch_size=16, momentum=0.9, schedule_interval="epoch",
                   source="LAMDA-PILOT exps/ease_inr.json, models/ease.py"),
    "rebq": Recipe(optimizer="adamw", lr=1e-4, weight_decay=1e-2, weight_decay_1d=True, lr_schedule="cosine",
                   max_epoch=10, batch_size=4, betas=(0.9, 0.98), eps=1e-8, warmup=0.1,
                   source="RebQ.pytorch configs/train/default.yaml, src/optim/*.py, src/engine/trainer.py"),
}
"""Methods with a recipe of their own; every other method trains with :data:`PROJECT`."""


def method_recipe(method: str) -> Recipe:
    return RECIPES.get(method, PROJECT)


def recipe(method: str, dataset: str, key: str) -> Any:
    """The default of config key ``key`` for ``method`` on ``dataset``. Raises KeyError for a key no recipe has."""
    values = method_recipe(method).values(dataset)
    if key not in values:
        raise KeyError(f"{key!r} is not a recipe key; recipe keys: {sorted(values)}")
    return values[key]


# ---------------------------------------------------------------------------------------------- recipe -> torch
def build_optimizer(named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
                    optimisation: Any) -> torch.optim.Optimizer:
    """The recipe's torch optimiser over the parameters that require gradients. ``optimisation``: the run's
    optimisation settings (``Settings.optimisation``; so below; anything with its attributes).

    ``weight_decay_1d=False`` puts the 1-D ones (biases, norms, SSF scales and shifts) in a second group without
    weight decay. Raises ValueError for an unknown ``optimizer`` or when nothing is trainable.
    """
    import torch

    params = [p for _, p in named_parameters if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: nothing for the optimizer to train (check `tuning`)")
    o = optimisation
    wd = float(o.weight_decay)
    if o.weight_decay_1d:
        groups = [{"params": params, "weight_decay": wd}]
    else:
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    name, lr = o.optimizer, float(o.lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(o.betas), eps=float(o.eps))
    if name == "adam":  # torch's Adam: weight decay as an L2 term in the gradient (PILOT's)
        return torch.optim.Adam(groups, lr=lr, betas=tuple(o.betas), eps=float(o.eps))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(o.momentum))
    raise ValueError(f"optimizer={name!r}: expected one of {OPTIMIZERS}")


def build_scheduler(optimizer: torch.optim.Optimizer, optimisation: Any,
                    total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's schedule (transformers' ``get_scheduler``) over ``total`` intervals (optimiser steps or epochs,
    ``schedule_interval``): linear warmup from 0 over ``warmup`` (a fraction of ``total`` if < 1, else a count),
    then linear or cosine decay to 0 at ``total``, or constant. Raises ValueError for an unknown ``lr_schedule``."""
    import transformers

    name = optimisation.lr_schedule
    if name not in SCHEDULES:
        raise ValueError(f"lr_schedule={name!r}: expected one of {tuple(SCHEDULES)}")
    warmup = float(optimisation.warmup)
    warmup_steps = int(warmup * total) if warmup < 1 else int(warmup)
    return transformers.get_scheduler(SCHEDULES[name], optimizer, num_warmup_steps=warmup_steps,
                                      num_training_steps=total)


def schedule_interval(optimisation: Any) -> str:
    """``step`` or ``epoch`` (``optimisation.schedule_interval``); raises ValueError otherwise."""
    interval = optimisation.schedule_interval
    if interval not in INTERVALS:
        raise ValueError(f"schedule_interval={interval!r}: expected one of {INTERVALS}")
    return interval


# ---------------------------------------------------------------------------------------------- the table
def recipe_table(methods: Iterable[str], datasets: Iterable[str]) -> str:
    """Markdown: every method's resolved recipe on every dataset, with its source."""
    rows = ["| method | dataset | optimiser | lr | weight decay | schedule | epochs | batch | source |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        for d in datasets:
            v = method_recipe(m).values(d)
            opt = {"adamw": f"AdamW {tuple(v['betas'])}", "adam": f"Adam {tuple(v['betas'])}",
                   "sgd": f"SGD momentum {v['momentum']:g}"}[v["optimizer"]]
            wd = f"{v['weight_decay']:g}" + ("" if v["weight_decay_1d"] or not v["weight_decay"] else " (not 1-D)")
            w = v["warmup"]
            warm = "" if not w else f"{w * 100:g} % warmup, " if w < 1 else f"{w:g} warmup steps, "
            sched = f"{warm}{v['lr_schedule']}" + (", per epoch" if v["schedule_interval"] == "epoch" else "")
            rows.append(f"| {m} | {d} | {opt} | {v['lr']:g} | {wd} | {sched} | {v['max_epoch']} | "
                        f"{v['batch_size']} | {method_recipe(m).source} |")
    return "\n".join(rows)


if __name__ == "__main__":
    from emmcil.data.catalogue import DATASETS
    from emmcil.methods import METHODS

    print(recipe_table(sorted(METHODS), DATASETS))
