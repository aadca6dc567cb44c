"""Class-incremental methods, one file each, registered by name.

>>> from emmcil.methods import get_method, METHODS
>>> {"finetune", "joint", "replay"} <= set(METHODS)  # every method file here is imported, so new files register
True

To add a method: create ``emmcil/methods/<name>.py`` with a ``@register``-ed subclass of :class:`Method` (see
:mod:`emmcil.methods.base` for the hooks) and its settings dataclass (``settings = XSettings``);
``emmcil/config.py`` makes a named config ``<name>`` of every registered method. The method files import torch, so
this package imports them only when ``METHODS`` (or ``get_method``) is first used; the config reads them without
importing them (:mod:`emmcil.methods.catalogue`).
A training recipe of its own, if its reference code has one, goes in ``recipes.py`` (the others train with the
project's).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .catalogue import catalogue, methods_reading

_REGISTRY: dict[str, type] = {}
NOT_METHODS = ("base", "recipes", "catalogue")  # the contract, the recipes, the static reading: no method here


def register(cls: type) -> type:
    """Class decorator: make ``cls`` selectable as ``method=cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is taken by {_REGISTRY[cls.name].__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> dict[str, type]:
    """The registry, after importing every method file of this package (once; they import torch)."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in NOT_METHODS:
            importlib.import_module(f"{__name__}.{module.name}")
    return _REGISTRY


def get_method(name: str) -> type:
    methods = _load()
    if name not in methods:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(methods)}")
    return methods[name]


def method_config_defaults() -> dict[str, Any]:
    """The union of every method's own config keys; two methods may share a key only with the same default."""
    merged: dict[str, Any] = {}
    methods = _load()
    for name in sorted(methods):
        for key, value in methods[name].config.items():
            if key in merged and merged[key] != value:
                raise ValueError(f"config key {key!r} has different defaults in two methods ({merged[key]!r} "
                                 f"and {value!r} in {name!r})")
            merged[key] = value
    return merged


def method_key_docs() -> dict[str, str]:
    """Every method config key -> its one-line doc (its settings field's; shown by ``print_config``)."""
    from emmcil.settings import docs

    out: dict[str, str] = {}
    for entry in catalogue().values():
        for key, text in docs(entry.settings).items():
            out.setdefault(key, text)
    return out


def settings_of(cfg) -> Any:
    """The typed :class:`~emmcil.settings.Settings` of a resolved config (the run's, or a saved config.json), built
    once at a run's start; keys that neither the general settings nor the chosen method declare (config.json's
    provenance, another version's keys) are ignored. SettingsError for a missing key."""
    from emmcil.settings import Settings

    return Settings.of_run(cfg, lambda name: get_method(name).settings)


def __getattr__(name: str):
    if name == "METHODS":
        return _load()
    if name in ("Method", "PhaseContext"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "Method", "PhaseContext", "register", "get_method", "method_config_defaults", "methods_reading",
           "method_key_docs", "catalogue", "settings_of"]
