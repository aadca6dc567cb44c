"""The sacred config: every named-config combination resolves (no training), composition rules, errors, method keys
and run names."""
import itertools
import re
from dataclasses import dataclass

import pytest
from sacred.utils import ConfigAddedError, ConfigError, NamedConfigNotFoundError

from emmcil.config import NAMED_CONFIGS, ex
from emmcil.data.catalogue import DATASETS, OTHER_DATASET
from emmcil.data import write_arrow
from emmcil.engine.rundir import NON_RESULT_KEYS, run_name
from emmcil.methods import METHODS, Method, get_method, method_config_defaults, method_key_docs, register
from emmcil.model import TINY, VILT_B32
from emmcil.settings import MethodSettings, setting
from run_helpers import resolve, settings


COMBOS = list(itertools.product(NAMED_CONFIGS["dataset"], NAMED_CONFIGS["protocol"], NAMED_CONFIGS["method"],
                                NAMED_CONFIGS["model_size"]))


def test_every_named_config_combination_resolves():
    assert len(COMBOS) >= 54
    for dataset, protocol, method, size in COMBOS:
        if int(protocol.split("_")[1]) > DATASETS[dataset]["num_classes"]:  # the demo's 10 classes in 20 phases
            with pytest.raises(ConfigError, match=r"num_phases=20: at most num_classes=10"):
                resolve(dataset, protocol, method, size)
            continue
        if method == "dualprompt" and size == "tiny":  # its default layers 2-4 on the tiny model's 2
            with pytest.raises(ConfigError, match=r"layers \[2, 3, 4\] do not exist in a 2-layer model"):
                resolve(dataset, protocol, method, size)
            continue
        cfg = resolve(dataset, protocol, method, size)
        assert cfg["dataset"] == dataset and cfg["method"] == method and cfg["model_size"] == size
        assert cfg["num_phases"] == int(protocol.split("_")[1])
        expected = VILT_B32 if size == "vilt_b32" else TINY
        assert {k: cfg[k] for k in expected} == expected
        assert cfg["num_classes"] == DATASETS[dataset]["num_classes"]
        assert cfg["exp_name"].startswith(f"{dataset}_{method}_{cfg['num_phases']}phases")
        assert cfg["exp_name"].endswith("_seed0")
        assert "__doc__" not in cfg
        own = set(get_method(method).config)
        assert own <= set(cfg) and not (set(method_config_defaults()) - own) & set(cfg)  # only its own keys


def test_defaults_follow_design():
    cfg = resolve()
    assert (cfg["lr"], cfg["weight_decay"], cfg["warmup"], cfg["betas"], cfg["eps"]) == (1e-2, 2e-2, 0.1,
                                                                                          [0.9, 0.98], 1e-8)
    assert cfg["seed"] == 0 and cfg["class_order_seed"] == 1993 and cfg["memory_per_class"] == 5
    assert cfg["precision"] == "32-true" and cfg["log_dir"] == "runs" and cfg["restart"] is False
    assert cfg["tuning"] == "ssf" and cfg["load_path"] == ""


def test_demo_uses_the_tiny_model_that_matches_its_images():
    cfg = resolve("demo")
    assert cfg["model_size"] == "tiny" and cfg["image_size"] == 96 and cfg["patch_size"] == 16
    assert cfg["max_text_len"] == 40 and cfg["exp_name"] == "demo_replay_5phases_mem5_seed0"


def test_composition_later_named_config_and_updates_win():
    assert resolve("tiny", "vilt_b32")["hidden_size"] == 768
    assert resolve("vilt_b32", "tiny")["hidden_size"] == TINY["hidden_size"]
    assert resolve("demo", "vilt_b32")["image_size"] == 384          # model size after the dataset
    assert resolve("demo")["tuning"] == "full"
    assert resolve("demo", tuning="ssf")["tuning"] == "ssf"          # key=value beats named configs
    assert resolve("demo", hidden_size=32)["hidden_size"] == 32
    cfg = resolve("demo", "finetune", "phases_10", seed=3)
    assert cfg["exp_name"] == "demo_finetune_10phases_seed3"        # no memory in the name of finetune
    assert resolve("demo", exp_name="mine")["exp_name"] == "mine"
    assert resolve("demo", memory_budget_mode="total", memory_total=20)["exp_name"] == \
        "demo_replay_5phases_memtotal20_seed0"


