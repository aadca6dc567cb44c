"""The sacred experiment: default config and composable named configs.

    python run.py with demo                                   # embedded demo, tiny model, CPU, a few minutes
    python run.py with mm_imagenet_r phases_10 replay data_root=/data/arrow load_path=vilt_200k_mlm_itm.ckpt
    python run.py print_config with food101 phases_20 finetune   # resolve and show the config, no training

Named configs compose (later ones win on the keys they share; ``key=value`` updates win over all of them):

- datasets: ``demo``, ``food101``, ``mm_imagenet_r``  (set ``dataset``; the demo also means the tiny model,
  ``tuning="full"`` since no pretrained weights exist offline, and one CPU thread); any other dataset runs by name,
  ``dataset=NAME data_root=DIR`` for the ``DIR/NAME_{split}.arrow`` files our writers make (``OTHER_DATASET`` of
  ``emmcil/data/catalogue.py``);
- protocols: ``phases_5``, ``phases_10``, ``phases_20``  (set ``num_phases``); PyCIL's uneven phases with
  ``init_classes=B increment=I`` (a first phase of B classes, then I a phase: ``with demo init_classes=4 increment=2``
  gives 4/2/2/2), where num_phases follows;
- methods: ``finetune`` (lower bound), ``joint`` (upper bound), ``replay`` (herding, full exemplars), plus one per
  method file in ``emmcil/methods/`` (set ``method``, and so the method's training recipe);
- model sizes: ``vilt_b32``, ``tiny``  (set ``model_size``);
- missing modalities (continual missing-modality learning, RebQ's CMML): ``missing_text_70``, ``missing_image_70``,
  ``missing_both_70`` (set only the ``missing_*`` keys), and ``cmml_food101`` (RebQ's setting: Food-101, 10 phases,
  both missing at 70 %), to compose with any method (``rebq``, ``finetune``, ``replay``, ``emm``, ...).

Everything else is derived in :func:`config` from those four keys, through the dataset catalogue (``DATASETS`` of
``emmcil/data/catalogue.py``), the ``MODEL_SIZES`` table and the method's training recipe
(``emmcil/methods/recipes.py``), unless set explicitly. Unknown keys are sacred's own ``ConfigAddedError``; a key of
another method than the chosen one is an error naming the methods that read it (:class:`MethodKeys`). The run
directory is ``{log_dir}/{exp_name}``, and ``exp_name`` is derived from every key that changes results and differs
from the defaults of the dataset and method (:func:`name_the_run`), unless set.
Key groups (each key has a comment below; ``print_config`` shows them): experiment (dataset, method, num_phases,
model_size, seed, class_order_seed), data (data_root, splits, tokenizer, max_text_len), missing modalities
(missing_type, missing_ratio, missing_both_ratio, missing_seed), model (ViLT sizes, SSF, tuning, load_path),
optimisation per phase (the method's recipe: optimizer, lr, weight decay, schedule, max_epoch, batch_size vs
per_gpu_batchsize), memory (memory_per_class = 5 full exemplars, memory_unit = tokens, budget mode), hardware
(accelerator, devices, num_nodes, strategy, precision, workers, threads), run directory (log_dir, exp_name, restart,
keep_checkpoints, stop_after_phase), logging (Weights & Biases), and the chosen method's own keys (``Method.config``
of its file, e.g. ``emm``'s thresholds).
"""
from __future__ import annotations

import ast
import functools
import json
import math
from pathlib import Path

import yaml
from sacred import SETTINGS, Experiment
from sacred.config import config_files
from sacred.config.config_dict import ConfigDict
from sacred.initialize import create_run
from sacred.utils import ConfigError, iterate_flattened

from emmcil.data import dataset_classes
from emmcil.data.catalogue import DATASETS, dataset_default
from emmcil.data.scenario import phase_sizes
from emmcil.engine.rundir import run_name
from emmcil.memory.buffer import MemoryBuffer
from emmcil.methods import METHODS, get_method, method_key_docs, methods_reading
from emmcil.methods.recipes import INTERVALS, OPTIMIZERS, SCHEDULES, recipe
from emmcil.model import TINY, VILT_B32, ViLTConfig
from emmcil.model.ssf import TUNING_MODES
from emmcil.provenance import git_repository

# Lightning draws its own progress bars; sacred's stdout capture would mangle them.
SETTINGS.CAPTURE_MODE = "no"

