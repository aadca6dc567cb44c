"""Typed settings: the resolved flat config read once into frozen dataclasses, one per concern plus the chosen
method's (declared in its file), and checked in one place. Torch-free (the config is checked before anything
heavy is imported). Fields, defaults, docs and checks: :mod:`.general`; the field helper: :mod:`.fields`.

>>> s = Settings.from_config(config)          # doctest: +SKIP  (a resolved config, e.g. config.json)
>>> s.optimisation.lr, s.method.tau_image     # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .checks import backbone_problems, check_augmentation, check_masking, check_memory, check_replay_ratio
from .fields import DERIVED, PRECISION_ALIASES, PRECISIONS, field_problems, setting
from .general import CONCERNS, MODEL_SIZES
from .protocol import phase_sizes


class SettingsError(ValueError):
    """A config that is not a valid setting: one line per problem, each naming its key."""


@dataclass(frozen=True)
class MethodSettings:
    """Base of a method's own settings, declared in the method's file (``settings = XSettings`` in its class).

    Fields use :func:`~emmcil.settings.fields.setting` with literal arguments, and :meth:`check` /
    :meth:`layout_dependence` only this package's names: ``emmcil.methods.catalogue`` reads them without importing
    the method (and torch)."""

    def check(self, settings: "Settings") -> list[str]:
        """Cross-key problems of the method's values (one line each, naming the key); ``settings``: the whole run's."""
        return []

    def layout_dependence(self, model_rng: str) -> str | None:
        """Why this method's numbers depend on which samples share a device's batch (a batch-level statistic or
        choice, a loss averaged over a micro-batch's count of something), or None: per-sample losses and outputs
        only. ``model_rng``: the run's (``"torch"`` draws a method's dropout over each batch). Then
        ``per_gpu_batchsize``, ``devices`` and ``num_nodes`` name the run and are checked on resume
        (:func:`emmcil.engine.rundir.layout_dependence`)."""
        return None


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def general_fields() -> dict[str, dataclasses.Field]:
    """Every general key -> its field, in the order of the concerns."""
    return {f.name: f for cls in CONCERNS.values() for f in dataclasses.fields(cls)}


def defaults(cls) -> dict[str, Any]:
    """A settings class's literal defaults (``DERIVED`` for the derived ones), key -> value."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return out


def saved_concern(cls, config: Mapping[str, Any]) -> Any:
    """One concern's settings (``cls``, e.g. ``MemorySettings``) read from a saved config.json of any version,
    without the method catalogue (the report's reading: torch-free, no method imported); a key the config lacks
    takes its field's literal default. The values are not checked."""
    return cls(**{k: config.get(k, v) for k, v in defaults(cls).items()})