def test_sacred_errors_stay_visible():
    with pytest.raises(ConfigAddedError, match="no_such_key"):
        resolve("demo", no_such_key=1)
    with pytest.raises(NamedConfigNotFoundError, match="phases_7"):
        resolve("phases_7")
    with pytest.raises(ConfigError, match="dataset='cifar' is none of the named datasets .* needs data_root="):
        resolve(dataset="cifar")
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; registered: \[.cim.*.replay.\]"):
        resolve(method="nope")
    with pytest.raises(ConfigError, match="unknown model_size 'huge'"):
        resolve(model_size="huge")


def test_method_registry():
    assert {"finetune", "joint", "replay"} <= set(METHODS)
    assert set(NAMED_CONFIGS["method"]) == set(METHODS)
    assert get_method("replay").uses_memory and not get_method("finetune").uses_memory
    with pytest.raises(KeyError, match="registered"):
        get_method("nope")
    with pytest.raises(ValueError, match="taken"):
        @register
        class Clash(Method):
            name = "replay"


def test_method_config_keys_must_agree(monkeypatch):
    @dataclass(frozen=True)
    class ASettings(MethodSettings):
        tau: float = setting(0.5, "a threshold")

    @dataclass(frozen=True)
    class BSettings(MethodSettings):
        tau: float = setting(0.7, "a threshold")

    class A(Method):
        name, settings = "a_test", ASettings

    class B(Method):
        name, settings = "b_test", BSettings

    monkeypatch.setitem(METHODS, "a_test", A)
    assert method_config_defaults()["tau"] == 0.5
    monkeypatch.setitem(METHODS, "b_test", B)
    with pytest.raises(ValueError, match="tau"):
        method_config_defaults()


def test_a_key_of_another_method_is_an_error_naming_it():
    """`with demo replay tau_image=0.3` changed nothing and later blocked resuming; now it names emm."""
    with pytest.raises(ConfigError, match=r"method='replay' does not read tau_image:\n  tau_image: a key of emm"):
        resolve("demo", "replay", tau_image=0.3)
    with pytest.raises(ConfigError, match="replay_ratio: a key of cim, emm, mrdc, replay"):
        resolve("demo", "finetune", replay_ratio=0.5)
    with pytest.raises(ConfigError, match="does not read aug_patch_merge, aug_text_swap"):
        resolve("demo", "emm_no_aug", "replay")  # the ablation's keys, then another method
    with pytest.raises(ConfigAddedError, match="tau_imgae"):
        resolve("demo", "emm", tau_imgae=0.3)  # a typo stays sacred's error
    assert resolve("demo", "emm", tau_image=0.3)["tau_image"] == 0.3
    # general keys are accepted by every method (scripts pass them to all), memory keys included
    assert resolve("demo", "finetune", memory_per_class=3, lr=0.1)["memory_per_class"] == 3


def test_memory_total_without_the_total_mode_is_an_error():
    """`with demo replay memory_total=20` ran the per-class budget and landed in the per-class run's directory."""
    with pytest.raises(ConfigError, match=r"memory_total=20 is read only with memory_budget_mode=total \(now "
                                          r"'per_class'"):
        resolve("demo", "replay", memory_total=20)
    assert resolve("demo", "replay", memory_total=20, memory_budget_mode="total")["memory_total"] == 20
    # and what the buffer would refuse at the run's start, already at config time (print_config, the dry runs)
    with pytest.raises(ConfigError, match=r"memory_budget_mode='bogus': expected one of \('per_class', 'total'\)"):
        resolve("demo", "replay", memory_budget_mode="bogus")
    with pytest.raises(ConfigError, match=r"memory_budget_mode='total' needs memory_total > 0 .*not 0"):
        resolve("demo", "replay", memory_budget_mode="total")
    with pytest.raises(ConfigError, match=r"memory_budget_mode='total' needs memory_total > 0 .*not -3"):
        resolve("demo", "replay", memory_budget_mode="total", memory_total=-3)
    with pytest.raises(ConfigError, match=r"memory_per_class=-1 must be >= 0"):
        resolve("demo", "replay", memory_per_class=-1)
    with pytest.raises(ConfigError, match=r"memory_unit='kb': expected one of \('tokens', 'byte_share', 'bytes'\)"):
        resolve("demo", "replay", memory_unit="kb")