class EmmcilExperiment(Experiment):
    """sacred's Experiment, with the git repository of the checkout in its experiment info (``repositories``: url,
    commit, dirty), which observers record and ``-e`` (``--enforce_clean``) checks. sacred's own way
    (``save_git_info=True``) asks git about every source file at every run; this asks once a process
    (:func:`emmcil.provenance.git_repository`). Outside a git checkout (an installed package) there is none, and
    ``-e`` says so."""

    def get_experiment_info(self):
        info = super().get_experiment_info()
        repository = git_repository()
        info["repositories"] = [repository] if repository else []
        return info


ex = EmmcilExperiment("emmcil", save_git_info=False)

# Model sizes: the backbone's shape, and the timm ImageNet weights ViLT starts from when there is no load_path
# (used only if already in the local cache; nothing is downloaded).
MODEL_SIZES = {
    "vilt_b32": dict(VILT_B32, timm_init="vit_base_patch32_384"),
    "tiny": dict(TINY, timm_init=""),  # matches the demo: image_size 96, patch_size 16
}


def config_error(message: str) -> ConfigError:
    """A config error that sacred prints as its message alone (no traceback)."""
    return ConfigError(message, print_traceback=False, print_conflicting_configs=False)


def model_size_default(model_size: str, key: str):
    if model_size not in MODEL_SIZES:
        raise config_error(f"unknown model_size {model_size!r}; choose one of {sorted(MODEL_SIZES)}")
    return MODEL_SIZES[model_size][key]


def split_names(splits) -> list[str]:
    """``train_splits`` as a list of split names; a config error for anything else (``train_splits=train`` on the
    command line is the string "train", which would read as the splits "t", "r", "a", "i", "n")."""
    if not isinstance(splits, (list, tuple)) or not splits or not all(isinstance(s, str) and s for s in splits):
        raise config_error(f"train_splits={splits!r}: expected a non-empty list of split names, e.g. "
                           f"train_splits='[\"train\", \"val\"]'")
    return list(splits)


def dataset_num_classes(dataset: str, data_root: str, splits) -> int:
    """The class count: ``DATASETS``' for the named datasets, else from the files of ``data_root`` (see
    :func:`emmcil.data.dataset_classes`); a config error names what is missing."""
    if dataset in DATASETS:
        return DATASETS[dataset]["num_classes"]
    if not data_root:
        raise config_error(f"dataset={dataset!r} is none of the named datasets {sorted(DATASETS)}, so it needs "
                           f"data_root=DIR, the folder of its {dataset}_{{train,test}}.arrow files (written by "
                           f"`python -m emmcil.data.write_folder ... --name {dataset}`)")
    try:
        return dataset_classes(Path(data_root).expanduser(), dataset, splits)[0]
    except (OSError, ValueError) as e:
        raise config_error(str(e)) from None


# ---------------------------------------------------------------- config files: data, never code
# `run.py with FILE.json|.yaml` reads FILE as plain data. Sacred decodes .json with jsonpickle (a {"py/reduce": ...}
# calls any function it names) and .pickle with pickle, so a config file copied from a shared run directory could
# run code before anything trains; here JSON and YAML are parsed by safe parsers, and pickle files are refused.
def _file_name(fp) -> str:
    return getattr(fp, "name", "the config file")


def _no_object_tags(value, where: str, name: str) -> None:
    """A config error when ``value`` holds a jsonpickle tag (a key ``py/...``), which sacred would build into a
    Python object."""
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).startswith("py/"):
                raise config_error(f"{name}: {where or 'the top level'} holds the jsonpickle tag {k!r}, which would "
                                   f"build a Python object (and run code); config files are read as plain JSON "
                                   f"data (numbers, strings, lists, objects): remove it")
            _no_object_tags(v, f"{where}.{k}" if where else str(k), name)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_object_tags(v, f"{where}[{i}]", name)


def _config_mapping(data, name: str) -> dict:
    if not isinstance(data, dict):
        raise config_error(f"{name}: a config file holds one object of key: value entries, not a "
                           f"{type(data).__name__}")
    return data


def read_json_config(fp) -> dict:
    """A ``with FILE.json`` config file, as plain JSON data (``json.load``; jsonpickle tags are refused)."""
    name = _file_name(fp)
    try:
        data = json.load(fp)
    except ValueError as e:
        raise config_error(f"{name} is not valid JSON: {e}") from None
    _no_object_tags(data, "", name)
    return _config_mapping(data, name)


