"""The general settings, one frozen dataclass per concern; each field's doc is what ``print_config`` shows and what
docs/experiments.md's key tables hold (``python scripts/settings_table.py`` writes them). Torch-free.

A field with the default :data:`~emmcil.settings.fields.DERIVED` takes its value from the dataset catalogue, the
model size or the method's training recipe (``emmcil/config.py`` derives it; ``derived=`` says from what).
"""
from __future__ import annotations

from dataclasses import dataclass

from .checks import BUDGET_MODES, FILL_POLICIES, UNITS, check_memory
from .fields import PRECISIONS, number, setting

DATASET_RECIPE = "the method's training recipe on the dataset (emmcil/methods/recipes.py)"
MODEL_SIZE = "model_size (MODEL_SIZES)"
TUNING_MODES = ("ssf", "frozen", "full")
HEADS = ("linear", "mlp")
OPTIMIZERS = ("adamw", "adam", "sgd")
# our schedule names -> transformers.get_scheduler's; every one starts with ``warmup`` (0 = none)
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
INTERVALS = ("step", "epoch")
MISSING_TYPES = ("none", "text", "image", "both")
MODEL_RNGS = ("sample", "torch")
DECODE_ON = ("cpu", "device")
WANDB_MODES = ("online", "offline")
# Lightning's accelerator names this code runs on ("tpu" needs torch_xla, which the lock does not hold)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# Lightning's strategy names for one process a device, each holding the whole model (the DDP family): the run's
# sharding of the data (emmcil/engine/loaders.py), its gathers and rank-0 checkpoints assume them; fsdp / deepspeed
# shard the model itself
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
              "ddp_find_unused_parameters_false")
DETERMINISTIC = (None, True, False, "warn")
TOKENIZER_VOCAB = 30522  # bert-base-uncased's word pieces: the tokenizer is fixed (emmcil/data/tokenizer.py)
# Model sizes: the backbone's shape, and the timm ImageNet weights ViLT starts from when there is no load_path
# (used only if already in the local cache; nothing is downloaded).
VILT_B32 = dict(hidden_size=768, num_layers=12, num_heads=12, mlp_ratio=4.0, patch_size=32, image_size=384)
TINY = dict(hidden_size=64, num_layers=2, num_heads=4, mlp_ratio=2.0, patch_size=16, image_size=96)
MODEL_SIZES = {
    "vilt_b32": dict(VILT_B32, timm_init="vit_base_patch32_384"),
    "tiny": dict(TINY, timm_init=""),  # matches the demo: image_size 96, patch_size 16
}


@dataclass(frozen=True)
class ExperimentSettings:
    dataset: str = setting("mm_imagenet_r", "demo | food101 | mm_imagenet_r, or any NAME of "
                           "data_root/NAME_{split}.arrow files")
    method: str = setting("replay", "a registered method: finetune | joint | replay | ... (emmcil/methods/)")
    num_phases: int = setting(5, "L equal phases (the first ones +1 if L does not divide); with increment: derived",
                              low=1)
    init_classes: int = setting(0, "PyCIL's init_cls: classes of the first phase, with increment; 0 = increment",
                                low=0)
    increment: int = setting(0, "PyCIL's increment: classes of each later phase; 0 = num_phases equal phases", low=0)
    model_size: str = setting(derived="the dataset (DATASETS)", doc="vilt_b32 | tiny")
    seed: int = setting(0, "model init, and every phase's RNGs from (seed, phase): resume is exact", seed=True)
    class_order_seed: int | None = setting(1993, "permutation of the classes (PyCIL/PILOT's 1993); None = identity "
                                           "order", seed=True)


@dataclass(frozen=True)
class DataSettings:
    data_root: str = setting("", 'folder of {dataset}_{split}.arrow; "" for the demo = $EMMCIL_DATA/demo or cache',
                           result=False)
    train_splits: list[str] = setting(["train"], 'arrow splits trained on (e.g. ["train", "val"])')
    test_split: str = setting("test", "evaluated after every phase")
    num_classes: int = setting(derived="the dataset (DATASETS), or NAME_classes.json",
                               doc="classes of the dataset")
    tokenizer: str = setting("", 'bert-base-uncased vocab.txt (file or folder); "" = found offline', result=False)
    max_text_len: int = setting(derived="the dataset (DATASETS)", doc="text tokens kept per sample (ViLT: 40)",
                                low=2)
    train_randaug: bool = setting(False, "RandAugment(2, 9) on training images (ViLT's pixelbert_randaug)")