def test_print_config_shows_the_general_keys_and_the_chosen_methods_with_comments():
    run_ = ex._create_run("print_config", config_updates={}, named_configs=["demo", "emm"])
    docs, cfg = run_.config_modifications.docs, run_.config
    assert "tau_image" in cfg and "l2p_pool_size" not in cfg and "rebq_alpha" not in cfg
    assert docs["tau_image"].startswith("emm: ") and docs["replay_ratio"].startswith("emm: 0: every exemplar")
    general = [k for k in cfg if k not in get_method("emm").config]
    assert [k for k in general if not docs.get(k)] == []  # every general key has its comment
    # every method key of every method file has one too (print_config shows it); none shadows a general key
    assert [k for k in method_config_defaults() if not method_key_docs().get(k)] == []
    assert not set(method_config_defaults()) & set(resolve("demo", "finetune"))


def test_run_names_follow_every_key_that_changes_results():
    base = resolve("demo", "emm")["exp_name"]
    assert base == "demo_emm_5phases_mem5_seed0"
    variant = resolve("demo", "emm", tau_image=0.3)["exp_name"]
    assert variant == "demo_emm_5phases_mem5_tau_image=0.3_seed0"  # its own directory, not the default's
    assert resolve("demo", "emm", tau_image=0.3)["exp_name"] == variant  # the same command: the same run
    assert resolve("demo", "emm", lr=0.05, tau_text=0.25)["exp_name"] == \
        "demo_emm_5phases_mem5_tau_text=0.25_lr=0.05_seed0"  # the method's keys first
    # keys that do not change results leave the name alone
    same = dict(num_workers=3, progress_bar=False, devices=1, keep_checkpoints=2, log_every_n_steps=1, mask_figure=0,
                compile=True)
    assert set(same) <= NON_RESULT_KEYS and resolve("demo", "emm", **same)["exp_name"] == base
    # decoding at reduced scale (by design) or on the device (a float resize) gives other pixels: result keys;
    # jpeg_draft follows decode_on
    assert resolve("demo", "emm", jpeg_draft=False)["exp_name"] == "demo_emm_5phases_mem5_jpeg_draft=False_seed0"
    device = resolve("demo", "emm", decode_on="device")
    assert device["jpeg_draft"] is False
    assert device["exp_name"] == "demo_emm_5phases_mem5_decode_on=device_jpeg_draft=False_seed0"
    # a model size shows as itself, not as the backbone keys it derives
    assert resolve("food101", "replay", "tiny")["exp_name"] == "food101_replay_5phases_mem5_model_size=tiny_seed0"
    # a method's recipe (its named config) is its default; a value beside it is a variant
    assert resolve("demo", "rebq")["exp_name"] == resolve("demo", "rebq", lr=1e-4)["exp_name"] == \
        "demo_rebq_5phases_seed0"
    assert resolve("demo", "rebq", lr=0.01)["exp_name"] == "demo_rebq_5phases_lr=0.01_seed0"
    # finetune keeps no memory: the memory keys change nothing for it
    assert resolve("demo", "finetune", memory_per_class=9)["exp_name"] == "demo_finetune_5phases_seed0"
    # values that do not read well go into a hash, so two different ones never share a name
    a = resolve("demo", "emm", mask_layers=[0, 1])["exp_name"]
    b = resolve("demo", "emm", mask_layers=[1])["exp_name"]
    assert re.fullmatch(r"demo_emm_5phases_mem5_h[0-9a-f]{8}_seed0", a) and a != b
    # a checkpoint counts by its file name (the same file on another machine or in another folder: the same run)
    a = resolve("demo", "emm", load_path="/ckpt/a/vilt_200k_mlm_itm.ckpt")["exp_name"]
    assert a == resolve("demo", "emm", load_path="/data/b/vilt_200k_mlm_itm.ckpt")["exp_name"]
    assert a == "demo_emm_5phases_mem5_load_path=vilt_200k_mlm_itm.ckpt_seed0"
    assert resolve("demo", exp_name="mine", tau_image=0.3, method="emm")["exp_name"] == "mine"  # a set name stays
    # the numbers of the fixed part too: 6 significant digits would give 5.0000001 the name of 5
    assert resolve("demo", "emm", memory_per_class=5.0)["exp_name"] == base
    assert resolve("demo", "emm", memory_per_class=2.5)["exp_name"] == "demo_emm_5phases_mem2.5_seed0"
    near = dict(memory_per_class=5.0000001, missing_type="both", missing_ratio=0.7000001, missing_both_ratio=0.25)
    assert resolve("demo", "emm", **near)["exp_name"] == \
        "demo_emm_5phases_mem5.0000001_missboth0.7000001b0.25_seed0"
    assert resolve("demo", "replay", memory_budget_mode="total", memory_total=1234567)["exp_name"] == \
        "demo_replay_5phases_memtotal1234567_seed0"