def read_yaml_config(fp) -> dict:
    """A ``with FILE.yaml`` config file, as plain YAML data (``yaml.safe_load``: tags that build Python objects,
    ``!!python/...``, are refused)."""
    name = _file_name(fp)
    try:
        data = yaml.safe_load(fp)
    except yaml.YAMLError as e:
        raise config_error(f"{name} is not plain YAML data (tags that build Python objects are refused): "
                           f"{str(e).splitlines()[0]}") from None
    return _config_mapping(data, name)


def refuse_pickle_config(fp):
    raise config_error(f"{_file_name(fp)}: config files in pickle format are refused (unpickling runs code); write "
                       f"the config as JSON or YAML")


for _ext, _load in {".json": read_json_config, ".yaml": read_yaml_config, ".yml": read_yaml_config,
                    ".pickle": refuse_pickle_config}.items():
    _sacred = config_files.HANDLER_BY_EXT.get(_ext)
    config_files.HANDLER_BY_EXT[_ext] = config_files.Handler(_load, _sacred.dump if _sacred else None,
                                                             _sacred.mode if _sacred else "")
def protocol_phases(num_classes: int, num_phases: int, init_classes: int, increment: int) -> int:
    """num_phases as the protocol gives it: the key itself for equal phases, the count of PyCIL's init_classes /
    increment split otherwise (:func:`emmcil.data.scenario.phase_sizes`); a config error for a split that does not
    fit. A num_phases set alongside increment is checked by :class:`MethodKeys`."""
    if not increment and not init_classes:
        return num_phases
    try:
        return len(phase_sizes(num_classes, None, init_classes, increment))
    except ValueError as e:
        raise config_error(str(e)) from None


