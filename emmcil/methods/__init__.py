"""Class-incremental methods, one file each, registered by name.

>>> from emmcil.methods import get_method, METHODS
>>> {"finetune", "joint", "replay"} <= set(METHODS)  # every method file here is imported, so new files register
True

To add a method: create ``emmcil/methods/<name>.py`` with a ``@register``-ed subclass of :class:`Method` (see
:mod:`emmcil.methods.base` for the hooks); ``config.py`` makes a named config ``<name>`` of every registered method.
A training recipe of its own, if its reference code has one, goes in ``recipes.py`` (the others train with the
project's).
"""
from __future__ import annotations

import ast
import importlib
import inspect
import io
import pkgutil
import textwrap
import tokenize
from functools import lru_cache
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


def methods_reading(key: str) -> list[str]:
    """The registered methods that declare ``key`` among their own config keys, sorted."""
    return sorted(name for name, cls in METHODS.items() if key in cls.config)


def _config_comments(cls: type) -> dict[str, str]:
    """Key -> its comment, for the entries of the ``config = {...}`` literal in ``cls``'s own source: the comment at
    the end of the entry's line, continued by comment-only lines below it (sacred reads config scopes' comments the
    same way). Keys spread in with ``**Other.config`` get their comments from ``Other``'s source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    depth, started, key, key_line, previous, pending = 0, False, None, -1, None, None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if not started:
            started = tok.type == tokenize.NAME and tok.string == "config" and tok.start[1] == 4
            continue
        if tok.type == tokenize.OP and tok.string in "{[(":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in "}])":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and tok.type == tokenize.STRING:
            pending = tok
        elif depth == 1 and tok.type == tokenize.OP and tok.string == ":" and pending is not None:
            key, key_line, pending = ast.literal_eval(pending.string), pending.start[0], None
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if key is not None and tok.start[0] == key_line:
                docs[key] = text
                previous = key
            elif previous is not None and tok.line.strip().startswith("#"):  # a comment-only continuation line
                docs[previous] += " " + text
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE):
            if tok.start[0] != key_line:
                previous = None
    return docs


@lru_cache(maxsize=None)
def method_key_docs() -> dict[str, str]:
    """Every method config key -> its comment in the method file that declares it (shown by ``print_config``)."""
    docs: dict[str, str] = {}
    for cls in METHODS.values():
        for klass in cls.__mro__:
            if "config" in vars(klass):
                for key, text in _config_comments(klass).items():
                    docs.setdefault(key, text)
    return docs


NOT_METHODS = ("base", "recipes")  # the contract and the optimiser recipes: no method to register
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in NOT_METHODS:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "PhaseContext", "register", "get_method", "method_config_defaults", "methods_reading",
           "method_key_docs"]
