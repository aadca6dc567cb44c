"""Every method trains with its own recipe (emmcil/methods/recipes.py): the config it resolves to, the torch
optimiser and schedule that recipe builds, and a check on the demo that each baseline learns under it."""
import dataclasses
import json
import math
import re
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch
from emmcil.data import ensure_demo
from emmcil.engine.driver import accumulation_steps, run_experiment
from emmcil.engine.module import IncrementalModule
from emmcil.methods.recipes import PROJECT, build_optimizer, build_scheduler, method_recipe
from emmcil.methods import METHODS, get_method
from run_helpers import changed, one_thread, resolve, settings

from emmcil.data.catalogue import DATASETS

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*", "ignore:rebq_layers")
METHOD_DOC = Path(__file__).resolve().parents[1] / "docs" / "method.md"  # the recipes table
RECIPE_KEYS = ("optimizer", "lr", "weight_decay", "weight_decay_1d", "betas", "eps", "momentum", "lr_schedule",
               "warmup", "schedule_interval", "max_epoch", "batch_size")
SSF_FAMILY = ("finetune", "joint", "replay", "mrdc", "cim", "emm")
# the reference values, read off the cited files (recipes.py says which)
REFERENCE = {
    "l2p": dict(optimizer="adam", lr=1.875e-3, weight_decay=0.0, lr_schedule="constant", max_epoch=10, batch_size=32),
    "dualprompt": dict(optimizer="adam", lr=1e-3, weight_decay=0.0, lr_schedule="constant", max_epoch=10,
                       batch_size=24),
    "ease": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-3, weight_decay_1d=True,
                 lr_schedule="cosine", warmup=0.0, schedule_interval="epoch", max_epoch=20, batch_size=16),
    "rebq": dict(optimizer="adamw", lr=1e-4, betas=[0.9, 0.98], weight_decay=0.01, weight_decay_1d=True,
                 lr_schedule="cosine", warmup=0.1, schedule_interval="step", max_epoch=10, batch_size=4),
    "emm": dict(optimizer="adamw", lr=1e-2, betas=[0.9, 0.98], eps=1e-8, weight_decay=2e-2, weight_decay_1d=False,
                lr_schedule="linear", warmup=0.1, schedule_interval="step", max_epoch=20, batch_size=256),
}
TORCH_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


# ---------------------------------------------------------------- the config each recipe resolves to
def test_every_method_resolves_to_its_recipe_on_every_dataset():
    for method in METHODS:
        for dataset in DATASETS:
            # DualPrompt's default layers 2-4 need more than the demo's 2
            cfg = resolve(dataset, method, **({"num_layers": 5} if method == "dualprompt" else {}))
            expected = method_recipe(method).values(dataset)
            assert {k: cfg[k] for k in RECIPE_KEYS} == {k: expected[k] for k in RECIPE_KEYS}, (method, dataset)
            assert cfg["batch_size"] % cfg["per_gpu_batchsize"] == 0 and accumulation_steps(settings(cfg)) * \
                cfg["per_gpu_batchsize"] == cfg["batch_size"], (method, dataset)   # the batch is reached exactly
    for method, values in REFERENCE.items():
        cfg = resolve("mm_imagenet_r", method)
        assert {k: cfg[k] for k in values} == values, method
    for method in SSF_FAMILY:  # the paper's "SSF + X" rows all train with the project's recipe
        assert method_recipe(method) is PROJECT
    assert resolve("demo", "replay")["batch_size"] == 32 and resolve("demo", "l2p")["batch_size"] == 32
    assert resolve("demo", "rebq")["per_gpu_batchsize"] == 4


def test_recipe_keys_are_overridable_and_bad_values_are_named():
    cfg = resolve("demo", "l2p", lr=0.01, lr_schedule="cosine", max_epoch=3, batch_size=64)
    assert (cfg["lr"], cfg["lr_schedule"], cfg["max_epoch"], cfg["batch_size"], cfg["optimizer"]) == \
        (0.01, "cosine", 3, 64, "adam")
    assert resolve("demo", "l2p", method="ease")["optimizer"] == "sgd"  # the recipe follows `method`
    module = tiny_module("finetune")
    with pytest.raises(ValueError, match="optimizer='lion'"):
        build_optimizer(module.named_parameters(), changed(module.settings, optimizer="lion").optimisation)
    opt = build_optimizer(module.named_parameters(), module.settings.optimisation)
    with pytest.raises(ValueError, match="lr_schedule='step'"):
        build_scheduler(opt, changed(module.settings, lr_schedule="step").optimisation, 10)
    with pytest.raises(ValueError, match="schedule_interval='batch'"):
        configure(module, changed(module.settings, schedule_interval="batch"))


