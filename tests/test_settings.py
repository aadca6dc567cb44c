"""The typed settings: the static reading of the method files equals the imported classes, the config path imports
no torch, a bad value is refused the same way everywhere with no run directory, the docs' key tables are current,
and nothing below the experiment reads the config by string key."""
import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emmcil.methods import METHODS
from emmcil.methods.catalogue import catalogue
from emmcil.settings import CONCERNS, DERIVED, Settings, SettingsError, general_fields
from run_helpers import resolve

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pytorch_lightning", "lightning", "transformers", "torchvision")


def _fields(cls) -> list[tuple]:
    return [(f.name, f.type, f.default_factory() if f.default is dataclasses.MISSING else f.default,
             dict(f.metadata)) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_static_reading_of_a_method_equals_the_imported_class(name):
    static, imported = catalogue()[name], METHODS[name]
    assert static.settings.__name__ == imported.settings.__name__
    assert _fields(static.settings) == _fields(imported.settings)
    assert (static.uses_memory, static.named_config, static.config) == (imported.uses_memory,
                                                                       imported.named_config, imported.config)
    cfg = resolve("demo", name, **({"num_layers": 5} if name == "dualprompt" else {}))  # its default layers 0-4
    a = Settings.from_config(cfg, static.settings)
    b = Settings.from_config(cfg, imported.settings)
    assert a.problems() == b.problems() == []
    assert a.method.layout_dependence("torch") == b.method.layout_dependence("torch")
    for f in dataclasses.fields(imported.settings):  # one-line docs for every key
        assert f.metadata["doc"] and "\n" not in f.metadata["doc"], f.name


def test_every_general_key_is_one_field_with_a_doc_and_the_config_scope_agrees():
    fields = general_fields()
    cfg = resolve("demo", "finetune")
    assert list(cfg) == list(fields) or set(cfg) == set(fields)
    for key, f in fields.items():
        assert f.metadata["doc"] and "\n" not in f.metadata["doc"], key
        if key == "exp_name":  # named by a config hook
            continue
        if f.default != DERIVED:  # config()'s literal defaults are the fields' (print_config shows them)
            assert resolve("mm_imagenet_r", "replay", data_root="")[key] == (f.default_factory() if f.default is
                                                                             dataclasses.MISSING else f.default), key
        else:
            assert f.metadata["derived"], key


def test_from_config_names_unknown_and_missing_keys():
    cfg = resolve("demo", "emm")
    s = Settings.from_config(cfg, METHODS["emm"].settings)
    assert s.method.tau_image == 0.74 and s.optimisation.lr == cfg["lr"] and s.model.num_layers == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.method.tau_image = 0.5
    with pytest.raises(SettingsError, match="unknown key 'tau_imgae'.*missing key 'lr'"):
        Settings.from_config({**{k: v for k, v in cfg.items() if k != "lr"}, "tau_imgae": 1},
                             METHODS["emm"].settings)
    assert set(CONCERNS) == {"experiment", "data", "missing", "model", "optimisation", "memory", "hardware", "run",
                             "logging"}


def _fresh(code: str, tmp_path) -> subprocess.CompletedProcess:
    probe = ("import atexit, sys\natexit.register(lambda: print('HEAVY', sorted({m.split('.')[0] for m in "
             f"sys.modules}} & {set(HEAVY)!r}), file=sys.stderr))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", probe + code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_print_config_and_config_errors_import_no_torch(tmp_path):
    """issue 25: print_config, --help and a refused config without torch, Lightning, transformers or torchvision."""
    run = f"import runpy; sys.argv = {{}}; runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')"
    ok = _fresh(run.format(["run.py", "print_config", "with", "demo", "emm", "--loglevel=ERROR"]), tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "tau_image = 0.74" in ok.stdout and "HEAVY []" in ok.stderr, ok.stderr[-2000:]
    helped = _fresh(run.format(["run.py", "--help"]), tmp_path)
    assert helped.returncode == 0 and "print_config" in helped.stdout and "HEAVY []" in helped.stderr
    bad = _fresh(run.format(["run.py", "print_config", "with", "demo", "emm", "tau_image=1.5"]), tmp_path)
    assert bad.returncode != 0 and "tau_image=1.5 must lie in [0, 1]" in bad.stderr
    assert "HEAVY []" in bad.stderr and "Traceback" not in bad.stderr


def test_a_bad_value_is_refused_alike_everywhere_and_makes_no_run_directory(tmp_path):
    message = "tau_image=1.5 must lie in [0, 1]"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = []
    for command in ("print_config with", "with"):
        r = subprocess.run([sys.executable, str(ROOT / "run.py"), *command.split(), "demo", "emm", "tau_image=1.5",
                            f"log_dir={tmp_path / 'runs'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
        outs.append([line for line in r.stderr.splitlines() if message in line])
        assert r.stderr.strip() == f"sacred.utils.ConfigError: bad config: {message}", r.stderr[-2000:]  # one line
    commands = tmp_path / "commands.txt"
    commands.write_text("python run.py with demo emm tau_image=1.5 exp_name=x\n")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "resolve_configs.py"), str(commands)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and message in r.stdout + r.stderr
    outs.append([line for line in (r.stdout + r.stderr).splitlines() if message in line])
    assert outs[0] == outs[1] == outs[2] == [f"sacred.utils.ConfigError: bad config: {message}"]
    assert not (tmp_path / "runs").exists()  # no run directory for a refused config


def test_the_docs_key_tables_are_current():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "settings_table.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = (ROOT / "docs" / "experiments.md").read_text()
    for key in [*general_fields(), *(k for e in catalogue().values() for k in e.config)]:
        assert f"| `{key}` |" in text, key


def test_the_run_directorys_config_stays_the_flat_dict(tmp_path):
    """config.json of a run is the flat resolved dict: Settings.from_config reads one back (runs made before resume)."""
    cfg = resolve("demo", "emm")
    saved = json.loads(json.dumps({**cfg, "provenance": {}, "data_fingerprint": "x"}))
    s = Settings.from_config(saved, METHODS["emm"].settings, ignore=("provenance", "data_fingerprint"))
    assert s.problems() == []


@pytest.mark.parametrize("name", ["finetune", "emm", "l2p", "rebq"])
def test_the_settings_give_back_the_flat_config_key_for_key_in_its_order(name):
    """Settings.to_config() is what config.json, the run name and the loggers are made of: the resolved config
    itself, its keys in the same order (config.json stays byte-identical)."""
    cfg = resolve("demo", name, lr=0.5, memory_per_class=3)
    flat = Settings.from_config(cfg, METHODS[name].settings).to_config()
    assert flat == cfg and list(flat) == list(cfg)


def test_a_saved_config_of_an_older_version_reads_with_the_values_older_code_read(tmp_path):
    from emmcil.engine.rundir import READ_DEFAULTS, saved_settings

    cfg = resolve("demo", "l2p")
    old = {k: v for k, v in cfg.items() if k not in ("head", "decode_on", "l2p_prompt_position")}
    old["a_retired_key"] = 1
    s = saved_settings(old)
    assert (s.model.head, s.hardware.decode_on) == (READ_DEFAULTS["head"], READ_DEFAULTS["decode_on"])
    assert s.method.l2p_prompt_position == METHODS["l2p"].config["l2p_prompt_position"]  # the method's default
    del old["lr"]
    with pytest.raises(SettingsError, match="missing key 'lr'"):
        saved_settings(old)


# ---------------------------------------------------------------- string-key reads of the config below the experiment
def string_key_reads(path: Path) -> list[tuple[str, int]]:
    """``x["key"]`` / ``x.get("key")`` reads whose key is a config key, in one file: (``x`` as written, line)."""
    keys = set(general_fields()) | {k for e in catalogue().values() for k in e.config}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in keys:
            found.append((ast.unparse(node.value), node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys):
            found.append((ast.unparse(node.func.value), node.lineno))
    return found


# Below the experiment the config is read through the typed settings alone (a saved config.json too:
# emmcil.engine.rundir.saved_settings, or one concern of it for the torch-free report: emmcil.settings.saved_concern).
# What remains are records that share key names with the config and are no config: file -> {the record as the code
# names it: what it is}. A read of a config key through anything else fails the test.
RECORDS = {
    "emmcil/engine/driver.py": {"state": "a phase checkpoint's state", "chosen": "the machine's resolved choices"},
    "emmcil/engine/evaluate.py": {"missing": "evaluate_run's result: the missing setting evaluated"},
    "emmcil/engine/results.py": {"results": "results.json (build_results' output)"},
    "emmcil/engine/rundir.py": {"saved": "a checkpoint's identity", "expected": "the identity this run expects"},
    "emmcil/memory/buffer.py": {"state": "the memory buffer's checkpoint state"},
    "emmcil/methods/mrdc.py": {"item": "a data item"},
    "emmcil/methods/recipes.py": {"out": "a training recipe's row", "v": "a training recipe's row"},
    # the report and the memory browser read results.json (its results_config record: the run's result keys,
    # compared key by key against its method_defaults) and the tables they build from it (pandas rows and columns)
    "emmcil/report/build.py": {"groups": "", "groups[(groups['dataset'] == dataset) & "
                               "(groups['protocol'] == protocol)]": ""},
    "emmcil/report/collect.py": {"results": "", "kept": "", "named": "", "first": "", "g": "", "groups": "",
                                 "r": "", "runs": ""},
    "emmcil/report/memory.py": {"results": "", "self.results": ""},
    "emmcil/report/plots.py": {"g": "", "r": "", "next(iter(series.values()))": ""},
    "emmcil/report/tables.py": {"g": "", "groups": "", "r": "", "s": ""},
}
ABOVE = ("emmcil/config.py", "emmcil/train.py", "emmcil/settings/", "emmcil/methods/catalogue.py")


def test_no_string_key_read_of_the_config_below_the_experiment():
    reads = []
    for path in sorted((ROOT / "emmcil").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(ABOVE):
            reads += [f"{rel}:{line}: {what}" for what, line in string_key_reads(path)
                      if what not in RECORDS.get(rel, {})]
    assert not reads, f"string-key reads of the config (read the typed settings): {reads}"


def test_the_key_read_check_sees_a_read_of_the_config(tmp_path):
    code = tmp_path / "x.py"
    code.write_text('def f(cfg, results):\n    return cfg["tau_image"], cfg.get("lr"), results["exp_name"], '
                    'cfg["not_a_key"]\n')
    assert sorted(string_key_reads(code)) == [("cfg", 2), ("cfg", 2), ("results", 2)]


# ---------------------------------------------------------------- values refused when the config is resolved
REFUSED = [
    # a run directory's name: one folder inside log_dir (exp_name=. with restart=True deleted all of log_dir)
    (("finetune",), dict(exp_name="."), "exp_name='.': one folder name (no '/' or '\\', not '.' or '..'): the run "
                                        "directory is {log_dir}/{exp_name}"),
    (("finetune",), dict(exp_name=".."), "exp_name='..': one folder name"),
    (("finetune",), dict(exp_name="/abs"), "exp_name='/abs': one folder name"),
    (("finetune",), dict(exp_name="../escape"), "exp_name='../escape': one folder name"),
    (("finetune",), dict(exp_name="a\\b"), "exp_name='a\\\\b': one folder name"),
    (("finetune",), dict(exp_tag="a/b"), "exp_tag='a/b': one folder name (no '/' or '\\', not '.' or '..'): the run "
                                         "directory is {log_dir}/{exp_name}, exp_tag the end of its name"),
    # list keys: their elements' type, range, repeats
    (("emm",), dict(mask_layers=[0.5]), "mask_layers=[0.5]: expected a list of ints, not float 0.5"),
    (("emm",), dict(mask_layers=["a"]), "mask_layers=['a']: expected a list of ints, not str 'a'"),
    (("emm",), dict(mask_layers=[-1, -1]), "mask_layers=[-1, -1]: -1 listed twice"),
    (("emm",), dict(mask_layers=[-1, 1]), "mask_layers=[-1, 1]: names a layer twice in a 2-layer model (-1 is layer "
                                          "1)"),
    (("dualprompt",), dict(dualprompt_g_layers=["a"]), "dualprompt_g_layers=['a']: expected a list of ints, not str "
                                                       "'a'"),
    (("dualprompt",), dict(dualprompt_g_layers=[0.5]), "dualprompt_g_layers=[0.5]: expected a list of ints, not "
                                                       "float 0.5"),
    (("dualprompt",), dict(dualprompt_e_layers=[1, 1]), "dualprompt_e_layers=[1, 1]: 1 listed twice"),
    (("dualprompt",), dict(dualprompt_e_layers=[-1]), "dualprompt_e_layers=[-1]: every element at least 0, not -1"),
    (("finetune",), dict(betas=[0.9, "x"]), "betas=[0.9, 'x']: expected a list of numbers, not str 'x'"),
    # method keys' ranges
    (("l2p",), dict(l2p_length=0), "l2p_length=0: at least 1"),
    (("l2p",), dict(l2p_pull=-0.1), "l2p_pull=-0.1: a number in [0, inf]"),
    (("dualprompt",), dict(dualprompt_g_length=0), "dualprompt_g_length=0: at least 1"),
    (("dualprompt",), dict(dualprompt_e_length=0), "dualprompt_e_length=0: at least 1"),
    (("dualprompt",), dict(dualprompt_pool_size=-1), "dualprompt_pool_size=-1: at least 0"),
    (("dualprompt",), dict(dualprompt_pull=-1), "dualprompt_pull=-1: a number in [0, inf]"),
    (("ease",), dict(ease_bottleneck=0), "ease_bottleneck=0: at least 1"),
    (("ease",), dict(ease_adapter_dropout=1.0), "ease_adapter_dropout=1.0: a number in [0, 1)"),
    (("ease",), dict(ease_adapters_per_pass=-1), "ease_adapters_per_pass=-1: at least 0"),
    (("ease",), dict(ease_scale=0), "ease_scale=0: a number in (0, inf]"),
    (("rebq",), dict(rebq_layers=0), "rebq_layers=0: at least 1"),
    (("rebq",), dict(rebq_alpha=-1), "rebq_alpha=-1: a number in [0, inf]"),
    (("emm",), dict(mask_figure=-1), "mask_figure=-1: at least 0"),
    # general keys
    (("finetune",), dict(mlp_ratio=0.001), "backbone config: mlp_ratio=0.001: an MLP of int(hidden_size x "
                                           "mlp_ratio) = 0 units (hidden_size=64); at least 1"),
    (("finetune",), dict(vocab_size=1000), "vocab_size=1000: at least 30522, the word pieces of the bert-base-uncased "
                                           "tokenizer"),
    (("finetune",), dict(accelerator="tpu"), "accelerator='tpu': one of ('auto', 'cpu', 'gpu', 'cuda', 'mps')"),
    (("finetune",), dict(strategy="fsdp"), "strategy='fsdp': one of ('auto', 'ddp', "),
    (("finetune",), dict(deterministic="foo"), "deterministic='foo': one of (None, True, False, 'warn')"),
    (("finetune",), dict(init_classes=-1), "init_classes=-1: at least 0"),
    # rules across keys, now in Settings.problems
    (("replay",), dict(memory_total=100), "memory_total=100 is read only with memory_budget_mode=total (now "
                                          "'per_class', where memory_per_class is the budget)"),
    (("finetune",), dict(init_classes=4, increment=2, num_phases=3), "num_phases=3 disagrees with B4-Inc2 "
                                                                      "(init_classes=4, increment=2)"),
]


@pytest.mark.parametrize("named, updates, message", REFUSED, ids=[f"{list(u)[0]}={list(u.values())[0]}"
                                                                  for _, u, _ in REFUSED])
def test_a_bad_value_is_refused_when_the_config_is_resolved_in_one_line_naming_its_key(named, updates, message):
    """The values that passed the config and failed later (after the run directory existed, or a phase trained), or
    gave a traceback: refused by the config's check, one line each; and so by Settings built elsewhere."""
    from sacred.utils import ConfigError

    from emmcil.config import settings_of

    extra = {"num_layers": 6} if named == ("dualprompt",) else {}  # deep enough for DualPrompt's default layers
    with pytest.raises(ConfigError) as err:
        resolve("demo", *named, **extra, **updates)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bad config: {message}"), lines
    cfg = resolve("demo", *named, **extra)
    assert [p[:len(message)] for p in settings_of({**cfg, **updates}).problems()] == [message]


def test_each_problem_is_reported_once_and_an_unknown_method_is_one_line():
    from sacred.utils import ConfigError

    with pytest.raises(ConfigError) as err:
        resolve("demo", num_heads=0)
    assert str(err.value) == "bad config: num_heads=0: at least 1"
    with pytest.raises(ConfigError) as err:
        resolve("demo", num_heads=0, lr=-1.0)
    assert str(err.value).splitlines()[0] == "bad config:" and len(str(err.value).splitlines()) == 3
    with pytest.raises(ConfigError) as err:
        resolve("demo", method="nope")
    assert str(err.value) == f"unknown method 'nope'; registered: {sorted(catalogue())}"


def test_a_run_directory_name_that_leaves_log_dir_deletes_nothing(tmp_path):
    """run.py with exp_name=. restart=True deleted everything in log_dir: refused before anything runs."""
    kept = tmp_path / "runs" / "other_run" / "results.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "with", "demo", "exp_name=.", "restart=True",
                        f"log_dir={tmp_path / 'runs'}"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "exp_name='.': one folder name" in r.stderr and "Traceback" not in r.stderr
    assert kept.read_text() == "{}" and sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["other_run"]


def test_a_run_refuses_settings_with_problems_whatever_its_entry_point(tmp_path):
    """IncrementalRun checks its settings (evaluate's overrides never pass the config's check) before it writes."""
    from emmcil.engine.driver import IncrementalRun, SettingError

    cfg = resolve("demo", "finetune", log_dir=str(tmp_path / "runs"))
    with pytest.raises(SettingError, match=r"^bad config: per_gpu_batchsize=0: at least 1; num_workers=-3: at least "
                                           r"0$"):
        IncrementalRun({**cfg, "per_gpu_batchsize": 0, "num_workers": -3})
    assert not (tmp_path / "runs").exists()
