"""Every method's training recipe, as data: optimiser, learning-rate schedule, epochs and batch size per phase.

A baseline is only a fair row of a table if it trains as its authors trained it, so each method carries the recipe of
its reference code (Mammoth's "best configs" idea), cited below; the paper's own method and the baselines built on
SSF training (``finetune``, ``joint``, ``replay``, ``mrdc``, ``cim``, ``emm``) share the project's recipe.

=============  =========  ========  ======  ==================  ========================  ======  =====
recipe         optimiser  lr        wd      wd on               schedule                  epochs  batch
=============  =========  ========  ======  ==================  ========================  ======  =====
project (SSF)  AdamW      1e-2      2e-2    not 1-D parameters  10 % warmup, linear -> 0  20      256
l2p            Adam       1.875e-3  0       all                 constant                  10      32
dualprompt     Adam       1e-3      0       all                 constant                  10      24
ease           SGD m 0.9  0.05      5e-3    all                 cosine -> 0, per epoch    20      16
rebq           AdamW      1e-4      1e-2    all                 10 % warmup, cosine -> 0  10      4
=============  =========  ========  ======  ==================  ========================  ======  =====

(``python -m emmcil.methods.recipes`` prints the resolved table for every method and dataset.)

Sources:

- **project** (SSF and the exemplar methods on it; docs/method.md, "How each method trains"): the first author's
  ``YiLunLee/missing_aware_prompts``, ``vilt/config.py`` ``task_finetune_food101`` (AdamW, lr 1e-2, weight decay
  2e-2, 20 epochs, batch 256, warmup 0.1, ``decay_power`` 1, ``end_lr`` 0) and ``vilt/modules/vilt_utils.py``
  ``set_schedule`` (betas (0.9, 0.98), eps 1e-8, no decay on biases and norm weights,
  ``get_polynomial_decay_schedule_with_warmup`` stepped every step, which at power 1 and end 0 is
  ``get_linear_schedule_with_warmup``). Our SSF scales and shifts are 1-D and, like biases and norms, get no decay
  (``weight_decay_1d=False``). MRDC and CIM were published with their own ResNet recipes; the paper's rows are
  "SSF + MRDC" and "SSF + CIM", i.e. SSF training with their memories, so they train with this recipe.
- **l2p**: LAMDA-PILOT ``exps/l2p_inr.json`` (``optimizer`` adam, ``init_lr`` 0.001875, ``weight_decay`` 0,
  ``scheduler`` constant, ``tuned_epoch`` 10, ``batch_size`` 32) and ``models/l2p.py`` (``get_optimizer``: torch
  Adam over every trainable parameter, default betas and eps; ``get_scheduler``: constant means no scheduler;
  ``reinit_optimizer``: a new optimiser every task, as every phase's Trainer builds one here).
- **dualprompt**: LAMDA-PILOT ``exps/dualprompt_inr.json`` (adam, 0.001, weight decay 0, constant, 10 epochs, batch
  24) and ``models/dualprompt.py`` (same ``get_optimizer`` / ``get_scheduler`` as L2P).
- **ease**: LAMDA-PILOT ``exps/ease_inr.json`` (sgd, ``init_lr`` = ``later_lr`` 0.05, ``weight_decay`` 0.005,
  ``min_lr`` 0, cosine, ``init_epochs`` = ``later_epochs`` 20, batch 16) and ``models/ease.py`` (``get_optimizer``:
  SGD with momentum 0.9 and that weight decay on every trainable parameter; ``get_scheduler``: ``CosineAnnealingLR``
  with ``T_max`` = epochs and ``eta_min`` = ``min_lr``, stepped once per epoch in ``_init_train``, which is
  ``get_cosine_schedule_with_warmup`` without warmup over the epochs).
- **rebq**: ``Tree-Shu-Zhao/RebQ.pytorch`` ``configs/train/default.yaml`` (AdamW, lr 1e-4, betas (0.9, 0.98), eps
  1e-8, ``warmup_cosine`` with ``NUM_WARMUP_STEPS`` 0.1 stepped every step, 10 epochs, batch 4),
  ``src/optim/optimizer.py`` (no ``weight_decay`` passed: torch AdamW's default 0.01, on every trainable
  parameter), ``src/optim/lr_scheduler.py`` (transformers ``get_cosine_schedule_with_warmup``) and
  ``src/engine/trainer.py`` (``reset_optimizer`` per task, ``num_training_steps`` = the task's steps).

Where a reference has no setting for a dataset, we took (and say why):

- PILOT has CIFAR-100 (``exps/*.json``) and ImageNet-R (``exps/*_inr.json``) settings, no Food-101: L2P, DualPrompt
  and EASE use the ImageNet-R recipe on **every** dataset. MM-ImageNet-R is ImageNet-R; Food-101, like ImageNet-R
  and unlike CIFAR, is far from what the backbone was pretrained on, and one recipe per method keeps the two tables
  comparable.
- RebQ's ``configs/train/default.yaml`` is shared by both of its datasets (UPMC Food-101 and MM-IMDb), so it is used
  unchanged on MM-ImageNet-R.
- ``missing_aware_prompts`` uses the same optimiser values for Food-101, MM-IMDb and Hateful Memes; we use them on
  MM-ImageNet-R too.
- **demo** (the embedded 10-class set, 30 training images a class): every reference recipe unchanged, but the
  project's batch of 256 becomes 32, or a phase of the demo (60-150 images) would be a single optimiser step a
  epoch.

Any value can still be overridden on the command line (``lr=...``, ``lr_schedule=cosine``, ``max_epoch=...``).
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
    source: str = ""            # where the values come from (see the module docstring)

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
                    cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The recipe's torch optimiser over the parameters that require gradients.

    ``weight_decay_1d=False`` puts the 1-D ones (biases, norms, SSF scales and shifts) in a second group without
    weight decay. Raises ValueError for an unknown ``optimizer`` or when nothing is trainable.
    """
    import torch

    params = [p for _, p in named_parameters if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: nothing for the optimizer to train (check `tuning`)")
    wd = float(cfg["weight_decay"])
    if cfg["weight_decay_1d"]:
        groups = [{"params": params, "weight_decay": wd}]
    else:
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    name, lr = cfg["optimizer"], float(cfg["lr"])
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg["betas"]), eps=float(cfg["eps"]))
    if name == "adam":  # torch's Adam: weight decay as an L2 term in the gradient (PILOT's)
        return torch.optim.Adam(groups, lr=lr, betas=tuple(cfg["betas"]), eps=float(cfg["eps"]))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg["momentum"]))
    raise ValueError(f"optimizer={name!r}: expected one of {OPTIMIZERS}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any],
                    total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's schedule (transformers' ``get_scheduler``) over ``total`` intervals (optimiser steps or epochs,
    ``schedule_interval``): linear warmup from 0 over ``warmup`` (a fraction of ``total`` if < 1, else a count),
    then linear or cosine decay to 0 at ``total``, or constant. Raises ValueError for an unknown ``lr_schedule``."""
    import transformers

    name = cfg["lr_schedule"]
    if name not in SCHEDULES:
        raise ValueError(f"lr_schedule={name!r}: expected one of {tuple(SCHEDULES)}")
    warmup = float(cfg["warmup"])
    warmup_steps = int(warmup * total) if warmup < 1 else int(warmup)
    return transformers.get_scheduler(SCHEDULES[name], optimizer, num_warmup_steps=warmup_steps,
                                      num_training_steps=total)


def schedule_interval(cfg: Mapping[str, Any]) -> str:
    """``step`` or ``epoch``; raises ValueError otherwise."""
    interval = cfg["schedule_interval"]
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