@dataclass(frozen=True)
class MissingSettings:
    missing_type: str = setting("none", "none | text | image | both: which modality samples of every split miss",
                                choices=MISSING_TYPES)
    missing_ratio: float = setting(0.7, "share of each split's samples that miss a modality (RebQ's 70 %)",
                                   low=0, high=1)
    missing_both_ratio: float = setting(0.5, 'for "both": share of the missing samples that miss the image (the '
                                        'rest the text)', low=0, high=1)
    missing_seed: int = setting(0, "seeds each split's table (a different one per split); independent of `seed`",
                                seed=True)


@dataclass(frozen=True)
class ModelSettings:
    hidden_size: int = setting(derived=MODEL_SIZE, doc="transformer width", low=1)
    num_layers: int = setting(derived=MODEL_SIZE, doc="transformer blocks", low=1)
    num_heads: int = setting(derived=MODEL_SIZE, doc="attention heads per block", low=1)
    mlp_ratio: float = setting(derived=MODEL_SIZE, doc="MLP width / hidden_size", low=0, open_low=True)
    patch_size: int = setting(derived=MODEL_SIZE, doc="image patch side, pixels", low=1)
    image_size: int = setting(derived=MODEL_SIZE, doc="shorter side (pixelbert resize)", low=1)
    timm_init: str = setting(derived=MODEL_SIZE, doc='timm ImageNet weights to start from, only when load_path is ""')
    vocab_size: int = setting(30522, "word embeddings; at least the bert-base-uncased tokenizer's 30522 word pieces")
    max_image_len: int = setting(-1, "patches per image in training; -1 = all (ViLT fine-tuning)", minus_one=True)
    drop_rate: float = setting(0.1, "dropout after attention / MLP outputs and embeddings (ViLT: 0.1)")
    attn_drop_rate: float = setting(0.0, "dropout on attention weights")
    drop_path_rate: float = setting(0.0, "stochastic depth")
    model_rng: str = setting("sample", "sample: dropout, stochastic depth and max_image_len's patches drawn per "
                             "sample from (seed, phase, epoch, index), so the batch layout does not change results | "
                             "torch: torch's RNG stream over each batch (the layout keys then name the run)",
                             choices=MODEL_RNGS)
    qkv_bias: bool = setting(True, "bias in the query/key/value projection (ViT, ViLT)")
    ssf: bool = setting(True, "SSF scale/shift after qkv, proj, fc1, fc2, norms, patch embedding")
    tuning: str = setting("ssf", "ssf: SSF + pooler + classifier train | frozen: pooler + classifier | full",
                          choices=TUNING_MODES)
    head: str = setting("linear", "linear | mlp: Linear-LN-GELU-Linear, missing_aware_prompts' head (last layer "
                        "grows)", choices=HEADS)
    load_path: str = setting("", 'ViLT checkpoint (vilt_200k_mlm_itm.ckpt / HF folder); "" = random init')
    trust_checkpoint: bool = setting(False, "allow full unpickling of load_path (only for files you trust)",
                                     result=False)

    def check(self) -> list[str]:
        if self.vocab_size < TOKENIZER_VOCAB:
            return [f"vocab_size={self.vocab_size}: at least {TOKENIZER_VOCAB}, the word pieces of the "
                    f"bert-base-uncased tokenizer every dataset is read with (a smaller table has no row for its "
                    f"higher ids)"]
        return []