# ---------------------------------------------------------------- what each recipe builds
class FakeTrainer:
    estimated_stepping_batches = 100
    max_epochs = 20


def tiny_module(method: str, **updates) -> IncrementalModule:
    """The demo's tiny model with ``method`` and its recipe, two phases' classes added (phase 1 current)."""
    layers = dict(dualprompt_g_layers=[0], dualprompt_e_layers=[1]) if method == "dualprompt" else {}
    cfg = resolve("demo", method, num_phases=2, hidden_size=32, num_heads=2, image_size=64, **layers, **updates)
    torch.manual_seed(0)
    s = settings(cfg)
    module = IncrementalModule(get_method(method)(s), s)
    module.add_classes(5)
    module.add_classes(5)
    return module


def configure(module, s=None):
    """The module's optimiser, schedule and interval, under ``s`` (default: its own settings)."""
    module.settings = module.settings if s is None else s
    module._trainer = FakeTrainer()  # configure_optimizers reads the trainer's step and epoch counts
    out = module.configure_optimizers()
    return out["optimizer"], out["lr_scheduler"]["scheduler"], out["lr_scheduler"]["interval"]


def lr_curve(scheduler, n: int) -> list[float]:
    lrs = []
    for _ in range(n):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs + [scheduler.get_last_lr()[0]]


@pytest.mark.parametrize("method", ["emm", "l2p", "dualprompt", "ease", "rebq"])
def test_each_recipe_builds_the_optimizer_and_schedule_it_names(method):
    module = tiny_module(method)
    cfg = dataclasses.asdict(module.settings.optimisation)  # the recipe's keys
    optimizer, scheduler, interval = configure(module)
    assert type(optimizer) is TORCH_OPTIMIZERS[cfg["optimizer"]]
    assert optimizer.defaults["lr"] == cfg["lr"]
    if cfg["optimizer"] == "sgd":
        assert optimizer.defaults["momentum"] == cfg["momentum"]
    else:
        assert list(optimizer.defaults["betas"]) == cfg["betas"] and optimizer.defaults["eps"] == cfg["eps"]
    # exactly the trainable parameters, each once; weight decay on all of them or only on those with ndim > 1
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    in_groups = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(in_groups) == sorted(trainable)
    for g in optimizer.param_groups:
        decayed = cfg["weight_decay_1d"] or all(p.ndim > 1 for p in g["params"])
        assert g["weight_decay"] == (cfg["weight_decay"] if decayed else 0.0)
    if not cfg["weight_decay_1d"]:
        assert any(g["weight_decay"] == 0 and g["params"] for g in optimizer.param_groups)
    # the schedule it names, over the phase's steps (or epochs)
    assert interval == cfg["schedule_interval"]
    total = FakeTrainer.estimated_stepping_batches if interval == "step" else FakeTrainer.max_epochs
    warm = int(cfg["warmup"] * total)
    lrs = lr_curve(scheduler, total)
    for step, lr in enumerate(lrs):
        if step < warm:
            factor = step / warm
        else:
            progress = (step - warm) / (total - warm)
            factor = {"constant": 1.0, "linear": 1 - progress,
                      "cosine": 0.5 * (1 + math.cos(math.pi * progress))}[cfg["lr_schedule"]]
        assert lr == pytest.approx(cfg["lr"] * factor, rel=1e-9, abs=1e-15), (method, step)


def test_ssf_recipe_keeps_the_learning_rates_of_the_former_hand_written_schedule():
    """transformers' get_linear_schedule_with_warmup replaced our linear_warmup_decay; these are the factors the old
    function gave (0 -> 1 over the warmup, then 1 -> 0), for 100 steps with 10 % warmup, and after the end."""
    cfg = PROJECT.values("mm_imagenet_r")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=cfg["lr"])
    lrs = lr_curve(build_scheduler(optimizer, SimpleNamespace(**cfg), 100), 120)
    old = {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.5, 100: 0.0, 120: 0.0}
    assert {s: lrs[s] / cfg["lr"] for s in old} == pytest.approx(old, abs=1e-12)
    old_factor = [s / 10 if s < 10 else max(0.0, (100 - s) / 90) for s in range(121)]
    assert lrs == pytest.approx([cfg["lr"] * f for f in old_factor], rel=1e-12, abs=1e-15)