@ex.config
def config():
    # ---------------------------------------------------------------- experiment
    dataset = "mm_imagenet_r"    # demo | food101 | mm_imagenet_r, or any NAME of data_root/NAME_{split}.arrow files
    method = "replay"            # a registered method: finetune | joint | replay | ... (emmcil/methods/)
    num_phases = 5               # L equal phases (the first ones +1 if L does not divide); with increment: derived
    init_classes = 0             # PyCIL's init_cls: classes of the first phase, with increment; 0 = increment
    increment = 0                # PyCIL's increment: classes of each later phase; 0 = num_phases equal phases
    model_size = dataset_default(dataset, "model_size")  # vilt_b32 | tiny
    seed = 0                     # model init, and every phase's RNGs from (seed, phase): resume is exact
    class_order_seed = 1993      # permutation of the classes (PyCIL/PILOT's 1993); None = identity order

    # ---------------------------------------------------------------- data
    data_root = ""               # folder of {dataset}_{split}.arrow; "" for the demo = $EMMCIL_DATA/demo or cache
    train_splits = ["train"]     # arrow splits trained on (e.g. ["train", "val"])
    test_split = "test"          # evaluated after every phase
    num_classes = dataset_num_classes(dataset, data_root, split_names(train_splits) + [test_split])  # or NAME_classes.json
    num_phases = protocol_phases(num_classes, num_phases, init_classes, increment)
    tokenizer = ""               # bert-base-uncased vocab.txt (file or folder); "" = found offline
    max_text_len = dataset_default(dataset, "max_text_len")  # text tokens kept per sample (ViLT: 40)
    train_randaug = False        # RandAugment(2, 9) on training images (ViLT's pixelbert_randaug)

    # ---------------------------------------------------------------- missing modalities (CMML, RebQ's protocol)
    missing_type = "none"        # none | text | image | both: which modality samples of every split miss
    missing_ratio = 0.7          # share of each split's samples that miss a modality (RebQ's 70 %)
    missing_both_ratio = 0.5     # for "both": share of the missing samples that miss the image (the rest the text)
    missing_seed = 0             # seeds each split's table (a different one per split); independent of `seed`

    # ---------------------------------------------------------------- model
    hidden_size = model_size_default(model_size, "hidden_size")  # from MODEL_SIZES[model_size]
    num_layers = model_size_default(model_size, "num_layers")  # transformer blocks
    num_heads = model_size_default(model_size, "num_heads")  # attention heads per block
    mlp_ratio = model_size_default(model_size, "mlp_ratio")  # MLP width / hidden_size
    patch_size = model_size_default(model_size, "patch_size")  # image patch side, pixels
    image_size = model_size_default(model_size, "image_size")  # shorter side (pixelbert resize)
    timm_init = model_size_default(model_size, "timm_init")   # only when load_path is ""
    vocab_size = 30522           # bert-base-uncased word pieces
    max_image_len = -1           # patches per image in training; -1 = all (ViLT fine-tuning)
    drop_rate = 0.1              # dropout after attention / MLP outputs and embeddings (ViLT: 0.1)
    attn_drop_rate = 0.0         # dropout on attention weights
    drop_path_rate = 0.0         # stochastic depth
    # sample: dropout, stochastic depth and max_image_len's patches drawn per sample from (seed, phase, epoch, index),
    # so devices, num_nodes and per_gpu_batchsize do not change results | torch: torch's RNG stream over each batch
    # (cheaper masks; the batch layout then changes results, and those keys name the run)
    model_rng = "sample"
    qkv_bias = True              # bias in the query/key/value projection (ViT, ViLT)
    ssf = True                   # SSF scale/shift after qkv, proj, fc1, fc2, norms, patch embedding
    tuning = "ssf"               # ssf: SSF + pooler + classifier train | frozen: pooler + classifier | full
    head = "linear"              # linear | mlp: Linear-LN-GELU-Linear, missing_aware_prompts' head (last layer grows)
    load_path = ""               # ViLT checkpoint (vilt_200k_mlm_itm.ckpt / HF folder); "" = random init
    trust_checkpoint = False     # allow full unpickling of load_path (only for files you trust)

    # ---------------------------------------------------------------- optimisation, per phase
    # Defaults: the method's recipe on this dataset (emmcil/methods/recipes.py, each value with its source).
    optimizer = recipe(method, dataset, "optimizer")        # adamw | adam | sgd
    lr = recipe(method, dataset, "lr")                      # peak learning rate
    weight_decay = recipe(method, dataset, "weight_decay")  # decoupled (adamw) or L2 (adam, sgd) weight decay
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
    per_gpu_batchsize = min(batch_size, dataset_default(dataset, "per_gpu_batchsize"))  # per device+step
    gradient_clip_val = None     # clip the gradient norm to this; None = no clipping
    limit_train_batches = 1.0    # a fraction of each epoch, or a number of its optimiser steps (tests, smoke runs)
    # 0: uniformly random training batches (ViLT). k > 0: batches of similar sequence length, drawn from sorted
    # windows of k batches (transformers' LengthGroupedSampler uses 50), so that a batch of masked exemplars costs
    # what they keep instead of being padded to a full image (emmcil/engine/loaders.py). Off by default: it
    # changes which samples share a batch, and so the results.
    length_group_window = 0      # 0: random batches; k: batches of similar length from sorted windows of k batches

    # ---------------------------------------------------------------- memory (methods with exemplars)
    memory_per_class = 5         # budget per class, in full exemplars (the paper's "samples/class"; 5 its default)
    memory_unit = "tokens"       # tokens (stored / the sample's tokens) | byte_share (stored / its bytes) | bytes
                                 # tokens: patches + text tokens, a compressed image (mrdc, cim) at its reference's
                                 # rate; a full exemplar costs 1.0, so m a class (the paper's Fig. 5 from its Fig. 4
                                 # masks). bytes: stored bytes against m x the training set's mean full-exemplar bytes
    memory_budget_mode = "per_class"  # per_class | total (memory_total shared by the seen classes)
    memory_total = 0             # total budget in full exemplars, for memory_budget_mode="total"
    memory_fill = "skip"         # skip: pass over an exemplar that does not fit | stop: end there (CIM-CIL; cim's)
                                 # the two are the same when every exemplar costs 1.0 (replay)
    memory_browser = True        # after each phase, save what `python -m emmcil.report.memory` shows in
                                 # memory/phase_<t>/: each new exemplar's stored image, attention map, caption,
                                 # rank, similarity, cost (False: nothing)

    # ---------------------------------------------------------------- hardware
    accelerator = "auto"         # Lightning accelerator: auto | cpu | gpu
    devices = 1                  # per node; effective batch = per_gpu_batchsize * devices * num_nodes * accumulation
    num_nodes = 1                # machines (Lightning)
    strategy = "auto"            # Lightning strategy ("ddp" for several GPUs)
    precision = "32-true"        # Lightning precision; "16-mixed" / "bf16-mixed" on GPUs
    deterministic = None         # torch's deterministic kernels; None = on a CPU only (exact, costs ~nothing there)
    num_workers = dataset_default(dataset, "num_workers")  # DataLoader workers (0: main process); at most the cores
    # Images leave the workers as uint8 at the model's size and are normalised on the device (docs/data.md).
    decode_on = "cpu"            # cpu: the workers decode | device: they hand over JPEG files, decoded in batches on
                                 # the model's device (torchvision decode_jpeg: nvJPEG on CUDA); same pixels within
                                 # the decoders' tolerance; an augmented (train_randaug) training set decodes on the CPU
    jpeg_draft = decode_on == "cpu"  # CPU decoding: a JPEG at least twice the model's size is decoded at 1/2, 1/4 or
                                 # 1/8 scale (Pillow's draft), still >= that size: other pixels (docs/data.md), so a
                                 # result key; the device decodes at full scale (nvJPEG has no DCT scaling)
    num_threads = 0              # torch intra-op CPU threads; 0 = torch's default (results depend on it, bitwise)
    compile = False              # torch.compile the backbone (train, inference): same results; eager where unsupported

    # ---------------------------------------------------------------- run directory
    log_dir = "runs"             # run directories live in {log_dir}/{exp_name}
    exp_tag = ""                 # appended to the derived exp_name (ablation named configs set it)
    exp_name = ""                # run directory {log_dir}/{exp_name}; "" = derived from the config (name_the_run)
    restart = False              # True: delete an existing run directory and start over
    keep_checkpoints = 0         # keep only the newest N phase checkpoints; 0 = keep all
    stop_after_phase = -1        # stop after this phase (resume later by re-running); -1 = run all
    progress_bar = True          # Lightning's progress bar in training, on a terminal only (a log gets the phase lines)
    log_every_n_steps = 10       # training metrics (loss, accuracy, learning rate) every N steps

    # ---------------------------------------------------------------- logging: CSV and TensorBoard always (logs/)
    wandb = False                # also log to Weights & Biases (needs `pip install wandb` and `wandb login`)
    wandb_project = "emmcil"     # W&B project
    wandb_entity = ""            # W&B team or user; "" = your default entity
    wandb_mode = "online"        # online | offline (files in logs/wandb/, upload later with `wandb sync`)


