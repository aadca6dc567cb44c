"""The README and docs/: the README stays a short front page that links to each docs page, every relative link of
every page (files and #anchors) leads somewhere, and docs/method.md's Python example (the backbone used from Python)
runs as written (ViLT-B/32 size, random weights when the checkpoint is absent)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("method", "data", "experiments", "reproduction", "benchmarks")  # the docs pages the README links to
LINK = re.compile(r"\]\(([^)\s]+)\)")
METHOD_DOC = ROOT / "docs" / "method.md"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation but ``-`` and ``_`` dropped, spaces
    to ``-`` (headings inside code blocks are not headings)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_the_readme_is_a_front_page_that_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 170  # issue 18: about 150 lines; the rest is in docs/
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), page
        assert f"](docs/{page}.md" in readme, page
    assert "## Code map" in readme and "emmcil/methods/" in readme and "emmcil/report/" in readme


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, http:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.name}")
    assert not broken, "\n".join(broken)


def test_the_code_links_to_docs_lead_to_a_heading():
    """A module's docstring is a line and a link into docs/ (``docs/method.md#rebq``): every such link in the code
    names a docs page and one of its headings, so that a renamed heading fails here."""
    broken = []
    for path in sorted((ROOT / "emmcil").rglob("*.py")):
        for page, anchor in re.findall(r"docs/(\w+\.md)(?:#([\w-]+))?", path.read_text()):
            doc = ROOT / "docs" / page
            if not doc.is_file() or (anchor and anchor not in anchors(doc)):
                broken.append(f"{path.relative_to(ROOT)}: docs/{page}#{anchor}")
    assert not broken, "\n".join(broken)


def doc_block(section: str) -> str:
    """The first ```python block after the heading ``section`` of docs/method.md."""
    text = METHOD_DOC.read_text()
    start = re.search(rf"^#+ {re.escape(section)}$", text, re.M).start()
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_using_the_model_from_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no vilt_200k_mlm_itm.ckpt here: random initialisation
    namespace = {}
    exec(compile(doc_block("Using the model from Python"), "docs/method.md", "exec"), namespace)
    assert "trainable: 796416" in capsys.readouterr().out
    assert namespace["out"].pooled.shape == (1, 768)
    assert namespace["cls_to_patches"].shape == (1, 12 * 15)


def table_names(doc: Path, header: str) -> set[str]:
    """The ``name(`` of every ``name(args)`` in the first column of the markdown table whose header row starts with
    ``header`` in ``doc``."""
    lines = doc.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    names = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        names |= set(re.findall(r"`(\w+)\(", line.split("|")[1]))
    return names


def public_methods(*classes) -> set[str]:
    return {n for c in classes for n, v in vars(c).items()
            if (callable(v) and not isinstance(v, type) or isinstance(v, (classmethod, staticmethod)))
            and not n.startswith("_")}  # a class attribute holding a class (``settings``) is no hook


def test_the_hook_tables_list_every_method_of_the_method_contract():
    """docs/method.md's tables of ``Method``'s hooks and ``Replay``'s own: exactly the classes' public methods, so
    that a hook added, renamed or removed in the code fails here until the docs follow."""
    from emmcil.methods import Method
    from emmcil.methods.replay import CompressedReplay, Replay

    assert table_names(METHOD_DOC, "| hook |") == public_methods(Method)
    assert table_names(METHOD_DOC, "| `Replay` hook |") == public_methods(Replay, CompressedReplay) - public_methods(
        Method)


def table_rows(doc: Path, header: str) -> list[list[str]]:
    """The cells of every row of the markdown table whose header row starts with ``header``."""
    lines = doc.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


# how the tables name a base class that is no method of its own
BASE_NAMES = {"ExemplarFreeMethod": "the exemplar-free base"}


@pytest.mark.parametrize("header", ["| hook |", "| `Replay` hook |"])
def test_the_hook_tables_match_the_hooks_signatures_and_overrides(header):
    """Each hook's row in docs/method.md agrees with the code: the arguments it shows are the hook's parameters, and
    its "overridden by" column names every method class that overrides the hook (a registered method by its name,
    a base by its name), and no method that does not override it."""
    import inspect

    from emmcil.methods import METHODS, Method
    from emmcil.methods.replay import Replay

    base = Method if header == "| hook |" else Replay
    names = {cls: name for name, cls in METHODS.items()}
    problems = []
    for row in table_rows(METHOD_DOC, header):
        hooks, overridden = row[0], row[-1]
        listed = set(re.findall(r"`(\w+)`", overridden))
        for hook, args in re.findall(r"`(\w+)\(([^)]*)\)`", hooks):
            owner = next(c for c in (base, *base.__subclasses__(), *Replay.__subclasses__()) if hook in vars(c))
            params = [n for n in inspect.signature(getattr(owner, hook)).parameters if n not in ("self", "cls")]
            if [a.strip() for a in args.split(",") if a.strip()] != params:
                problems.append(f"{hook}({args}): the code's parameters are ({', '.join(params)})")
            if owner is not base:  # a hook of CompressedReplay only
                continue
            definers = {c for cls in METHODS.values() if issubclass(cls, base)
                        for c in cls.__mro__[:cls.__mro__.index(base)] if hook in vars(c)}
            overriding = {name for name, cls in METHODS.items()
                          if issubclass(cls, base) and getattr(cls, hook) is not getattr(base, hook)}
            for c in definers:
                named = names.get(c, c.__name__)
                if named not in listed and BASE_NAMES.get(c.__name__, "\0") not in overridden:
                    problems.append(f"{hook}: overridden by {named} ({c.__name__}), which the table does not name")
            for name in listed & set(METHODS) - overriding:
                problems.append(f"{hook}: the table names {name}, which does not override it")
    assert not problems, "\n".join(problems)


def test_the_scripts_tables_list_every_script():
    """docs/reproduction.md's tables of scripts name every file in scripts/ (a new script needs its row)."""
    doc = (ROOT / "docs" / "reproduction.md").read_text()
    listed = set(re.findall(r"^\| `(scripts/[^`]+)` \|", doc, flags=re.M))
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "scripts").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert listed == shipped