@dataclass(frozen=True)
class OptimisationSettings:
    optimizer: str = setting(derived=DATASET_RECIPE, doc="adamw | adam | sgd", choices=OPTIMIZERS)
    lr: float = setting(derived=DATASET_RECIPE, doc="peak learning rate", low=0)
    weight_decay: float = setting(derived=DATASET_RECIPE, doc="decoupled (adamw) or L2 (adam, sgd) weight decay",
                                  low=0)
    weight_decay_1d: bool = setting(derived=DATASET_RECIPE, doc="also decay biases, norms, SSF (1-D parameters)")
    betas: list[float] = setting(derived=DATASET_RECIPE, doc="adam / adamw: two numbers in [0, 1)")
    eps: float = setting(derived=DATASET_RECIPE, doc="adam / adamw", low=0, open_low=True)
    momentum: float = setting(derived=DATASET_RECIPE, doc="sgd", low=0)
    lr_schedule: str = setting(derived=DATASET_RECIPE, doc="linear | cosine (-> 0 after the warmup) | constant",
                               choices=tuple(SCHEDULES))
    warmup: float = setting(derived=DATASET_RECIPE, doc="linear warmup from 0: fraction (< 1) or count of "
                            "intervals", low=0)
    schedule_interval: str = setting(derived=DATASET_RECIPE, doc="step | epoch: when the schedule advances",
                                     choices=INTERVALS)
    max_epoch: int = setting(derived=DATASET_RECIPE, doc="epochs per phase", low=1)
    max_steps: int = setting(-1, "optimiser steps per phase; -1 = max_epoch epochs", minus_one=True)
    batch_size: int = setting(derived=DATASET_RECIPE, doc="effective batch, reached by accumulation", low=1)
    per_gpu_batchsize: int = setting(derived="min(batch_size, the dataset's per_gpu_batchsize)",
                                     doc="per device+step", low=1, result=False)
    gradient_clip_val: float | None = setting(None, "clip the gradient norm to this; None = no clipping")
    limit_train_batches: float = setting(1.0, "a fraction of each epoch, or a number of its optimiser steps (tests, "
                                         "smoke runs)")
    length_group_window: int = setting(0, "0: random batches (ViLT); k: batches of similar length from sorted "
                                       "windows of k batches (emmcil/engine/loaders.py)", low=0)

    def check(self) -> list[str]:
        problems = []
        limit = self.limit_train_batches
        if not (isinstance(limit, float) and 0 < limit <= 1 or isinstance(limit, int) and limit >= 1):
            problems.append(f"limit_train_batches={limit}: a fraction in (0, 1] or a number of batches >= 1")
        clip = self.gradient_clip_val
        if clip is not None and not (number(clip) and clip > 0):
            problems.append(f"gradient_clip_val={clip}: None (no clipping) or a norm > 0")
        betas = self.betas
        if len(betas) != 2 or not all(number(b) and 0 <= b < 1 for b in betas):
            problems.append(f"betas={betas}: two numbers in [0, 1)")
        return problems


@dataclass(frozen=True)
class MemorySettings:
    memory_per_class: float = setting(5, "budget per class, in full exemplars (the paper's \"samples/class\"; 5 its "
                                      "default)")
    memory_unit: str = setting("tokens", "tokens (stored / the sample's tokens) | byte_share (stored / its bytes) | "
                               "bytes (against m x the training set's mean full-exemplar bytes)")
    memory_budget_mode: str = setting("per_class", "per_class | total (memory_total shared by the seen classes)")
    memory_total: float = setting(0, 'total budget in full exemplars, for memory_budget_mode="total"')
    memory_fill: str = setting("skip", "skip: pass over an exemplar that does not fit | stop: end there (CIM-CIL; "
                               "cim's)")
    memory_browser: bool = setting(True, "after each phase, save what `python -m emmcil.report.memory` shows in "
                                   "memory/phase_<t>/ (False: nothing)", result=False)

    def check(self) -> list[str]:
        try:
            check_memory(self.memory_per_class, self.memory_budget_mode, self.memory_total, self.memory_fill,
                         self.memory_unit)
        except ValueError as err:
            return [str(err)]
        if self.memory_total and self.memory_budget_mode != "total":
            return [f"memory_total={self.memory_total} is read only with memory_budget_mode=total (now "
                    f"{self.memory_budget_mode!r}, where memory_per_class is the budget): add "
                    f"memory_budget_mode=total, or drop memory_total"]
        return []


