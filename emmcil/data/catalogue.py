"""The dataset catalogue: each named dataset's defaults (classes, text length, model size, batch per device, loader
workers), which ``config.py`` and the training recipes (``emmcil/methods/recipes.py``) read.

Arrow files are ``{data_root}/{dataset}_{split}.arrow`` (the writers of this package); the demo is generated on first
use (:mod:`emmcil.data.demo`) when ``data_root`` is "". ``per_gpu_batchsize`` is the most a device takes per step;
the method's recipe sets the effective batch.
"""
from __future__ import annotations

from typing import Any

from .demo import DEMO_NUM_CLASSES

DATASETS: dict[str, dict[str, Any]] = {
    # 10 synthetic classes, 30 train / 10 test images each, 96-128 px: for the tiny model on CPU
    "demo": dict(num_classes=DEMO_NUM_CLASSES, max_text_len=40, model_size="tiny", per_gpu_batchsize=32,
                 num_workers=0),
    # UPMC Food-101: 101 classes, text = page title (short: ViLT's 40 positions suffice)
    "food101": dict(num_classes=101, max_text_len=40, model_size="vilt_b32", per_gpu_batchsize=32, num_workers=8),
    # MM-ImageNet-R: 200 classes, InstructBLIP captions of ~50-90 words (paper Fig. 4), hence 128 positions
    "mm_imagenet_r": dict(num_classes=200, max_text_len=128, model_size="vilt_b32", per_gpu_batchsize=32,
                          num_workers=8),
}

# Any other dataset, run by name (dataset=NAME data_root=DIR): ViLT-B/32 with ViLT's 40 text positions, as for
# Food-101, and the method's default recipe (epochs, batch, optimiser). Its class count comes from
# DIR/NAME_classes.json (the writers write it) or the largest arrow label. Every one of these is an ordinary config
# key: model_size=tiny max_text_len=64 max_epoch=5 ... on the command line.
OTHER_DATASET: dict[str, Any] = dict(model_size="vilt_b32", max_text_len=40, per_gpu_batchsize=32, num_workers=8)


def dataset_default(dataset: str, key: str) -> Any:
    """``key``'s default for ``dataset``: its row of :data:`DATASETS`, or :data:`OTHER_DATASET` for a dataset by
    name. Raises KeyError for a key the catalogue does not hold."""
    return DATASETS.get(dataset, OTHER_DATASET)[key]
