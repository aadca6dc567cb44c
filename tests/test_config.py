"""The sacred config: every named-config combination resolves (no training), composition rules, errors."""
import itertools

import pytest
from sacred.initialize import create_run
from sacred.utils import ConfigAddedError, NamedConfigNotFoundError

from config import DATASETS, NAMED_CONFIGS, default_exp_name
from emmcil.methods import METHODS, Method, get_method, method_config_defaults, register
from emmcil.model import TINY, VILT_B32
from run_helpers import resolve


COMBOS = list(itertools.product(NAMED_CONFIGS["dataset"], NAMED_CONFIGS["protocol"], NAMED_CONFIGS["method"],
                                NAMED_CONFIGS["model_size"]))


def test_every_named_config_combination_resolves():
    assert len(COMBOS) >= 54
    for dataset, protocol, method, size in COMBOS:
        cfg = resolve(dataset, protocol, method, size)
        assert cfg["dataset"] == dataset and cfg["method"] == method and cfg["model_size"] == size
        assert cfg["num_phases"] == int(protocol.split("_")[1])
        expected = VILT_B32 if size == "vilt_b32" else TINY
        assert {k: cfg[k] for k in expected} == expected
        assert cfg["num_classes"] == DATASETS[dataset]["num_classes"]
        assert cfg["exp_name"].startswith(f"{dataset}_{method}_{cfg['num_phases']}phases")
        assert cfg["exp_name"].endswith("_seed0")
        assert "__doc__" not in cfg


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
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        resolve(dataset="cifar")
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        resolve(method="nope")


def test_default_exp_name():
    assert default_exp_name("food101", "replay", 10, 1, 5, "per_class", 0) == "food101_replay_10phases_mem5_seed1"
    assert default_exp_name("food101", "joint", 10, 1, 5, "per_class", 0) == "food101_joint_10phases_seed1"


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
    class A(Method):
        name, config = "a_test", {"tau": 0.5}

    class B(Method):
        name, config = "b_test", {"tau": 0.7}

    monkeypatch.setitem(METHODS, "a_test", A)
    assert method_config_defaults()["tau"] == 0.5
    monkeypatch.setitem(METHODS, "b_test", B)
    with pytest.raises(ValueError, match="tau"):
        method_config_defaults()


def test_method_keys_scope_keeps_unknown_key_errors():
    from sacred import Experiment

    from config import _MethodKeys

    toy = Experiment("toy", save_git_info=False)

    @toy.config
    def cfg():
        a = 1  # noqa: F841

    toy.configurations.append(_MethodKeys({"tau_image": 0.5}))

    @toy.main
    def main(_config):
        pass

    run_ = create_run(toy, "main", config_updates={"tau_image": 0.3})
    assert run_.config["tau_image"] == 0.3 and run_.config["a"] == 1
    with pytest.raises(ConfigAddedError, match="tau_imgae"):
        create_run(toy, "main", config_updates={"tau_imgae": 0.3})


def test_ablation_configs_resolve_with_their_own_run_directory():
    for ablation in NAMED_CONFIGS["ablation"]:
        for dataset in NAMED_CONFIGS["dataset"]:
            cfg = resolve(dataset, "phases_10", ablation)
            assert cfg["exp_name"].endswith(f"_seed0_{cfg['exp_tag']}") and cfg["exp_tag"]
    cfg = resolve("demo", "emm_no_aug")
    assert cfg["method"] == "emm" and cfg["aug_text_swap"] == 0 and cfg["aug_patch_merge"] == 0
    assert resolve("demo", "emm")["aug_text_swap"] == 0.5
