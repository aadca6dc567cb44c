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
import contextvars
import dataclasses
import functools
import json
from pathlib import Path

import yaml
from sacred import SETTINGS, Experiment
from sacred.config import config_files
from sacred.config.config_dict import ConfigDict
from sacred.initialize import create_run
from sacred.utils import ConfigError, iterate_flattened

from emmcil.data.arrow import dataset_classes
from emmcil.data.catalogue import DATASETS, dataset_default
from emmcil.settings.protocol import phase_sizes
from emmcil.engine.rundir import run_name
from emmcil.methods.catalogue import catalogue, method_entry, methods_reading
from emmcil.methods.recipes import recipe
from emmcil.provenance import git_repository
from emmcil.settings import MODEL_SIZES, Settings, docs, general_fields

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
    increment split otherwise (:func:`emmcil.data.scenario.phase_sizes`). A split that does not fit keeps
    num_phases: the settings' check (:func:`check_config`) refuses it, as it refuses a num_phases set alongside
    that disagrees."""
    if not increment and not init_classes:
        return num_phases
    try:
        return len(phase_sizes(num_classes, None, init_classes, increment))
    except (ValueError, TypeError):
        return num_phases


@ex.config
def config():
    # Every key is a field of emmcil/settings/general.py (type, default, one-line doc, checks), which print_config
    # shows; here the derived defaults: the dataset catalogue, MODEL_SIZES and the method's training recipe.
    # ---------------------------------------------------------------- experiment
    dataset = "mm_imagenet_r"
    method = "replay"
    num_phases = 5
    init_classes = 0
    increment = 0
    model_size = dataset_default(dataset, "model_size")
    seed = 0
    class_order_seed = 1993

    # ---------------------------------------------------------------- data
    data_root = ""
    train_splits = ["train"]
    test_split = "test"
    num_classes = dataset_num_classes(dataset, data_root, split_names(train_splits) + [test_split])
    num_phases = protocol_phases(num_classes, num_phases, init_classes, increment)
    tokenizer = ""
    max_text_len = dataset_default(dataset, "max_text_len")
    train_randaug = False

    # ---------------------------------------------------------------- missing modalities (CMML, RebQ's protocol)
    missing_type = "none"
    missing_ratio = 0.7
    missing_both_ratio = 0.5
    missing_seed = 0

    # ---------------------------------------------------------------- model
    hidden_size = model_size_default(model_size, "hidden_size")
    num_layers = model_size_default(model_size, "num_layers")
    num_heads = model_size_default(model_size, "num_heads")
    mlp_ratio = model_size_default(model_size, "mlp_ratio")
    patch_size = model_size_default(model_size, "patch_size")
    image_size = model_size_default(model_size, "image_size")
    timm_init = model_size_default(model_size, "timm_init")
    vocab_size = 30522
    max_image_len = -1
    drop_rate = 0.1
    attn_drop_rate = 0.0
    drop_path_rate = 0.0
    model_rng = "sample"
    qkv_bias = True
    ssf = True
    tuning = "ssf"
    head = "linear"
    load_path = ""
    trust_checkpoint = False

    # ---------------------------------------------------------------- optimisation, per phase
    # Defaults: the method's recipe on this dataset (emmcil/methods/recipes.py, each value with its source).
    optimizer = recipe(method, dataset, "optimizer")
    lr = recipe(method, dataset, "lr")
    weight_decay = recipe(method, dataset, "weight_decay")
    weight_decay_1d = recipe(method, dataset, "weight_decay_1d")
    betas = recipe(method, dataset, "betas")
    eps = recipe(method, dataset, "eps")
    momentum = recipe(method, dataset, "momentum")
    lr_schedule = recipe(method, dataset, "lr_schedule")
    warmup = recipe(method, dataset, "warmup")
    schedule_interval = recipe(method, dataset, "schedule_interval")
    max_epoch = recipe(method, dataset, "max_epoch")
    max_steps = -1
    batch_size = recipe(method, dataset, "batch_size")
    per_gpu_batchsize = min(batch_size, dataset_default(dataset, "per_gpu_batchsize"))
    gradient_clip_val = None
    limit_train_batches = 1.0
    length_group_window = 0

    # ---------------------------------------------------------------- memory (methods with exemplars)
    memory_per_class = 5
    memory_unit = "tokens"
    memory_budget_mode = "per_class"
    memory_total = 0
    memory_fill = "skip"
    memory_browser = True

    # ---------------------------------------------------------------- hardware
    accelerator = "auto"
    devices = 1
    num_nodes = 1
    strategy = "auto"
    precision = "32-true"
    deterministic = None
    num_workers = dataset_default(dataset, "num_workers")
    decode_on = "cpu"
    jpeg_draft = decode_on == "cpu"
    num_threads = 0
    compile = False

    # ---------------------------------------------------------------- run directory
    log_dir = "runs"
    exp_tag = ""
    exp_name = ""
    restart = False
    keep_checkpoints = 0
    stop_after_phase = -1
    progress_bar = True
    log_every_n_steps = 10

    # ---------------------------------------------------------------- logging: CSV and TensorBoard always (logs/)
    wandb = False
    wandb_project = "emmcil"
    wandb_entity = ""
    wandb_mode = "online"


class FieldDocs:
    """The config scope ``config()`` with each key's doc from its settings field (what ``print_config`` shows)."""

    def __init__(self, scope):
        self.scope = scope

    def __call__(self, fixed=None, preset=None, fallback=None):
        summary = self.scope(fixed, preset, fallback)
        fields = general_fields()
        summary.docs = {k: fields[k].metadata["doc"] for k in summary if k in fields}
        return summary