def docs(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def non_result_keys(classes: Iterable[type]) -> frozenset[str]:
    """The keys of ``classes``' fields declared ``result=False`` (they do not change what a run computes)."""
    return frozenset(f.name for cls in classes for f in dataclasses.fields(cls) if not f.metadata.get("result", True))


@dataclass(frozen=True)
class Settings:
    """The run's settings: one object per concern, and ``method``, the chosen method's settings."""

    experiment: Any
    data: Any
    missing: Any
    model: Any
    optimisation: Any
    memory: Any
    hardware: Any
    run: Any
    logging: Any
    method: MethodSettings

    @classmethod
    def from_config(cls, config: Mapping[str, Any], method_settings: type, ignore: Iterable[str] = ()) -> "Settings":
        """The one place the flat config is read: every general key and every key of ``method_settings`` (the chosen
        method's settings class). SettingsError naming unknown or missing keys (``ignore``: entries that are not
        keys, e.g. config.json's provenance). Values are taken as they are; :meth:`problems` checks them."""
        general = general_fields()
        own = field_names(method_settings)
        known = set(general) | set(own) | set(ignore)
        unknown = sorted(k for k in config if k not in known)
        missing = sorted(k for k in [*general, *own] if k not in config)
        if unknown or missing:
            lines = ([f"unknown key {k!r}" for k in unknown] + [f"missing key {k!r}" for k in missing])
            raise SettingsError("; ".join(lines))
        parts = {name: concern(**{k: config[k] for k in field_names(concern)}) for name, concern in CONCERNS.items()}
        return cls(**parts, method=method_settings(**{k: config[k] for k in own}))

    @classmethod
    def of_run(cls, config: Mapping[str, Any], method_settings: Callable[[str], type],
               method_defaults: bool = False) -> "Settings":
        """:meth:`from_config` of a run's resolved config (or a saved config.json), the chosen method's settings
        class given by ``method_settings(name)``; keys that neither the general settings nor that class declare
        (config.json's provenance, another version's keys) are ignored. ``method_defaults``: the method's keys that
        ``config`` lacks (a config saved before they were added) take their defaults."""
        own = method_settings(config["method"])
        if method_defaults:
            config = {**defaults(own), **config}
        known = set(general_fields()) | set(field_names(own))
        return cls.from_config(config, own, ignore=[k for k in config if k not in known])

    def concerns(self) -> list:
        return [getattr(self, name) for name in CONCERNS] + [self.method]

    def to_config(self) -> dict[str, Any]:
        """The flat config these settings hold, key -> value, in the fields' order (the concerns', then the
        method's keys; the resolved config's too, except that sacred moves list values set on the command line):
        what config.json records, what the run's name and resume check compare key by key
        (:func:`emmcil.engine.rundir.results_config`) and what the loggers show as hyper-parameters."""
        return {f.name: getattr(part, f.name) for part in self.concerns() for f in dataclasses.fields(part)}

    def problems(self) -> list[str]:
        """Every problem of these settings, one line each naming the key: types first (the other checks assume
        them), then ranges and choices, then the rules across keys, then the method's own checks."""
        problems = [p for part in self.concerns() for p in field_problems(part, types=True)]
        if problems:
            return problems
        problems = [p for part in self.concerns() for p in field_problems(part, types=False)]
        e, m, o, h = self.experiment, self.model, self.optimisation, self.hardware
        if not 1 <= e.num_phases <= self.data.num_classes:
            problems.append(f"num_phases={e.num_phases}: at most num_classes={self.data.num_classes} (a phase needs "
                            f"a class of its own)")
        elif (e.init_classes or e.increment) and not _named(problems, "init_classes", "increment"):
            try:  # a num_phases set alongside them (a phases_* named config, say) must agree
                phase_sizes(self.data.num_classes, e.num_phases, e.init_classes, e.increment)
            except ValueError as err:
                problems.append(str(err))
        problems += o.check() + h.check() + m.check() + self.run.check()
        precision = h.precision
        if precision in PRECISION_ALIASES:
            problems.append(f"precision={precision!r}: write precision={PRECISION_ALIASES[precision]} (what "
                            f"Lightning reads it as), so that the run's name and resume check see one name for one "
                            f"setting")
        elif precision not in PRECISIONS:
            problems.append(f"precision={precision!r}: one of {PRECISIONS}")
        elif precision == "16-true" and o.optimizer in ("adam", "adamw"):
            problems.append(f"precision='16-true' with optimizer={o.optimizer!r}: the weights and {o.optimizer}'s "
                            f"state are float16, where its eps={o.eps:g} is 0 and small squared gradients "
                            f"underflow, so an update divides by zero and every weight turns NaN within the first "
                            f"epoch. Use precision=16-mixed (float16 compute, float32 weights, on a GPU) or "
                            f"bf16-mixed (GPU or CPU)")
        if precision == "16-mixed" and h.accelerator == "cpu":
            problems.append("precision='16-mixed' with accelerator='cpu': float16 autocast runs on GPUs only "
                            "(Lightning would switch to bf16-mixed); use precision=bf16-mixed on a CPU")
        sizes = {**dataclasses.asdict(m), "max_text_len": self.data.max_text_len}
        backbone = [p for p in backbone_problems(sizes) if not _named(problems, _key(p))]  # each problem once
        if backbone:
            problems.append("backbone config: " + "; ".join(backbone))
        problems += self.memory.check()
        if not problems:
            problems += self.method.check(self)
        return problems


def _key(problem: str) -> str:
    """The key a problem's line starts with (``"num_heads=0: at least 1"`` -> ``"num_heads"``)."""
    return problem.split("=", 1)[0].split(" ")[-1]


def _named(problems: list[str], *keys: str) -> bool:
    """Whether a line of ``problems`` is about one of ``keys`` already."""
    return any(_key(p) in keys for p in problems)


__all__ = ["Settings", "SettingsError", "MethodSettings", "setting", "DERIVED", "CONCERNS", "MODEL_SIZES",
           "general_fields", "defaults", "docs", "saved_concern", "non_result_keys", "field_names",
           "check_augmentation", "check_masking", "check_memory", "check_replay_ratio"]