def test_run_name_has_a_readable_part_and_a_hash_of_the_rest():
    cfg = resolve("demo", "emm")
    many = {**cfg, **{k: 0.125 for k in ("tau_image", "tau_text", "aug_text_swap", "aug_patch_merge")}, "lr": 0.5,
            "max_epoch": 3, "batch_size": 64}
    name = run_name(settings(many), settings(cfg))
    readable = name[len("demo_emm_5phases_mem5_"):name.index("_h")]
    assert len(readable) <= 64 and readable.startswith("aug_patch_merge=0.125_aug_text_swap=0.125")
    assert re.search(r"_h[0-9a-f]{8}_seed0$", name)
    assert run_name(settings(many, batch_size=65), settings(cfg)) != name  # a change in a hashed key changes the hash
    assert run_name(settings(many, precision="16-mixed"), settings(cfg)) != name


def test_a_dataset_by_name_takes_its_classes_from_its_files(tmp_path):
    rows = lambda labels: [{"image": b"", "text": ["x"], "label": k, "image_id": str(i), "split": "train"}  # noqa
                           for i, k in enumerate(labels)]
    write_arrow(rows([0, 1, 6]), tmp_path / "mine_train.arrow")
    write_arrow(rows([2, 3]), tmp_path / "mine_test.arrow")
    cfg = resolve(dataset="mine", data_root=str(tmp_path))
    assert cfg["num_classes"] == 7  # the largest label + 1, without a classes file
    assert {k: cfg[k] for k in OTHER_DATASET} == OTHER_DATASET and cfg["exp_name"] == "mine_replay_5phases_mem5_seed0"
    (tmp_path / "mine_classes.json").write_text('["a", "b", "c", "d", "e", "f", "g", "h"]')
    assert resolve(dataset="mine", data_root=str(tmp_path), model_size="tiny")["num_classes"] == 8
    with pytest.raises(ConfigError, match=r"dataset 'other' not found in .*: no other_classes.json and no "
                                          r"other_train.arrow / other_test.arrow \(write them with"):
        resolve(dataset="other", data_root=str(tmp_path))
    (tmp_path / "mine_classes.json").write_text('{"a": 0}')
    with pytest.raises(ConfigError, match="mine_classes.json: expected a non-empty JSON list"):
        resolve(dataset="mine", data_root=str(tmp_path))


def test_ablation_configs_resolve_with_their_own_run_directory():
    for ablation in NAMED_CONFIGS["ablation"]:
        for dataset in NAMED_CONFIGS["dataset"]:
            cfg = resolve(dataset, "phases_10", ablation)
            assert cfg["exp_name"].endswith(f"_seed0_{cfg['exp_tag']}") and cfg["exp_tag"]
            assert cfg["exp_name"] != resolve(dataset, "phases_10", cfg["method"])["exp_name"]
    cfg = resolve("demo", "emm_no_aug")
    assert cfg["method"] == "emm" and cfg["aug_text_swap"] == 0 and cfg["aug_patch_merge"] == 0
    assert resolve("demo", "emm")["aug_text_swap"] == 0.5


