"""The registered methods as the config reads them, without importing them (or torch): each method file is read
with ``ast``, and its ``@register``-ed class gives its ``name``, ``uses_memory``, ``named_config`` (literals) and
``settings``, the settings dataclass declared in the file, whose source (torch-free by contract: literals and
:mod:`emmcil.settings`' names only) is executed alone. ``tests/test_settings.py`` checks that this reading equals
the imported classes, so the two cannot drift.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import emmcil.settings as settings_module

HERE = Path(__file__).resolve().parent
NOT_METHOD_FILES = ("__init__", "base", "recipes", "catalogue")


@dataclass(frozen=True)
class MethodEntry:
    """A registered method as its file declares it."""

    name: str
    uses_memory: bool
    named_config: dict
    settings: type  # its settings dataclass (a torch-free copy of the file's)
    file: str

    @property
    def config(self) -> dict[str, Any]:
        """Its own keys -> defaults."""
        return settings_module.defaults(self.settings)


def _classes() -> dict[str, tuple[ast.ClassDef, str, str]]:
    """Class name -> (its ast, the file's source, the file's module name), over every file of the package."""
    out = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem in ("__init__", "catalogue"):
            continue
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.ClassDef):
                out[node.name] = (node, source, f"emmcil.methods.{path.stem}")
    return out


def _base_names(node: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases if isinstance(b, (ast.Name, ast.Attribute))]


def _attribute(classes, name: str, attr: str, default: Any) -> Any:
    """A class attribute's value (a literal, or a class name as ``ast.Name``), looked up along the bases."""
    node = classes[name][0] if name in classes else None
    if node is None:
        return default
    for stmt in node.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target if isinstance(stmt, ast.AnnAssign) \
            else None
        if isinstance(target, ast.Name) and target.id == attr and stmt.value is not None:
            if isinstance(stmt.value, ast.Name) and attr == "settings":
                return stmt.value.id
            return ast.literal_eval(stmt.value)
    for base in _base_names(node):
        value = _attribute(classes, base, attr, None)
        if value is not None:
            return value
    return default


def _settings_class(classes, name: str, built: dict) -> type:
    """The settings dataclass ``name``, built from its source (and its bases' first)."""
    if name == "MethodSettings":
        return settings_module.MethodSettings
    if name in built:
        return built[name]
    node, source, module = classes[name]
    namespace = {"__name__": __name__, "dataclass": dataclasses.dataclass, **{k: getattr(settings_module, k) for k in
                                                                          settings_module.__all__}}
    for base in _base_names(node):
        namespace[base] = _settings_class(classes, base, built)
    decorators = "".join(f"@{ast.get_source_segment(source, d)}\n" for d in node.decorator_list)
    code = "from __future__ import annotations\n" + decorators + ast.get_source_segment(source, node)
    exec(compile(code, f"<{module}.{name}>", "exec"), namespace)
    built[name] = namespace[name]
    return built[name]


def _registered(node: ast.ClassDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list)


@functools.cache
def catalogue() -> dict[str, MethodEntry]:
    """Method name -> :class:`MethodEntry`, for every ``@register``-ed class of ``emmcil/methods/``."""
    classes, built, out = _classes(), {}, {}
    for cls_name, (node, _, module) in classes.items():
        if not _registered(node):
            continue
        name = _attribute(classes, cls_name, "name", "")
        settings = _attribute(classes, cls_name, "settings", "MethodSettings")
        out[name] = MethodEntry(name=name, uses_memory=bool(_attribute(classes, cls_name, "uses_memory", False)),
                                named_config=dict(_attribute(classes, cls_name, "named_config", {})),
                                settings=_settings_class(classes, settings, built), file=module)
    return dict(sorted(out.items()))


def method_entry(name: str) -> MethodEntry:
    """KeyError naming the registered methods for an unknown one."""
    methods = catalogue()
    if name not in methods:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(methods)}")
    return methods[name]


def methods_reading(key: str) -> list[str]:
    """The registered methods that declare ``key`` among their own config keys, sorted."""
    return sorted(name for name, entry in catalogue().items() if key in entry.config)
