"""The one reader (and appender) of the text files the data layer reads: caption JSONL / CSV / TSV, Food-101's
titles CSV and JSON files, class lists, the captioner's resumable output.

* **Encoding**: UTF-8, with or without a byte-order mark; a UTF-16 file with its BOM (Excel's "Unicode text") is
  decoded as UTF-16; one without it (a quarter or more of its bytes NUL) is a :class:`TextDecodeError` that says
  so. Never the locale's encoding.
* **Bytes that are not UTF-8** are never replaced in silence. ``errors="strict"`` (names, keys, our own files)
  raises :class:`TextDecodeError` naming the file, the line, the byte offset and the bytes. ``errors="replace"``
  (caption and title text, which the writers repair and report like any other repair) puts U+FFFD in their place
  and lists each one in :attr:`TextFile.not_utf8` with its line.
* **Lines** end at ``"\\n"`` only (a ``"\\r"`` before it is dropped). ``str.splitlines`` would also split at
  U+2028, U+2029, U+0085, ``\\x1c``-``\\x1e``, ``\\x0b``, ``\\x0c`` and a lone ``\\r``, several of which JSON
  allows raw inside a string (``json.dumps(..., ensure_ascii=False)`` writes U+2028 and U+0085 as they are).
* **CSV** goes through the ``csv`` module on those lines, so quoted fields may hold commas, quotes and newlines.
* **JSON** is parsed with ``strict=False``: raw control characters (a tab) inside strings are accepted.
"""
from __future__ import annotations

import codecs
import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, NamedTuple

UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class TextDecodeError(ValueError):
    """A text file holds bytes that are not UTF-8 (``errors="strict"``); the message names file, line and bytes."""


class NotUtf8(NamedTuple):
    """One run of bytes that is not UTF-8, replaced by one U+FFFD."""
    line: int     # line number, from 1
    byte: int     # byte offset in the line
    raw: bytes    # the bytes
    context: str  # the decoded line around the U+FFFD


@dataclass
class TextFile:
    """A decoded text file; ``not_utf8`` lists the replaced runs (empty unless read with ``errors="replace"``)."""
    path: Path
    text: str
    not_utf8: list[NotUtf8] = field(default_factory=list)

    def lines(self, keepends: bool = False) -> Iterator[tuple[int, str]]:
        """(line number from 1, line) split at ``"\\n"`` only; without ``keepends`` the ``"\\n"``/``"\\r\\n"`` is
        removed. A last line without ``"\\n"`` counts; an empty file has no lines."""
        start, lineno, text = 0, 0, self.text
        while start < len(text):
            end = text.find("\n", start)
            end = len(text) if end < 0 else end + 1
            lineno += 1
            line = text[start:end]
            if not keepends:
                line = line[:-2] if line.endswith("\r\n") else line.rstrip("\n")
            yield lineno, line
            start = end

    def repair_notes(self) -> list[str]:
        """One ``"line N, byte B: b'..' in '..'"`` entry per replaced run, for the writers' repair reports."""
        return [f"line {r.line}, byte {r.byte}: {r.raw!r} in {r.context!r}" for r in self.not_utf8]


def read_text(path: str | os.PathLike, errors: str = "strict") -> TextFile:
    """Read and decode a text file (module docstring). ``errors``: "strict" or "replace".

    Raises FileNotFoundError, TextDecodeError (strict mode, a UTF-16 file that does not decode, or UTF-16 without
    its byte-order mark).
    """
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors={errors!r}: expected 'strict' or 'replace'")
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(UTF16_BOMS):
        try:
            return TextFile(path, data.decode("utf-16"))
        except UnicodeDecodeError as e:
            raise TextDecodeError(f"{path}: starts with a UTF-16 byte-order mark but does not decode as UTF-16 "
                                  f"at byte {e.start}; save it as UTF-8") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    nuls = data.count(0)
    if data and nuls >= len(data) / 4:  # NUL is valid UTF-8, so UTF-16 text without a BOM would "decode"
        raise TextDecodeError(f"{path}: {nuls} of its {len(data)} bytes are NUL: UTF-16 without a byte-order mark? "
                              f"Save it as UTF-8 (or as UTF-16 with its BOM)")
    try:
        return TextFile(path, data.decode("utf-8"))  # the common case: one pass, no per-line work
    except UnicodeDecodeError:
        pass
    parts, bad = [], []
    for lineno, raw in enumerate(data.split(b"\n"), 1):  # b"\n" never occurs inside a UTF-8 sequence
        text, runs = _decode_line(raw)
        parts.append(text)
        bad += [NotUtf8(lineno, offset, b, text[max(0, i - 20):i + 21].rstrip("\r")) for offset, b, i in runs]
    if errors == "strict":
        first, lines = bad[0], {r.line for r in bad}
        more = f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else ""
        raise TextDecodeError(f"{path}: line {first.line}, byte {first.byte}: {first.raw!r} is not UTF-8 "
                              f"(in {first.context!r}){more}; save the file as UTF-8")
    return TextFile(path, "\n".join(parts), bad)


