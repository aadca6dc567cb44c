"""The sacred experiment: default config and composable named configs.

    python run.py with demo                                   # embedded demo, tiny model, CPU, a few minutes
    python run.py with mm_imagenet_r phases_10 replay data_root=/data/arrow load_path=vilt_200k_mlm_itm.ckpt
    python run.py print_config with food101 phases_20 finetune   # resolve and show the config, no training

Named configs compose (later ones win on the keys they share; ``key=value`` updates win over all of them):

- datasets: ``demo``, ``food101``, ``mm_imagenet_r``  (set ``dataset``; the demo also means the tiny model,
  ``tuning="full"`` since no pretrained weights exist offline, and one CPU thread);
- protocols: ``phases_5``, ``phases_10``, ``phases_20``  (set ``num_phases``);
- methods: ``finetune`` (lower bound), ``joint`` (upper bound), ``replay`` (herding, full exemplars), plus one per
  method file in ``emmcil/methods/`` (set ``method``, and so the method's training recipe);
- model sizes: ``vilt_b32``, ``tiny``  (set ``model_size``);
- missing modalities (continual missing-modality learning, RebQ's CMML): ``missing_text_70``, ``missing_image_70``,
  ``missing_both_70`` (set only the ``missing_*`` keys), and ``cmml_food101`` (RebQ's setting: Food-101, 10 phases,
  both missing at 70 %), to compose with any method (``rebq``, ``finetune``, ``replay``, ``emm``, ...).

Everything else is derived in :func:`config` from those four keys, through the ``DATASETS`` and ``MODEL_SIZES``
tables and the method's training recipe (``emmcil/incremental/recipes.py``), unless set explicitly. Unknown keys are
sacred's own ``ConfigAddedError``. Key groups (each key has a comment below; ``print_config`` shows them):
experiment (dataset, method, num_phases, model_size, seed, class_order_seed), data (data_root, splits, tokenizer,
max_text_len), missing modalities (missing_type, missing_ratio, missing_both_ratio, missing_seed), model (ViLT
sizes, SSF, tuning, load_path), optimisation per phase (the method's recipe: optimizer, lr, weight decay, schedule,
max_epoch, batch_size vs per_gpu_batchsize), memory (memory_per_class = 5 full-exemplar equivalents, budget mode),
hardware (accelerator, devices, num_nodes, strategy, precision, workers, threads), run directory (log_dir, exp_name,
restart, keep_checkpoints, stop_after_phase), and the keys each method file declares (``Method.config``, e.g.
``emm``'s thresholds).
"""
from __future__ import annotations

from sacred import SETTINGS, Experiment
from sacred.config.config_dict import ConfigDict
from sacred.utils import iterate_flattened

from emmcil.incremental.recipes import recipe
from emmcil.methods import METHODS, get_method, method_config_defaults
from emmcil.model import TINY, VILT_B32

# Lightning draws its own progress bars; sacred's stdout capture would mangle them.
SETTINGS.CAPTURE_MODE = "no"

ex = Experiment("emmcil", save_git_info=False)

# Per-dataset defaults (per_gpu_batchsize: the most a device takes per step; the method's recipe sets the batch).
# Arrow files are {data_root}/{dataset}_{split}.arrow (emmcil.data writers); the demo is generated on first use
# (emmcil.data.demo) when data_root is "".
DATASETS = {
    # 10 synthetic classes, 30 train / 10 test images each, 96-128 px: for the tiny model on CPU
    "demo": dict(num_classes=10, max_text_len=40, model_size="tiny", per_gpu_batchsize=32, num_workers=0),
    # UPMC Food-101: 101 classes, text = page title (short: ViLT's 40 positions suffice)
    "food101": dict(num_classes=101, max_text_len=40, model_size="vilt_b32", per_gpu_batchsize=32, num_workers=8),
    # MM-ImageNet-R: 200 classes, InstructBLIP captions of ~50-90 words (paper Fig. 4), hence 128 positions
    "mm_imagenet_r": dict(num_classes=200, max_text_len=128, model_size="vilt_b32", per_gpu_batchsize=32,
                          num_workers=8),
}

# Model sizes: the backbone's shape, and the timm ImageNet weights ViLT starts from when there is no load_path
# (used only if already in the local cache; nothing is downloaded).
MODEL_SIZES = {
    "vilt_b32": dict(VILT_B32, timm_init="vit_base_patch32_384"),
    "tiny": dict(TINY, timm_init=""),  # matches the demo: image_size 96, patch_size 16
}