# the memory keys and the MemoryBuffer arguments they are
MEMORY_ARGS = {"memory_per_class": "memory_per_class", "memory_budget_mode": "mode", "memory_total": "memory_total",
               "memory_fill": "fill", "memory_unit": "unit"}


class MethodKeys:
    """The chosen method's own keys (``Method.config`` of its file) as one more config scope.

    Only the keys of the config's ``method`` join the config, each with the comment it has in its method file (so
    ``print_config`` shows the general keys and these). A key that other methods declare but the chosen one does not
    is an error naming the methods that read it: ``with demo replay tau_image=0.3`` would otherwise be accepted
    and change nothing. A key that no method and no scope declares stays sacred's ``ConfigAddedError`` (a typo).
    Likewise ``memory_total`` without ``memory_budget_mode=total``, which would be ignored, and memory keys that
    the memory buffer (:class:`~emmcil.memory.buffer.MemoryBuffer`) would refuse only when the run starts.
    """

    def __call__(self, fixed=None, preset=None, fallback=None):
        fixed, preset = fixed or {}, preset or {}
        method = preset.get("method", fixed.get("method"))
        own = get_method(method).config  # KeyError naming the registered methods
        foreign = sorted(k for k in fixed if k not in own and methods_reading(k))
        if foreign:
            lines = "\n".join(f"  {k}: a key of {', '.join(methods_reading(k))}" for k in foreign)
            raise config_error(f"method={method!r} does not read {', '.join(foreign)}:\n{lines}\n"
                               f"Choose that method (e.g. `with {methods_reading(foreign[0])[0]}`), or drop the key; "
                               f"`python run.py print_config with {method}` lists the keys {method!r} reads.")
        memory = {k: fixed.get(k, preset.get(k)) for k in MEMORY_ARGS}
        try:  # the memory buffer's own checks, now rather than when the run starts
            MemoryBuffer(**{arg: memory[key] for key, arg in MEMORY_ARGS.items()}, full_exemplar_bytes=1.0)
        except ValueError as err:
            raise config_error(str(err)) from None
        protocol = [preset.get(k, fixed.get(k)) for k in ("num_classes", "num_phases", "init_classes", "increment")]
        try:  # a num_phases set alongside init_classes / increment (a phases_* named config, say) must agree
            if protocol[2] or protocol[3]:
                phase_sizes(*protocol)
        except ValueError as err:
            raise config_error(str(err)) from None
        mode = memory["memory_budget_mode"]
        if fixed.get("memory_total", 0) and mode != "total":
            raise config_error(f"memory_total={fixed['memory_total']} is read only with memory_budget_mode=total "
                               f"(now {mode!r}, where memory_per_class is the budget): add memory_budget_mode=total, "
                               f"or drop memory_total")
        summary = ConfigDict(dict(own))(fixed, preset, fallback)
        # sacred's ConfigDict reports no "added" keys, which would silence ConfigAddedError for every unknown key;
        # this scope reports the keys it does not define, as config scopes do
        summary.added = {key for key, _ in iterate_flattened(fixed) if key.split(".")[0] not in own}
        docs = method_key_docs()
        summary.docs = {k: f"{method}: {docs.get(k, '')}" for k in own}
        return summary