def _decode_line(raw: bytes) -> tuple[str, list[tuple[int, bytes, int]]]:
    """UTF-8 with one U+FFFD for each invalid run (as ``errors="replace"``); each run's (byte offset, bytes,
    index of its U+FFFD in the text)."""
    out, runs, pos, n = [], [], 0, 0
    while True:
        try:
            out.append(raw[pos:].decode("utf-8"))
            return "".join(out), runs
        except UnicodeDecodeError as e:
            start, end = pos + e.start, pos + e.end
            good = raw[pos:start].decode("utf-8")
            n += len(good)
            out.append(good + "\ufffd")
            runs.append((start, raw[start:end], n))
            n += 1
            pos = end


def read_lines(path: str | os.PathLike) -> list[str]:
    """The stripped, non-empty lines of a strict UTF-8 file (a class list: one name a line)."""
    return [s for _, line in read_text(path).lines() if (s := line.strip())]


def loads(text: str, where: str):
    """``json.loads`` (strict=False); ValueError naming ``where`` (a file, or ``file:line``) and the position."""
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def read_json(path: str | os.PathLike, errors: str = "strict") -> tuple[object, TextFile]:
    """(the parsed JSON document, its TextFile for the repair notes)."""
    tf = read_text(path, errors)
    return loads(tf.text, str(tf.path)), tf


def read_jsonl(path: str | os.PathLike, errors: str = "strict") -> tuple[list[tuple[int, object]], TextFile]:
    """([(line number, parsed value)] of the non-blank lines, the TextFile). ValueError names the bad line."""
    tf = read_text(path, errors)
    return [(n, loads(line, f"{tf.path}:{n}")) for n, line in tf.lines() if line.strip()], tf


def read_csv(path: str | os.PathLike, delimiter: str = ",", errors: str = "strict"
             ) -> tuple[list[tuple[int, list[str]]], TextFile]:
    """([(line number where the row starts, fields)], the TextFile); blank lines are skipped, quoted fields keep
    their commas, quotes, newlines and control characters."""
    tf = read_text(path, errors)
    lines = [line for _, line in tf.lines(keepends=True)]
    reader = csv.reader(lines, delimiter=delimiter)
    rows, start = [], 1
    try:
        for fields in reader:
            if fields:
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        raise ValueError(f"{tf.path}:{reader.line_num}: not valid CSV ({e})") from None
    return rows, tf


def json_line(obj) -> str:
    """One JSONL line (with its ``"\\n"``) that :func:`read_jsonl` reads back equal: UTF-8 as is, but a string
    holding lone surrogates (a file name that is not UTF-8, as ``os.listdir`` returns it) is written escaped."""
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj)
    return line + "\n"


def open_append(path: str | os.PathLike) -> IO[str]:
    """Open a text file for appending UTF-8 lines; ``"\\n"`` is written as is on every platform."""
    return open(path, "a", encoding="utf-8", newline="\n")


def cut_partial_last_line(path: str | os.PathLike) -> str | None:
    """Make an appended-to JSONL file end at a line boundary before appending again, after a kill mid-write.

    A last line without ``"\\n"`` that parses as JSON only lost its newline, which is added; any other (a record
    cut short, maybe inside a UTF-8 sequence) is removed. Returns a note of what was done, or None.
    """
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end == len(data):
        return None
    tail = data[end:]
    try:
        json.loads(tail.decode("utf-8"), strict=False)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        with open(path, "r+b") as f:
            f.truncate(end)
        return f"{path}: removed an incomplete last line ({len(tail)} bytes), cut short by an interruption"
    with open(path, "ab") as f:
        f.write(b"\n")
    return f"{path}: the last line was complete but had no newline; added it"