@pytest.mark.parametrize("updates,message", [
    (dict(batch_size=0), r"batch_size=0: at least 1\n  per_gpu_batchsize=0: at least 1"),  # was a ZeroDivisionError
    (dict(per_gpu_batchsize=0), r"per_gpu_batchsize=0: at least 1"),
    (dict(max_epoch=0), r"max_epoch=0: at least 1"),  # was a run recorded as finished that trained nothing
    (dict(num_phases=11), r"num_phases=11: at most num_classes=10"),
    (dict(num_phases=0), r"num_phases=0: at least 1"),
    (dict(max_steps=0), r"max_steps=0: -1 \(off\) or at least 1"),
    (dict(num_workers=-1), r"num_workers=-1: at least 0"),
    (dict(seed=-1), r"seed=-1: a seed in \[0, 2\*\*32\)"),
    (dict(lr=float("nan")), r"lr=nan: a number in \[0, inf\]"),
    (dict(betas=[0.9]), r"betas=\[0.9\]: two numbers in \[0, 1\)"),
    (dict(limit_train_batches=0), r"limit_train_batches=0: a fraction in \(0, 1\] or a number of batches >= 1"),
    (dict(devices=0), r"devices=0: a count >= 1, -1 or \"auto\""),
    (dict(max_epoch=2.0), r"max_epoch=2.0: expected an int, not float 2.0"),
    (dict(restart=1), r"restart=1: expected a bool \(True or False\), not int 1"),
    (dict(exp_name=202401), r"exp_name=202401: expected a str, not int 202401 \(run.py keeps a text key as typed"),
    (dict(exp_tag=202401), r"exp_tag=202401: expected a str"),
    (dict(optimizer="lamb"), r"optimizer='lamb': one of \('adamw', 'adam', 'sgd'\)"),
    (dict(precision=16), r"precision=16: expected a str, not int 16 \(write precision=16-mixed"),
    (dict(precision="bf16"), r"precision='bf16': write precision=bf16-mixed"),
    (dict(precision="16-mixed", accelerator="cpu"), r"float16 autocast runs on GPUs only .* use precision=bf16-mixed"),
    (dict(precision="16-true"), r"precision='16-true' with optimizer='adamw': the weights and adamw's state are "
                                r"float16, where its eps=1e-08 is 0 .* Use precision=16-mixed .* or bf16-mixed"),
    (dict(decode_on="gpu"), r"decode_on='gpu': one of \('cpu', 'device'\)"),
    (dict(decode_on="device", jpeg_draft=True), r"jpeg_draft=True with decode_on='device': the device decodes every "
                                                r"JPEG at full scale"),
    (dict(image_size=100), r"image_size=100 is not a multiple of patch_size=16"),
    (dict(tau_image=1.5), r"tau_image=1.5 must lie in \[0, 1\]"),  # emm's own check, now at config time
    (dict(mask_layers=[5]), r"mask_layers=\[5\]: out of range for the model's 2 layers"),
])
def test_bad_values_are_config_errors_naming_the_key(updates, message):
    """Values that used to fail only when the run started (or after it trained, or never) are refused when the
    config is made: print_config and the scripts' dry runs see them too."""
    with pytest.raises(ConfigError, match=message):
        resolve("demo", "emm", **updates)


def test_16_true_is_refused_for_adam_type_optimisers_only():
    with pytest.raises(ConfigError, match="precision='16-true' with optimizer='adam'"):
        resolve("demo", "l2p", precision="16-true")  # l2p's recipe: adam
    assert resolve("demo", "ease", precision="16-true")["precision"] == "16-true"  # sgd: no eps to underflow


def test_train_splits_must_be_a_list():
    with pytest.raises(ConfigError, match=r"train_splits='train': expected a non-empty list of split names"):
        resolve("demo", train_splits="train")  # was read as the splits t, r, a, i, n


def test_text_keys_stay_text_on_the_command_line():
    """sacred reads exp_name=2024_01 as the int 202401 (Python's digit separators) and exp_tag=1e3 as 1000.0:
    run.py quotes the values of text keys before sacred parses them; other keys and quoted values are left alone."""
    from emmcil.config import keep_strings, string_keys

    argv = ["run.py", "with", "demo", "exp_name=2024_01", "exp_tag=1e3", "data_root=None", "seed=3", "precision=16",
            "exp_tag='x'", "--debug"]
    assert keep_strings(argv) == ["run.py", "with", "demo", "exp_name='2024_01'", "exp_tag='1e3'", "data_root='None'",
                                  "seed=3", "precision='16'", "exp_tag='x'", "--debug"]
    cfg = resolve("demo", "emm")
    assert {k for k, v in cfg.items() if isinstance(v, str)} <= string_keys()
    assert {"exp_name", "exp_tag", "log_dir", "data_root", "tau_image"} & string_keys() == {"exp_name", "exp_tag",
                                                                                         "log_dir", "data_root"}
    run = ex.run_commandline(keep_strings(["run.py", "print_config", "with", "demo", "exp_tag=2024_01",
                                           "--loglevel=ERROR"]))
    assert run.config["exp_tag"] == "2024_01" and run.config["exp_name"].endswith("_seed0_2024_01")
