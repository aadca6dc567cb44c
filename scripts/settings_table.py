"""Write docs/experiments.md's key tables from the typed settings (one table a concern, and one a method), so the
docs say what the fields say: ``python scripts/settings_table.py`` (``--check``: exit 1 if the docs are not current;
tests/test_settings.py runs it). Torch-free."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emmcil.methods.catalogue import catalogue  # noqa: E402
from emmcil.settings import CONCERNS, DERIVED  # noqa: E402
from emmcil.settings.fields import range_text  # noqa: E402

DOC = ROOT / "docs" / "experiments.md"
START, END = "<!-- settings-table:start (scripts/settings_table.py) -->", "<!-- settings-table:end -->"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def bounds(f: dataclasses.Field) -> str:
    """The range a field's values are checked against, in words ("" for none)."""
    meta = f.metadata
    if meta.get("seed"):
        return "a seed in [0, 2**32)"
    if meta.get("minus_one"):
        return "-1 or >= 1"
    if meta.get("low") is None and meta.get("high") is None:
        return ""
    each = "each element " if str(f.type).startswith("list") else ""
    if meta["high"] is None:
        return f"{each}{'>' if meta['open_low'] else '>='} {meta['low']}"
    return f"{each}in {range_text(meta)}"


def table(cls, own_only: bool = False) -> list[str]:
    parent = [f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)]
    rows = ["| key | type | default | what |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if own_only and f.name in parent:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = f"derived: {f.metadata['derived']}" if default == DERIVED else f"`{default!r}`"
        checks = [f"one of {f.metadata['choices']}"] if f.metadata.get("choices") else []
        checks += [bounds(f)] if bounds(f) else []
        checks += ["no element twice"] if f.metadata.get("unique") else []
        checks += ["does not change results"] if not f.metadata.get("result", True) else []
        what = f.metadata["doc"] + (f" ({'; '.join(checks)})" if checks else "")
        rows.append(f"| `{f.name}` | {_cell(f'`{f.type}`')} | {_cell(shown)} | {_cell(what)} |")
    return rows


def tables() -> str:
    out = [START, "", "Generated from the fields of `emmcil/settings/general.py` and of each method's settings "
           "dataclass; `python scripts/settings_table.py` rewrites this part.", ""]
    for name, cls in CONCERNS.items():
        out += [f"#### {name} (`{cls.__name__}`)", "", *table(cls), ""]
    for name, entry in catalogue().items():
        own = table(entry.settings, own_only=True)
        if len(own) > 2:
            bases = [b.__name__ for b in entry.settings.__mro__[1:2] if b.__name__ != "MethodSettings"]
            also = f"; also the keys of `{bases[0]}`" if bases else ""
            out += [f"#### method `{name}` (`{entry.settings.__name__}`{also})", "", *own, ""]
    return "\n".join(out + [END])


def updated(text: str) -> str:
    if START not in text:
        raise SystemExit(f"{DOC}: no {START!r} marker")
    head, rest = text.split(START, 1)
    return head + tables() + rest.split(END, 1)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/experiments.md is not current")
    args = parser.parse_args()
    text = DOC.read_text()
    new = updated(text)
    if args.check:
        if new != text:
            print(f"{DOC.relative_to(ROOT)} is not current: run python scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