@dataclass(frozen=True)
class HardwareSettings:
    accelerator: str = setting("auto", "Lightning accelerator: auto (a GPU if there is one) | cpu | gpu",
                               choices=ACCELERATORS, result=False)
    devices: int | str | list = setting(1, "per node; effective batch = per_gpu_batchsize * devices * num_nodes * "
                                        "accumulation", result=False)
    num_nodes: int = setting(1, "machines (Lightning)", low=1, result=False)
    strategy: str = setting("auto", 'Lightning strategy ("ddp" for several GPUs)', choices=STRATEGIES, result=False)
    precision: str = setting("32-true", 'Lightning precision; "16-mixed" / "bf16-mixed" on GPUs')
    deterministic: bool | str | None = setting(None, "torch's deterministic kernels; None = on a CPU only (exact, "
                                               "costs ~nothing there); warn: Lightning's warn-only mode",
                                               choices=DETERMINISTIC, result=False)
    num_workers: int = setting(derived="the dataset (DATASETS)", doc="DataLoader workers (0: main process); at most "
                               "the cores", low=0, result=False)
    # both change pixels (decode_on: up to 2 levels where the device resizes in float; jpeg_draft: up to 32 by
    # design; docs/data.md), so both are result keys
    decode_on: str = setting("cpu", "cpu: the workers decode | device: they hand over JPEG files, decoded in batches "
                             "on the model's device (docs/data.md)", choices=DECODE_ON)
    jpeg_draft: bool = setting(derived="decode_on (True with cpu: the device decodes at full scale)",
                               doc="CPU decoding: a JPEG at least twice the model's size is decoded at 1/2, 1/4 or "
                               "1/8 scale (Pillow's draft), still >= that size")
    num_threads: int = setting(0, "torch intra-op CPU threads; 0 = torch's default (results depend on it, bitwise)",
                               low=0, result=False)
    compile: bool = setting(False, "torch.compile the backbone (train, inference): same results; eager where "
                            "unsupported", result=False)

    def check(self) -> list[str]:
        devices, problems = self.devices, []
        if not (isinstance(devices, int) and (devices >= 1 or devices == -1) or devices == "auto"
                or isinstance(devices, str) and devices.isdigit() and int(devices) >= 1
                or isinstance(devices, list) and devices and all(isinstance(d, int) and d >= 0 for d in devices)):
            problems.append(f"devices={devices!r}: a count >= 1, -1 or \"auto\" (every GPU), or a list of GPU ids")
        if self.decode_on == "device" and self.jpeg_draft:
            problems.append("jpeg_draft=True with decode_on='device': the device decodes every JPEG at full scale "
                            "(nvJPEG has no DCT scaling), so a run would train on other pixels than its config names; "
                            "drop jpeg_draft (it follows decode_on) or decode on the CPU")
        return problems


@dataclass(frozen=True)
class RunSettings:
    log_dir: str = setting("runs", "run directories live in {log_dir}/{exp_name}", result=False)
    exp_tag: str = setting("", "appended to the derived exp_name (ablation named configs set it); no / or \\",
                           result=False)
    exp_name: str = setting("", 'run directory {log_dir}/{exp_name}, one folder name; "" = derived from the config '
                            '(name_the_run)', result=False)
    restart: bool = setting(False, "True: delete an existing run directory and start over", result=False)
    keep_checkpoints: int = setting(0, "keep only the newest N phase checkpoints; 0 = keep all", low=0, result=False)
    stop_after_phase: int = setting(-1, "stop after this phase (resume later by re-running); -1 = run all", low=-1,
                                    result=False)
    progress_bar: bool = setting(True, "Lightning's progress bar in training, on a terminal only (a log gets the "
                                 "phase lines)", result=False)
    log_every_n_steps: int = setting(10, "training metrics (loss, accuracy, learning rate) every N steps", low=1,
                                     result=False)

    def check(self) -> list[str]:
        """exp_name and exp_tag name one folder inside log_dir: "..", "/abs", "a/b" would leave or nest it (and a
        restart would delete what is there)."""
        problems = []
        for key in ("exp_name", "exp_tag"):
            value = getattr(self, key)
            if value and (value in (".", "..") or any(c in value for c in ("/", "\\", "\0"))):
                problems.append(f"{key}={value!r}: one folder name (no '/' or '\\', not '.' or '..'): the run "
                                f"directory is {{log_dir}}/{{exp_name}}" + (", exp_tag the end of its name"
                                                                            if key == "exp_tag" else ""))
        return problems


@dataclass(frozen=True)
class LoggingSettings:
    wandb: bool = setting(False, "also log to Weights & Biases (needs `pip install wandb` and `wandb login`)",
                          result=False)
    wandb_project: str = setting("emmcil", "W&B project", result=False)
    wandb_entity: str = setting("", 'W&B team or user; "" = your default entity', result=False)
    wandb_mode: str = setting("online", "online | offline (files in logs/wandb/, upload later with `wandb sync`)",
                              choices=WANDB_MODES, result=False)


CONCERNS = {"experiment": ExperimentSettings, "data": DataSettings, "missing": MissingSettings,
            "model": ModelSettings, "optimisation": OptimisationSettings, "memory": MemorySettings,
            "hardware": HardwareSettings, "run": RunSettings, "logging": LoggingSettings}
__all__ = ["CONCERNS", "MODEL_SIZES", "PRECISIONS", "UNITS", "BUDGET_MODES", "FILL_POLICIES"] + [
    c.__name__ for c in CONCERNS.values()]
