"""Class-incremental methods, one file each, registered by name.

>>> from emmcil.methods import get_method, METHODS
>>> {"finetune", "joint", "replay"} <= set(METHODS)  # every module here is imported, so new files register
True

To add a method: create ``emmcil/methods/<name>.py`` with a ``@register``-ed subclass of :class:`Method` (see
:mod:`emmcil.methods.base` for the hooks), then a named config in ``config.py`` that sets ``method="<name>"``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .base import Method, PhaseContext

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` selectable as ``method=cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is taken by {METHODS[cls.name].__module__}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name]


def method_config_defaults() -> dict[str, Any]:
    """The union of every method's own config keys; two methods may share a key only with the same default."""
    merged: dict[str, Any] = {}
    for name in sorted(METHODS):
        for key, value in METHODS[name].config.items():
            if key in merged and merged[key] != value:
                raise ValueError(f"config key {key!r} has different defaults in two methods ({merged[key]!r} "
                                 f"and {value!r} in {name!r})")
            merged[key] = value
    return merged


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "PhaseContext", "register", "get_method", "method_config_defaults"]