def _pick(table: dict, name: str, key: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    return table[name][key]


def missing_suffix(missing_type: str, missing_ratio: float, missing_both_ratio: float = 0.5,
                   missing_seed: int = 0) -> str:
    """``_miss{type}{ratio}`` (+ ``b{both_ratio}`` / ``ms{missing_seed}`` when not 0.5 / 0); "" for "none"."""
    if missing_type == "none":
        return ""
    name = f"_miss{missing_type}{missing_ratio:g}"
    if missing_type == "both" and missing_both_ratio != 0.5:
        name += f"b{missing_both_ratio:g}"
    return name + (f"ms{missing_seed}" if missing_seed else "")


def default_exp_name(dataset: str, method: str, num_phases: int, seed: int, memory_per_class,
                     memory_budget_mode: str, memory_total, missing_type: str = "none", missing_ratio: float = 0.7,
                     missing_both_ratio: float = 0.5, missing_seed: int = 0) -> str:
    """``{dataset}_{method}_{L}phases[_mem{m}|_memtotal{M}][_miss{type}{ratio}]_seed{seed}``: the run directory's
    name (see :func:`missing_suffix`)."""
    name = f"{dataset}_{method}_{num_phases}phases"
    if get_method(method).uses_memory:
        name += f"_mem{memory_per_class:g}" if memory_budget_mode == "per_class" else f"_memtotal{memory_total:g}"
    name += missing_suffix(missing_type, missing_ratio, missing_both_ratio, missing_seed)
    return f"{name}_seed{seed}"


@ex.config
def config():
    # ---------------------------------------------------------------- experiment
    dataset = "mm_imagenet_r"    # demo | food101 | mm_imagenet_r
    method = "replay"            # a registered method: finetune | joint | replay | ... (emmcil/methods/)
    num_phases = 5               # L: the classes are split into L equal phases (first ones +1 if uneven)
    model_size = _pick(DATASETS, dataset, "model_size", "dataset")  # vilt_b32 | tiny
    seed = 0                     # model init, and every phase's RNGs from (seed, phase): resume is exact
    class_order_seed = 1993      # permutation of the classes (PyCIL/PILOT's 1993); None = identity order

    # ---------------------------------------------------------------- data
    data_root = ""               # folder of {dataset}_{split}.arrow; "" for the demo = $EMMCIL_DATA/demo or cache
    train_splits = ["train"]     # arrow splits trained on (e.g. ["train", "val"])
    test_split = "test"          # evaluated after every phase
    num_classes = _pick(DATASETS, dataset, "num_classes", "dataset")
    tokenizer = ""               # bert-base-uncased vocab.txt (file or folder); "" = found offline
    max_text_len = _pick(DATASETS, dataset, "max_text_len", "dataset")
    train_randaug = False        # RandAugment(2, 9) on training images (ViLT's pixelbert_randaug)

    # ---------------------------------------------------------------- missing modalities (CMML, RebQ's protocol)
    missing_type = "none"        # none | text | image | both: which modality samples of every split miss
    missing_ratio = 0.7          # share of each split's samples that miss a modality (RebQ's 70 %)
    missing_both_ratio = 0.5     # for "both": share of the missing samples that miss the image (the rest the text)
    missing_seed = 0             # seeds each split's table (a different one per split); independent of `seed`

    # ---------------------------------------------------------------- model
    hidden_size = _pick(MODEL_SIZES, model_size, "hidden_size", "model_size")  # from MODEL_SIZES[model_size]
    num_layers = _pick(MODEL_SIZES, model_size, "num_layers", "model_size")
    num_heads = _pick(MODEL_SIZES, model_size, "num_heads", "model_size")
    mlp_ratio = _pick(MODEL_SIZES, model_size, "mlp_ratio", "model_size")
    patch_size = _pick(MODEL_SIZES, model_size, "patch_size", "model_size")
    image_size = _pick(MODEL_SIZES, model_size, "image_size", "model_size")  # shorter side (pixelbert resize)
    timm_init = _pick(MODEL_SIZES, model_size, "timm_init", "model_size")   # only when load_path is ""
    vocab_size = 30522
    max_image_len = -1           # patches per image in training; -1 = all (ViLT fine-tuning)
    drop_rate = 0.1
    attn_drop_rate = 0.0
    drop_path_rate = 0.0
    qkv_bias = True
    ssf = True                   # SSF scale/shift after qkv, proj, fc1, fc2, norms, patch embedding
    tuning = "ssf"               # ssf: SSF + pooler + classifier train | frozen: pooler + classifier | full
    load_path = ""               # ViLT checkpoint (vilt_200k_mlm_itm.ckpt / HF folder); "" = random init
    trust_checkpoint = False     # allow full unpickling of load_path (only for files you trust)

    # ---------------------------------------------------------------- optimisation, per phase
    # Defaults: the method's recipe on this dataset (emmcil/incremental/recipes.py, each value with its source).
    optimizer = recipe(method, dataset, "optimizer")        # adamw | adam | sgd
    lr = recipe(method, dataset, "lr")                      # peak learning rate
    weight_decay = recipe(method, dataset, "weight_decay")
    weight_decay_1d = recipe(method, dataset, "weight_decay_1d")  # also decay biases, norms, SSF (1-D parameters)
    betas = recipe(method, dataset, "betas")                # adam / adamw
    eps = recipe(method, dataset, "eps")                    # adam / adamw
    momentum = recipe(method, dataset, "momentum")          # sgd
    lr_schedule = recipe(method, dataset, "lr_schedule")    # linear | cosine (-> 0 after the warmup) | constant
    warmup = recipe(method, dataset, "warmup")              # linear warmup from 0: fraction (< 1) or count of intervals
    schedule_interval = recipe(method, dataset, "schedule_interval")  # step | epoch: when the schedule advances
    max_epoch = recipe(method, dataset, "max_epoch")        # epochs per phase
    max_steps = -1               # optimiser steps per phase; -1 = max_epoch epochs
    batch_size = recipe(method, dataset, "batch_size")      # effective batch, reached by accumulation
    per_gpu_batchsize = min(batch_size, _pick(DATASETS, dataset, "per_gpu_batchsize", "dataset"))  # per device+step
    gradient_clip_val = None
    limit_train_batches = 1.0    # Lightning's: a fraction or a number of batches per epoch (tests, smoke runs)

    # ---------------------------------------------------------------- memory (methods with exemplars)
    memory_per_class = 5         # budget per class in full-exemplar equivalents (bytes = m x mean full cost)
    memory_budget_mode = "per_class"  # per_class | total (memory_total shared by the seen classes)
    memory_total = 0             # total budget in full-exemplar equivalents, for memory_budget_mode="total"
    memory_fill = "skip"         # skip: pass over an exemplar that does not fit and try the next | stop: end there

    # ---------------------------------------------------------------- hardware
    accelerator = "auto"         # Lightning accelerator: auto | cpu | gpu
    devices = 1                  # per node; effective batch = per_gpu_batchsize * devices * num_nodes * accumulation
    num_nodes = 1
    strategy = "auto"            # Lightning strategy ("ddp" for several GPUs)
    precision = "32-true"        # Lightning precision; "16-mixed" / "bf16-mixed" on GPUs
    deterministic = False        # Lightning's flag (True/"warn"): bitwise-reproducible GPU kernels, slower
    num_workers = _pick(DATASETS, dataset, "num_workers", "dataset")  # DataLoader workers (0: in the main process)
    num_threads = 0              # torch intra-op CPU threads; 0 = torch's default (results depend on it, bitwise)

    # ---------------------------------------------------------------- run directory
    log_dir = "runs"             # run directories live in {log_dir}/{exp_name}
    exp_tag = ""                 # appended to the default exp_name (ablation named configs set it)
    exp_name = default_exp_name(dataset, method, num_phases, seed, memory_per_class, memory_budget_mode,
                                memory_total, missing_type, missing_ratio, missing_both_ratio,
                                missing_seed) + (f"_{exp_tag}" if exp_tag else "")  # run dir {log_dir}/{exp_name}
    restart = False              # True: delete an existing run directory and start over
    keep_checkpoints = 0         # keep only the newest N phase checkpoints; 0 = keep all
    stop_after_phase = -1        # stop after this phase (resume later by re-running); -1 = run all
    progress_bar = True
    log_every_n_steps = 10


class _MethodKeys(ConfigDict):
    """Method-specific keys, declared by each method file (``Method.config``), as one more config scope.

    sacred's own ConfigDict reports no "added" keys, which would silence ConfigAddedError for every unknown key
    on the command line; this one reports the keys it does not define, as config scopes do.
    """

    def __call__(self, fixed=None, preset=None, fallback=None):
        summary = super().__call__(fixed, preset, fallback)
        summary.added = {key for key, _ in iterate_flattened(fixed or {}) if key.split(".")[0] not in self._conf}
        return summary


ex.configurations.append(_MethodKeys(method_config_defaults()))


# ---------------------------------------------------------------- datasets
@ex.named_config
def demo():
    # The embedded synthetic demo set (10 classes) with the tiny model: runs on CPU in minutes.
    dataset = "demo"  # noqa: F841 (sacred reads the local variables)
    # No pretrained weights are available offline, so the randomly initialised tiny model is tuned entirely
    # (SSF alone cannot adapt a random backbone); tuning=ssf on the command line restores the paper's setting.
    tuning = "full"  # noqa: F841
    # One CPU thread: a tiny model gains nothing from more, and spinning OpenMP threads on a busy machine make it
    # several times slower; it also makes the demo's numbers the same on any machine.
    num_threads = 1  # noqa: F841


@ex.named_config
def food101():
    # UPMC Food-101 (101 classes); data_root must hold food101_{train,test}.arrow.
    dataset = "food101"  # noqa: F841


@ex.named_config
def mm_imagenet_r():
    # MM-ImageNet-R (200 classes, generated captions); data_root must hold mm_imagenet_r_{train,test}.arrow.
    dataset = "mm_imagenet_r"  # noqa: F841


# ---------------------------------------------------------------- protocols
@ex.named_config
def phases_5():
    num_phases = 5  # noqa: F841


@ex.named_config
def phases_10():
    num_phases = 10  # noqa: F841


@ex.named_config
def phases_20():
    num_phases = 20  # noqa: F841


# ---------------------------------------------------------------- model sizes
@ex.named_config
def vilt_b32():
    # ViLT-B/32 (768 wide, 12 layers, 32 px patches, 384 px shorter side).
    model_size = "vilt_b32"  # noqa: F841


@ex.named_config
def tiny():
    # The tiny model of the tests and the demo (64 wide, 2 layers, 16 px patches, 96 px).
    model_size = "tiny"  # noqa: F841


# ---------------------------------------------------------------- methods: one named config per registered method
for _name in METHODS:
    ex.add_named_config(_name, {"method": _name, **get_method(_name).named_config})


# ---------------------------------------------------------------- missing modalities (CMML)
@ex.named_config
def missing_text_70():
    # 70 % of every split's samples lose their text ("" -> [CLS] [SEP]).
    missing_type = "text"  # noqa: F841
    missing_ratio = 0.7  # noqa: F841


@ex.named_config
def missing_image_70():
    # 70 % of every split's samples lose their image (a white image of the same size).
    missing_type = "image"  # noqa: F841
    missing_ratio = 0.7  # noqa: F841


@ex.named_config
def missing_both_70():
    # 70 % of every split's samples lose a modality: half of them the image, half the text (35 % + 35 %).
    missing_type = "both"  # noqa: F841
    missing_ratio = 0.7  # noqa: F841
    missing_both_ratio = 0.5  # noqa: F841


@ex.named_config
def cmml_food101():
    # RebQ's released setting (scripts/food101_both_0.7.sh): UPMC Food-101, 10 tasks, both modalities missing at
    # 70 %. Compose with a method: `with cmml_food101 rebq`, `with cmml_food101 emm`, ...
    dataset = "food101"  # noqa: F841
    num_phases = 10  # noqa: F841
    missing_type = "both"  # noqa: F841
    missing_ratio = 0.7  # noqa: F841
    missing_both_ratio = 0.5  # noqa: F841


# ---------------------------------------------------------------- ablations
@ex.named_config
def emm_no_aug():
    # Exemplar masking without the multimodal augmentation (the paper's augmentation ablation).
    method = "emm"  # noqa: F841
    aug_text_swap = 0.0  # noqa: F841
    aug_patch_merge = 0.0  # noqa: F841
    exp_tag = "noaug"  # noqa: F841

NAMED_CONFIGS = {
    "dataset": ["demo", "food101", "mm_imagenet_r"],
    "protocol": ["phases_5", "phases_10", "phases_20"],
    "method": sorted(METHODS),
    "model_size": ["vilt_b32", "tiny"],
    "ablation": ["emm_no_aug"],
    "missing": ["missing_text_70", "missing_image_70", "missing_both_70"],
    "cmml": ["cmml_food101"],
}