ex.configurations[0] = FieldDocs(ex.configurations[0])


class MethodKeys:
    """The chosen method's own keys (``Method.config`` of its file) as one more config scope.

    Only the keys of the config's ``method`` join the config, each with the comment it has in its method file (so
    ``print_config`` shows the general keys and these). A key that other methods declare but the chosen one does not
    is an error naming the methods that read it: ``with demo replay tau_image=0.3`` would otherwise be accepted
    and change nothing. A key that no method and no scope declares stays sacred's ``ConfigAddedError`` (a typo);
    an unknown method a config error naming the registered ones. The values are checked by :func:`check_config`.
    """

    def __call__(self, fixed=None, preset=None, fallback=None):
        fixed, preset = fixed or {}, preset or {}
        method = preset.get("method", fixed.get("method"))
        try:
            entry = method_entry(method)
        except KeyError as err:  # naming the registered methods
            raise config_error(err.args[0]) from None
        own = entry.config
        foreign = sorted(k for k in fixed if k not in own and methods_reading(k))
        if foreign:
            lines = "\n".join(f"  {k}: a key of {', '.join(methods_reading(k))}" for k in foreign)
            raise config_error(f"method={method!r} does not read {', '.join(foreign)}:\n{lines}\n"
                               f"Choose that method (e.g. `with {methods_reading(foreign[0])[0]}`), or drop the key; "
                               f"`python run.py print_config with {method}` lists the keys {method!r} reads.")
        summary = ConfigDict(dict(own))(fixed, preset, fallback)
        # sacred's ConfigDict reports no "added" keys, which would silence ConfigAddedError for every unknown key;
        # this scope reports the keys it does not define, as config scopes do
        summary.added = {key for key, _ in iterate_flattened(fixed) if key.split(".")[0] not in own}
        own_docs = docs(entry.settings)
        summary.docs = {k: f"{method}: {own_docs[k]}" for k in own}
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
    # the defaults are what the name compares against, not a run: they need not fit cfg's model (DualPrompt's
    # default layers on the demo's 2 layers), so they are not checked
    unchecked = _REFERENCE.set(True)
    try:
        ref = resolve_config(named, **fixed)
        if ref["model_size"] != cfg["model_size"]:  # the size differs from the default, the keys it derives do not
            ref = {**resolve_config(named, **fixed, model_size=cfg["model_size"]), "model_size": ref["model_size"]}
    finally:
        _REFERENCE.reset(unchecked)
    return ref


# True while reference_config resolves the defaults (check_config leaves them alone)
_REFERENCE: contextvars.ContextVar[bool] = contextvars.ContextVar("emmcil_reference_config", default=False)


# ---------------------------------------------------------------- checks at config time
@functools.cache
def default_types() -> dict[str, str]:
    """Each key's annotation in its settings field (general keys and every method's): "int", "str", "float | None"..."""
    out = {name: f.type for name, f in general_fields().items()}
    for entry in catalogue().values():
        out.update((f.name, f.type) for f in dataclasses.fields(entry.settings))
    return out


def string_keys() -> frozenset[str]:
    """The keys that hold text (annotated ``str``): ``exp_name``, ``exp_tag``, ``data_root``, ``precision``, ..."""
    return frozenset(k for k, t in default_types().items() if t == "str")


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


def settings_of(cfg) -> Settings:
    """The typed settings of a resolved config (:meth:`emmcil.settings.Settings.of_run`, the chosen method's
    settings read statically, so that nothing heavy is imported). A key no scope declares is left to sacred's
    ConfigAddedError, raised after the hooks, naming it."""
    return Settings.of_run(cfg, lambda name: method_entry(name).settings)


def config_problems(cfg) -> list[str]:
    """Every problem of a resolved config that would otherwise show only when the run starts or after it trained
    (a ZeroDivisionError for ``batch_size=0``, a run of NaN weights for ``precision=16-true``, a run name made of
    an int): one line each, naming the key (:meth:`emmcil.settings.Settings.problems`)."""
    return settings_of(cfg).problems()


@ex.config_hook
def check_config(config, command_name, logger):
    """A config error listing :func:`config_problems`, before anything runs (``print_config`` and the scripts' dry
    runs included); not for :func:`reference_config`'s defaults."""
    problems = [] if _REFERENCE.get() else config_problems(config)
    if problems:
        # one problem: one line; several: a line each
        raise config_error("bad config: " + problems[0] if len(problems) == 1 else
                           "bad config:\n  " + "\n  ".join(problems))
    return {}


@ex.config_hook
def name_the_run(config, command_name, logger):
    """exp_name="" -> the run's name (:func:`emmcil.engine.rundir.run_name`): dataset, method, L, memory,
    missing modalities, every other key that changes results and differs from :func:`reference_config`, the seed
    and exp_tag. A set exp_name is kept."""
    if config["exp_name"]:
        return {}
    return {"exp_name": run_name(settings_of(config), settings_of(reference_config(config)))}


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
for _name, _entry in catalogue().items():
    ex.add_named_config(_name, {"method": _name, **_entry.named_config})


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
    "method": sorted(catalogue()),
    "model_size": ["vilt_b32", "tiny"],
    "ablation": ["emm_no_aug", "emm_minmax"],
    "missing": ["missing_text_70", "missing_image_70", "missing_both_70"],
    "cmml": ["cmml_food101"],
}
