"""Seeded missing-modality tables (the missing_aware_prompts / RebQ protocol).

A table holds one code per sample of a split: 0 = complete, 1 = text missing, 2 = image missing.
``int(ratio * N)`` samples, drawn with ``seed``, miss a modality: all the text (type "text"), all the image
("image"), or for "both" a share ``both_ratio`` of them the image and the rest the text (as in
missing_aware_prompts). How a missing modality reaches the model is decided in ``dataset.ArrowDataset``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emmcil.atomic import atomic_write

NONE, TEXT_MISSING, IMAGE_MISSING = 0, 1, 2
MISSING_TYPES = ("text", "image", "both")


@dataclass(frozen=True, eq=False)
class MissingTable:
    codes: np.ndarray  # (N,) int8 in {0, 1, 2}
    missing_type: str
    ratio: float
    seed: int
    both_ratio: float = 0.5

    @classmethod
    def build(cls, num_samples: int, missing_type: str, ratio: float, seed: int,
              both_ratio: float = 0.5) -> "MissingTable":
        if missing_type not in MISSING_TYPES:
            raise ValueError(f"missing_type must be one of {MISSING_TYPES}, got {missing_type!r}")
        if not 0.0 <= ratio <= 1.0 or not 0.0 <= both_ratio <= 1.0:
            raise ValueError(f"ratio and both_ratio must lie in [0, 1], got {ratio}, {both_ratio}")
        rng = np.random.default_rng(seed)
        missing = rng.permutation(num_samples)[: int(num_samples * ratio)]
        codes = np.zeros(num_samples, dtype=np.int8)
        if missing_type == "text":
            codes[missing] = TEXT_MISSING
        elif missing_type == "image":
            codes[missing] = IMAGE_MISSING
        else:
            n_image = int(len(missing) * both_ratio)
            codes[missing[:n_image]] = IMAGE_MISSING
            codes[missing[n_image:]] = TEXT_MISSING
        return cls(codes, missing_type, float(ratio), int(seed), float(both_ratio))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> int:
        return int(self.codes[i])

    @staticmethod
    def filename(name: str, missing_type: str, ratio: float, seed: int) -> str:
        """e.g. ``food101_test_missing_both_r0.7_s0.npz``; ``name`` is typically ``{dataset}_{split}``."""
        return f"{name}_missing_{missing_type}_r{ratio:g}_s{seed}.npz"

    def save(self, directory: str | Path, name: str) -> Path:
        path = Path(directory) / self.filename(name, self.missing_type, self.ratio, self.seed)
        meta = {"missing_type": self.missing_type, "ratio": self.ratio, "seed": self.seed,
                "both_ratio": self.both_ratio}
        return atomic_write(path, lambda f: np.savez(f, codes=self.codes, meta=np.array(json.dumps(meta))))

    @classmethod
    def load(cls, path: str | Path) -> "MissingTable":
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            return cls(f["codes"].astype(np.int8), **meta)
