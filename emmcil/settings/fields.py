"""The field helper of the typed settings: a dataclass field with its one-line doc and its checks (torch-free).

``setting(default, doc, ...)`` is a :func:`dataclasses.field` whose metadata holds the doc, where a derived default
comes from (``derived=``), and the checks every value gets when the config is resolved: the annotation's type (a
list's elements too: ``list[int]``), a range (``low`` / ``high``; a list's elements), ``choices``, ``unique`` (a list
without repeats); ``result=False`` for a key that does not change what a run computes.
The method files declare their settings with it too, and ``emmcil.methods.catalogue`` reads them without importing
torch, so its arguments must be literals.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

DERIVED = "<derived>"  # the default of a field whose value the experiment derives (dataset, model size, recipe)
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "None": type(None)}
_TYPE_WORDS = {type(None): "None", int: "an int", str: "a str", list: "a list", bool: "a bool (True or False)",
               float: "a float"}
_ITEM_WORDS = {int: "ints", float: "numbers", str: "strings", bool: "bools"}


def setting(default: Any = DERIVED, doc: str = "", *, derived: str = "", low: float | None = None,
            high: float | None = None, open_low: bool = False, open_high: bool = False, minus_one: bool = False,
            seed: bool = False, choices: tuple | None = None, unique: bool = False, result: bool = True) -> Any:
    """A settings field. ``default``: a literal, or :data:`DERIVED` with ``derived`` naming its source; ``doc``: one
    line (print_config's comment, the docs' key table); ``low``/``high``: the range of a number (``open_low``:
    low itself excluded; ``open_high``: high excluded; ``minus_one``: -1 also allowed, meaning off / all);
    ``seed``: a seed in [0, 2**32); ``choices``: the values allowed; ``unique``: a list with no element twice;
    ``result``: False for a key that does not change results. A list field's annotation names its elements' type
    (``list[int]``), and ``low``/``high`` then bound each element."""
    meta = dict(doc=doc, derived=derived, low=low, high=high, open_low=open_low, open_high=open_high,
                minus_one=minus_one, seed=seed, choices=tuple(choices) if choices is not None else None, unique=unique,
                result=result)
    if isinstance(default, list):
        value = list(default)
        return dataclasses.field(default_factory=lambda: list(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def allowed_types(annotation: str) -> tuple[type, ...]:
    """``"int | None"`` -> (int, NoneType); ``"float"`` also takes an int; ``"list[int]"`` a list."""
    out = []
    for part in str(annotation).split("|"):
        base = part.strip().split("[")[0]
        out.append(_TYPES[base])
        if base == "float":
            out.append(int)
    return tuple(dict.fromkeys(out))


def item_type(annotation: str) -> type | None:
    """The elements' type of a list annotation: ``"list[int]"`` -> int; None for anything else."""
    for part in str(annotation).split("|"):
        part = part.strip()
        if part.startswith("list[") and part.endswith("]"):
            return _TYPES[part[5:-1].strip()]
    return None


def _is(value: Any, allowed: tuple[type, ...]) -> bool:
    return isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))


def type_problem(key: str, value: Any, annotation: str) -> str | None:
    """The one-line message for a value of the wrong type (or a list element of the wrong type), or None."""
    allowed = allowed_types(annotation)
    if _is(value, allowed):
        item = item_type(annotation) if isinstance(value, list) else None
        items = (item, int) if item is float else (item,)
        bad = [v for v in value if not _is(v, items)] if item else []
        if bad:
            return (f"{key}={value!r}: expected a list of {_ITEM_WORDS[item]}, not "
                    f"{type(bad[0]).__name__} {bad[0]!r}")
        return None
    want = " or ".join(_TYPE_WORDS[t] for t in allowed if not (t is int and float in allowed))
    hint = ""
    if key == "precision" and str(value) in PRECISION_ALIASES:
        hint = f" (write precision={PRECISION_ALIASES[str(value)]}, what Lightning reads {value!r} as)"
    elif str in allowed:
        hint = (f" (run.py keeps a text key as typed on its command line; elsewhere pass a str, or quote it in "
                f"a shell: {key}=\"'...'\")")
    return f"{key}={value!r}: expected {want}, not {type(value).__name__} {value!r}{hint}"


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def range_problem(key: str, value: Any, meta: dict, annotation: str = "") -> str | None:
    """The one-line message for a value outside the field's range or choices, or None (a whole-number field says
    "at least", a real one "a number in [low, high]")."""
    if value is None:
        return None
    if isinstance(value, list):
        return _list_problem(key, value, meta)
    if meta["choices"] is not None and value not in meta["choices"]:
        return f"{key}={value!r}: one of {meta['choices']}"
    if meta["seed"] and not 0 <= value < 2**32:
        return f"{key}={value}: a seed in [0, 2**32)"
    low, high = meta["low"], meta["high"]
    if meta["minus_one"]:
        return None if value == -1 or value >= 1 else f"{key}={value}: -1 (off) or at least 1"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (low is None and high is None):
        return None
    if allowed_types(annotation)[0] is int and high is None:
        return None if value >= low else f"{key}={value}: at least {low}"
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    ok = (number(value) and (low < value if meta["open_low"] else low <= value)
          and (value < high if meta.get("open_high") else value <= high))
    return None if ok else f"{key}={value}: a number in {range_text(meta)}"


def range_text(meta: dict) -> str:
    """A real field's range as an interval: ``[0, 1)``, ``(0, inf]``."""
    low = -math.inf if meta["low"] is None else meta["low"]
    high = math.inf if meta["high"] is None else meta["high"]
    return f"{'(' if meta['open_low'] else '['}{low}, {high}{')' if meta.get('open_high') else ']'}"


def _list_problem(key: str, value: list, meta: dict) -> str | None:
    """A list's repeated element (``unique``) or element outside ``low``/``high``."""
    repeated = sorted({v for v in value if value.count(v) > 1}, key=value.index)
    if meta.get("unique") and repeated:
        return f"{key}={value}: {', '.join(map(repr, repeated))} listed twice"
    low, high = meta["low"], meta["high"]
    out = [v for v in value if number(v) and (low is not None and v < low or high is not None and v > high)]
    if out:
        bound = f"at least {low}" if high is None else f"in [{-math.inf if low is None else low}, {high}]"
        return f"{key}={value}: every element {bound}, not {out[0]!r}"
    return None


def field_problems(obj: Any, types: bool = True) -> list[str]:
    """The type problems (``types=True``) or else the range/choice problems of a settings dataclass's values."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        problem = (type_problem(f.name, value, f.type) if types
                   else range_problem(f.name, value, f.metadata, f.type))
        if problem:
            out.append(problem)
    return out


# Lightning's precisions, as the run's name and its resume check compare them (16, "16", "bf16", 32 are aliases
# Lightning accepts: refused with the canonical name, so that one setting never has two names).
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
PRECISION_ALIASES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}