ex.configurations.append(MethodKeys())


def resolve_config(named_configs=(), **updates) -> dict:
    """The config of ``run.py with <named_configs> key=value...`` as sacred resolves it; nothing runs."""
    return dict(create_run(ex, "print_config", config_updates=updates, named_configs=list(named_configs)).config)


def reference_config(cfg) -> dict:
    """The config that ``cfg``'s dataset and method get by default: ``with <dataset> <method>`` (their named configs
    where they have one, e.g. the demo's tuning, a method's recipe), with ``cfg``'s data_root (a dataset by name takes
    its class count from its files) and phases (num_phases, init_classes, increment). When ``cfg`` changes model_size,
    the backbone keys the size derives are those of ``cfg``'s size, so that the name shows ``model_size=...`` and not
    every derived key."""
    named = [n for n in (cfg["dataset"], cfg["method"]) if n in ex.named_configs]
    fixed = {"dataset": cfg["dataset"], "method": cfg["method"], "data_root": cfg["data_root"],
             "num_phases": cfg["num_phases"], "init_classes": cfg["init_classes"], "increment": cfg["increment"],
             "exp_name": "reference"}  # a set exp_name: no name_the_run inside
    ref = resolve_config(named, **fixed)
    if ref["model_size"] != cfg["model_size"]:  # the size differs from the default, the keys it derives do not
        ref = {**resolve_config(named, **fixed, model_size=cfg["model_size"]), "model_size": ref["model_size"]}
    return ref


# ---------------------------------------------------------------- checks at config time
# Lightning's precisions, as the run's name and its resume check compare them (16, "16", "bf16", 32 are aliases
# Lightning accepts: refused with the canonical name, so that one setting never has two names).
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
PRECISION_ALIASES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}
# Whole numbers and their smallest value (None: no bound); "or -1" keys also take -1 (off / all).
INTEGER_KEYS = {"num_phases": 1, "batch_size": 1, "per_gpu_batchsize": 1, "max_epoch": 1, "num_workers": 0,
                "num_threads": 0, "num_nodes": 1, "log_every_n_steps": 1, "keep_checkpoints": 0,
                "stop_after_phase": -1, "length_group_window": 0, "seed": None, "missing_seed": None, "max_text_len": 2,
                "hidden_size": 1, "num_layers": 1, "num_heads": 1, "patch_size": 1, "image_size": 1,
                "vocab_size": 1, "max_steps": None, "max_image_len": None}
OR_MINUS_ONE = ("max_steps", "max_image_len")
SEED_KEYS = ("seed", "missing_seed", "class_order_seed")  # numpy and Lightning take seeds in [0, 2^32)
# Real numbers and their range: (low, high, whether low itself is allowed).
REAL_KEYS = {"lr": (0, math.inf, True), "weight_decay": (0, math.inf, True), "eps": (0, math.inf, False),
             "momentum": (0, math.inf, True), "warmup": (0, math.inf, True), "missing_ratio": (0, 1, True),
             "missing_both_ratio": (0, 1, True), "mlp_ratio": (0, math.inf, False)}
# Keys whose value may be of more than one type; every other key must have its default's type (a str key a str,
# a bool key a bool, a list key a list), so that a value sacred parsed differently from what was meant is refused.
MIXED_KEYS = {"class_order_seed": (int, type(None)), "devices": (int, str, list), "deterministic": (bool, str, type(None)),
              "gradient_clip_val": (int, float, type(None)), "limit_train_batches": (int, float),
              "memory_per_class": (int, float), "memory_total": (int, float), "warmup": (int, float)}
ADAM_TYPE = ("adam", "adamw")