def test_docs_recipes_table_states_every_methods_recipe():
    text = METHOD_DOC.read_text()
    table = text[text.index("| method | trainable parameters |"):]
    rows = {r.split("|")[1].strip().strip("`"): r for r in table.split("\n\n")[0].splitlines()[2:]}
    assert set(rows) == set(METHODS)
    names = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}
    for method, row in rows.items():
        cells = [c.strip() for c in row.split("|")[1:-1]]
        v = method_recipe(method).values("mm_imagenet_r")
        optimiser, lr, schedule, epochs = cells[2], cells[3], cells[4], cells[5]
        assert re.match(rf"{names[v['optimizer']]}\b", optimiser), method
        assert lr.startswith(f"{v['lr']:g}"), method
        assert v["lr_schedule"] in schedule, method
        assert epochs.startswith(f"{v['max_epoch']}, batch {v['batch_size']}"), method
        assert all(re.search(r"\[[^]]+\]|\(ours|DESIGN|—", c) for c in cells[1:]), (method, cells)  # cited


# ---------------------------------------------------------------- each baseline learns on the demo
# Phase 0 of the demo in 2 phases: 5 classes, 150 training and 50 test images, chance 20 %. Margin: at least
# 20 points above chance (the runs below reach 60-100 %). The demo's tiny model, narrower (32 wide) and on 64 px
# images (16-20 patches) to keep these runs to seconds.
CHANCE, MARGIN = 20.0, 20.0
SIZE = dict(hidden_size=32, num_heads=2, image_size=64)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def pretrained_tiny(demo, tmp_path_factory):
    """A "pretrained" tiny backbone for the frozen-backbone methods (L2P, DualPrompt, EASE, RebQ tune prompts or
    adapters of a pretrained model, PILOT's ViT-B/16 from ImageNet-21k). No pretrained tiny model exists offline,
    and a random one gives them nothing to read (its text [CLS] varies by about 1 % across demo samples), so the
    tiny model is first trained in full on the demo (every class, 10 epochs, no SSF), as a ViT is pretrained on
    classes that its downstream set shares."""
    logs = tmp_path_factory.mktemp("pretrain")
    cfg = resolve("demo", "finetune", data_root=str(demo), log_dir=str(logs), num_phases=1, max_epoch=10, ssf=False,
                  progress_bar=False, **SIZE)
    with one_thread():
        run_dir = run_experiment(cfg)
    state = torch.load(run_dir / "checkpoints" / "phase_0.pt", weights_only=True)["trainable"]
    path = logs / "tiny_pretrained.ckpt"  # the ViLT checkpoint format: {"state_dict": backbone keys}
    torch.save({"state_dict": {k.removeprefix("backbone."): v for k, v in state.items()
                               if k.startswith("backbone.")}}, path)
    return path


def phase0_accuracy(demo, logs, method, **updates) -> float:
    cfg = resolve("demo", method, data_root=str(demo), log_dir=str(logs), num_phases=2, stop_after_phase=0,
                  progress_bar=False, **SIZE, **updates)
    with one_thread():
        run_dir = run_experiment(cfg)
    return json.loads((run_dir / "results.json").read_text())["accuracy_matrix"][0][0]


def test_ssf_recipe_learns_on_the_demo(demo, tmp_path):
    """One run stands for finetune, joint, replay, mrdc, cim and emm: their phase 0 is the same training (no memory
    yet) under the same recipe (test_every_method_resolves_to_its_recipe_on_every_dataset)."""
    assert phase0_accuracy(demo, tmp_path, "finetune") >= CHANCE + MARGIN


@pytest.mark.parametrize("method", ["l2p", "dualprompt", "ease", "rebq"])
def test_frozen_backbone_baseline_learns_on_the_demo(method, demo, pretrained_tiny, tmp_path):
    layers = dict(dualprompt_g_layers=[0], dualprompt_e_layers=[1]) if method == "dualprompt" else {}
    acc = phase0_accuracy(demo, tmp_path, method, load_path=str(pretrained_tiny), **layers)
    assert acc >= CHANCE + MARGIN, (method, acc)
