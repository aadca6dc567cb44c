"""From the config to the datasets and the class-incremental scenario of a run.

Missing modalities (continual missing-modality learning, RebQ's CMML protocol): with ``missing_type`` "text",
"image" or "both", every split gets its own seeded :class:`~emmcil.data.MissingTable` (``missing_ratio`` of its
samples miss a modality; for "both", ``missing_both_ratio`` of those miss the image, the rest the text), applied
by :class:`~emmcil.data.ArrowDataset` to training and test data alike. The table of split ``s`` is drawn with the
seed ``SeedSequence([missing_seed, crc32(s)])``, so it depends only on (split, type, ratio, both_ratio,
missing_seed) and its size: not on the class order, the number of phases or the training seed (RebQ's cached
tables were keyed by type and ratio only, so the first run fixed them for every later seed).
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from emmcil.data import (ArrowDataset, IncrementalScenario, MissingTable, arrow_path, class_order, dataset_classes,
                         ensure_demo, get_tokenizer, pixelbert_transform, read_arrow)
from emmcil.data.arrow import classes_path
from emmcil.data.missing import IMAGE_MISSING, MISSING_TYPES, TEXT_MISSING
from emmcil.data.resize import check_stored_resize


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
    dataset_name: str = ""
    missing: dict[str, MissingTable] = field(default_factory=dict)  # split -> its table (empty: nothing missing)
    class_names: list[str] | None = None  # by original label, from {dataset}_classes.json when there is one

    def describe(self) -> dict:
        """JSON-able class order and phases, and the missing-modality tables' parameters (class_order.json)."""
        phases = [self.scenario.phase_classes(t) for t in range(self.scenario.num_phases)]
        return {"class_order": self.order, "class_names": self.class_names, "num_phases": self.scenario.num_phases,
                "phase_classes": [[self.order[c] for c in p] for p in phases],
                "phase_positions": phases, "root": str(self.root),
                "train_files": [str(p) for p in self.train.paths], "test_files": [str(p) for p in self.test.paths],
                "missing": describe_missing(self.missing)}

    def save_missing_tables(self, directory: str | Path) -> list[Path]:
        """Write every split's table (``MissingTable.save``: codes + parameters, .npz) to ``directory``."""
        return [table.save(directory, f"{self.dataset_name}_{split}") for split, table in self.missing.items()]


def split_seed(missing_seed: int, split: str) -> int:
    """The seed of split ``split``'s missing table: a different table per split, all derived from one seed."""
    return int(np.random.SeedSequence([int(missing_seed), zlib.crc32(split.encode())]).generate_state(1)[0])


def missing_tables(cfg: Mapping, sizes: Mapping[str, int]) -> dict[str, MissingTable]:
    """split -> its MissingTable for the config's ``missing_*`` keys; {} for ``missing_type="none"``."""
    kind = cfg.get("missing_type", "none")
    if kind == "none":
        return {}
    if kind not in MISSING_TYPES:
        raise ValueError(f"missing_type={kind!r}: expected 'none' or one of {MISSING_TYPES}")
    return {split: MissingTable.build(n, kind, float(cfg["missing_ratio"]), split_seed(cfg["missing_seed"], split),
                                      both_ratio=float(cfg["missing_both_ratio"]))
            for split, n in sizes.items()}


def concat_tables(tables: list[MissingTable]) -> MissingTable:
    """One table over concatenated splits (e.g. ``train_splits=["train", "val"]``), each keeping its own codes."""
    if len(tables) == 1:
        return tables[0]
    first = tables[0]
    return MissingTable(np.concatenate([t.codes for t in tables]), first.missing_type, first.ratio, first.seed,
                        first.both_ratio)


def describe_missing(tables: Mapping[str, MissingTable]) -> dict:
    """JSON-able parameters and a fingerprint of each split's table."""
    if not tables:
        return {"missing_type": "none"}
    first = next(iter(tables.values()))
    out = {"missing_type": first.missing_type, "ratio": first.ratio, "both_ratio": first.both_ratio, "splits": {}}
    for split, t in tables.items():
        out["splits"][split] = {"seed": t.seed, "num_samples": len(t),
                                "text_missing": int((t.codes == TEXT_MISSING).sum()),
                                "image_missing": int((t.codes == IMAGE_MISSING).sum()),
                                "sha1": hashlib.sha1(t.codes.tobytes()).hexdigest()}
    return out


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
    # one missing-modality table per split (the train splits' tables concatenated, in order)
    splits = dict(zip(cfg["train_splits"], train_files)) | {cfg["test_split"]: test_files[0]}
    missing = (missing_tables(cfg, {s: read_arrow(f).num_rows for s, f in splits.items()})
               if cfg.get("missing_type", "none") != "none" else {})
    train_missing = concat_tables([missing[s] for s in cfg["train_splits"]]) if missing else None
    test_missing = missing.get(cfg["test_split"])
    eval_tf = pixelbert_transform(size, p)
    train_eval = ArrowDataset(train_files, tokenizer, eval_tf, T, missing=train_missing)
    train = (ArrowDataset(train_files, tokenizer, pixelbert_transform(size, p, randaug=True), T, missing=train_missing)
             if cfg["train_randaug"] else train_eval)
    test = ArrowDataset(test_files, tokenizer, eval_tf, T, missing=test_missing)
    check_stored_resize(train_files + test_files, size, p)  # images written with --resize: for this transform?
    num_classes = int(cfg["num_classes"])
    found = int(max(train.labels.max(), test.labels.max())) + 1
    if found > num_classes:
        raise ValueError(f"{train_files[0]} has labels up to {found - 1} but num_classes={num_classes}")
    names = None
    if classes_path(root, cfg["dataset"]).is_file():
        names = dataset_classes(root, cfg["dataset"])[1]
        if len(names) != num_classes:
            raise ValueError(f"{classes_path(root, cfg['dataset'])} names {len(names)} classes but "
                             f"num_classes={num_classes}")
    order = class_order(num_classes, cfg["class_order_seed"])
    return RunData(root=root, tokenizer=tokenizer, train=train, train_eval=train_eval, test=test, order=order,
                   scenario=IncrementalScenario(train, test, order, cfg["num_phases"]),
                   eval_scenario=IncrementalScenario(train_eval, test, order, cfg["num_phases"]),
                   dataset_name=cfg["dataset"], missing=missing, class_names=names)