@functools.cache
def default_types() -> dict[str, type]:
    """Each key's type as ``config()`` and the method files declare its default (bool, int, float, str, list)."""
    out = {k: type(v) for k, v in config().items()}
    for method in METHODS.values():
        out.update((k, type(v)) for k, v in method.config.items())
    return out


def string_keys() -> frozenset[str]:
    """The keys that hold text (their default is a str): ``exp_name``, ``exp_tag``, ``data_root``, ``precision``, ..."""
    return frozenset(k for k, t in default_types().items() if t is str)


def keep_strings(argv: list[str]) -> list[str]:
    """``argv`` of ``run.py [command] with ... key=value`` with the values of :func:`string_keys` that sacred would
    read as something else quoted, so they stay the text typed: sacred reads ``exp_name=2024_01`` as the int 202401
    (Python's digit separators), ``exp_tag=1e3`` as 1000.0, ``data_root=None`` as None. A value already quoted
    (``exp_name="'2024_01'"``) is left alone."""
    keys, out = string_keys(), []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key in keys and not arg.startswith("-"):
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                parsed = value  # sacred keeps it a string
            if not isinstance(parsed, str):
                arg = f"{key}={value!r}"
        out.append(arg)
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def config_problems(cfg) -> list[str]:
    """Every problem of a resolved config that would otherwise show only when the run starts or after it trained
    (a ZeroDivisionError for ``batch_size=0``, a run of NaN weights for ``precision=16-true``, a run name made of
    an int): one line each, naming the key."""
    problems = []
    types = default_types()
    for key, value in cfg.items():
        if key in REAL_KEYS:
            allowed = (int, float)
        elif key in INTEGER_KEYS:
            allowed = (int,)
        elif key in MIXED_KEYS:
            allowed = MIXED_KEYS[key]
        elif types.get(key) in (bool, int, float, str, list):
            allowed = (types[key], int) if types[key] is float else (types[key],)
        else:
            continue
        if isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool)):
            continue
        want = " or ".join({type(None): "None", int: "an int", str: "a str", list: "a list", bool: "a bool (True or "
                            "False)", float: "a float"}[t] for t in allowed)
        hint = ""
        if key == "precision" and str(value) in PRECISION_ALIASES:
            hint = f" (write precision={PRECISION_ALIASES[str(value)]}, what Lightning reads {value!r} as)"
        elif str in allowed:
            hint = (f" (run.py keeps a text key as typed on its command line; elsewhere pass a str, or quote it in "
                    f"a shell: {key}=\"'...'\")")
        problems.append(f"{key}={value!r}: expected {want}, not {type(value).__name__} {value!r}{hint}")
    if problems:  # the range checks below assume the types
        return problems
    for key, low in INTEGER_KEYS.items():
        value = cfg.get(key)
        if value is None:
            continue
        if key in OR_MINUS_ONE:
            if value != -1 and value < 1:
                problems.append(f"{key}={value}: -1 (off) or at least 1")
        elif low is not None and value < low:
            problems.append(f"{key}={value}: at least {low}")
    for key in SEED_KEYS:
        if cfg.get(key) is not None and not 0 <= cfg[key] < 2**32:
            problems.append(f"{key}={cfg[key]}: a seed in [0, 2**32)")
    for key, (low, high, closed) in REAL_KEYS.items():
        value = cfg.get(key)
        if value is not None and not (_number(value) and (low <= value if closed else low < value) and value <= high):
            problems.append(f"{key}={value}: a number in {'[' if closed else '('}{low}, {high}]")
    if not 1 <= cfg["num_phases"] <= cfg["num_classes"]:
        problems.append(f"num_phases={cfg['num_phases']}: at most num_classes={cfg['num_classes']} (a phase needs a "
                        f"class of its own)")
    limit = cfg["limit_train_batches"]
    if not (isinstance(limit, float) and 0 < limit <= 1 or isinstance(limit, int) and limit >= 1):
        problems.append(f"limit_train_batches={limit}: a fraction in (0, 1] or a number of batches >= 1")
    clip = cfg["gradient_clip_val"]
    if clip is not None and not (_number(clip) and clip > 0):
        problems.append(f"gradient_clip_val={clip}: None (no clipping) or a norm > 0")
    betas = cfg["betas"]
    if len(betas) != 2 or not all(_number(b) and 0 <= b < 1 for b in betas):
        problems.append(f"betas={betas}: two numbers in [0, 1)")
    for key, allowed in (("tuning", TUNING_MODES), ("optimizer", OPTIMIZERS), ("lr_schedule", tuple(SCHEDULES)),
                         ("schedule_interval", INTERVALS), ("missing_type", ("none", "text", "image", "both")),
                         ("model_rng", ("sample", "torch"))):
        if cfg[key] not in allowed:
            problems.append(f"{key}={cfg[key]!r}: one of {allowed}")
    if cfg["decode_on"] not in ("cpu", "device"):
        problems.append(f"decode_on={cfg['decode_on']!r}: one of ('cpu', 'device')")
    elif cfg["decode_on"] == "device" and cfg["jpeg_draft"]:
        problems.append("jpeg_draft=True with decode_on='device': the device decodes every JPEG at full scale "
                        "(nvJPEG has no DCT scaling), so a run would train on other pixels than its config names; "
                        "drop jpeg_draft (it follows decode_on) or decode on the CPU")
    precision = cfg["precision"]
    if precision in PRECISION_ALIASES:
        problems.append(f"precision={precision!r}: write precision={PRECISION_ALIASES[precision]} (what Lightning "
                        f"reads it as), so that the run's name and resume check see one name for one setting")
    elif precision not in PRECISIONS:
        problems.append(f"precision={precision!r}: one of {PRECISIONS}")
    elif precision == "16-true" and cfg["optimizer"] in ADAM_TYPE:
        problems.append(f"precision='16-true' with optimizer={cfg['optimizer']!r}: the weights and {cfg['optimizer']}'s "
                        f"state are float16, where its eps={cfg['eps']:g} is 0 and small squared gradients underflow, "
                        f"so an update divides by zero and every weight turns NaN within the first epoch. Use "
                        f"precision=16-mixed (float16 compute, float32 weights, on a GPU) or bf16-mixed (GPU or CPU)")
    if precision == "16-mixed" and cfg["accelerator"] == "cpu":
        problems.append("precision='16-mixed' with accelerator='cpu': float16 autocast runs on GPUs only (Lightning "
                        "would switch to bf16-mixed); use precision=bf16-mixed on a CPU")
    devices = cfg["devices"]
    if not (isinstance(devices, int) and (devices >= 1 or devices == -1) or devices == "auto"
            or isinstance(devices, str) and devices.isdigit() and int(devices) >= 1
            or isinstance(devices, list) and devices and all(isinstance(d, int) and d >= 0 for d in devices)):
        problems.append(f"devices={devices!r}: a count >= 1, -1 or \"auto\" (every GPU), or a list of GPU ids")
    try:  # the backbone's own checks: sizes, dropout probabilities
        ViLTConfig.from_dict(cfg)
    except ValueError as err:
        problems.append(str(err))
    if not problems:
        try:  # the method's own checks of its keys
            get_method(cfg["method"])(cfg).check_config()
        except ValueError as err:
            problems.append(str(err))
    return problems


