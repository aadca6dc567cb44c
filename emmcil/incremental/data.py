"""From the config to the datasets and the class-incremental scenario of a run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from emmcil.data import (ArrowDataset, IncrementalScenario, arrow_path, class_order, ensure_demo, get_tokenizer,
                         pixelbert_transform)


@dataclass
class RunData:
    """train: training transform; train_eval: the same rows without augmentation (herding, masking); test."""

    root: Path
    tokenizer: Any
    train: ArrowDataset
    train_eval: ArrowDataset
    test: ArrowDataset
    order: list[int]
    scenario: IncrementalScenario       # over train (training transform)
    eval_scenario: IncrementalScenario  # over train_eval

    def describe(self) -> dict:
        """JSON-able class order and phases (written to class_order.json)."""
        phases = [self.scenario.phase_classes(t) for t in range(self.scenario.num_phases)]
        return {"class_order": self.order, "num_phases": self.scenario.num_phases,
                "phase_classes": [[self.order[c] for c in p] for p in phases],
                "phase_positions": phases, "root": str(self.root),
                "train_files": [str(p) for p in self.train.paths], "test_files": [str(p) for p in self.test.paths]}


def data_root(cfg: Mapping) -> Path:
    if cfg["dataset"] == "demo":
        return ensure_demo(cfg["data_root"] or None)
    if not cfg["data_root"]:
        raise ValueError(f"dataset={cfg['dataset']!r} needs data_root=<folder of {cfg['dataset']}_train.arrow "
                         f"and {cfg['dataset']}_{cfg['test_split']}.arrow> (see the emmcil.data writers)")
    return Path(cfg["data_root"]).expanduser()


def build_data(cfg: Mapping) -> RunData:
    root = data_root(cfg)
    tokenizer = get_tokenizer(cfg["tokenizer"] or None)
    size, p, T = cfg["image_size"], cfg["patch_size"], cfg["max_text_len"]
    train_files = [arrow_path(root, cfg["dataset"], s) for s in cfg["train_splits"]]
    test_files = [arrow_path(root, cfg["dataset"], cfg["test_split"])]
    eval_tf = pixelbert_transform(size, p)
    train_eval = ArrowDataset(train_files, tokenizer, eval_tf, T)
    train = (ArrowDataset(train_files, tokenizer, pixelbert_transform(size, p, randaug=True), T)
             if cfg["train_randaug"] else train_eval)
    test = ArrowDataset(test_files, tokenizer, eval_tf, T)
    num_classes = int(cfg["num_classes"])
    found = int(max(train.labels.max(), test.labels.max())) + 1
    if found > num_classes:
        raise ValueError(f"{train_files[0]} has labels up to {found - 1} but num_classes={num_classes}")
    order = class_order(num_classes, cfg["class_order_seed"])
    return RunData(root=root, tokenizer=tokenizer, train=train, train_eval=train_eval, test=test, order=order,
                   scenario=IncrementalScenario(train, test, order, cfg["num_phases"]),
                   eval_scenario=IncrementalScenario(train_eval, test, order, cfg["num_phases"]))