@ex.config_hook
def check_config(config, command_name, logger):
    """A config error listing :func:`config_problems`, before anything runs (``print_config`` and the scripts' dry
    runs included)."""
    problems = config_problems(config)
    if problems:
        raise config_error("bad config:\n  " + "\n  ".join(problems))
    return {}


@ex.config_hook
def name_the_run(config, command_name, logger):
    """exp_name="" -> the run's name (:func:`emmcil.engine.rundir.run_name`): dataset, method, L, memory,
    missing modalities, every other key that changes results and differs from :func:`reference_config`, the seed
    and exp_tag. A set exp_name is kept."""
    if config["exp_name"]:
        return {}
    return {"exp_name": run_name(config, reference_config(config))}


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


@ex.named_config
def emm_minmax():
    # Exemplar masking with min-max thresholds (tau = 0.5 on the min-max normalised attention) instead of the
    # default top shares calibrated to Fig. 4: the kept share then follows how peaked the attention is.
    method = "emm"  # noqa: F841
    mask_norm = "minmax"  # noqa: F841
    tau_image = 0.5  # noqa: F841
    tau_text = 0.5  # noqa: F841
    exp_tag = "minmax"  # noqa: F841

NAMED_CONFIGS = {
    "dataset": ["demo", "food101", "mm_imagenet_r"],
    "protocol": ["phases_5", "phases_10", "phases_20"],
    "method": sorted(METHODS),
    "model_size": ["vilt_b32", "tiny"],
    "ablation": ["emm_no_aug", "emm_minmax"],
    "missing": ["missing_text_70", "missing_image_70", "missing_both_70"],
    "cmml": ["cmml_food101"],
}
