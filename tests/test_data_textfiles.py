"""The one text-file reader: every format we read written with hostile content and read back the same; bytes that
are not UTF-8 reported with their line; the captioner resuming from any file it wrote, cut anywhere."""
import codecs
import csv
import io
import json
import os

import pytest
from data_helpers import food101_json, image_folder, write_jsonl

from emmcil.data import captions as C
from emmcil.data import write_food101 as W101
from emmcil.data.arrow import read_arrow
from emmcil.data.textfiles import (TextDecodeError, cut_partial_last_line, json_line, read_csv, read_jsonl, read_lines,
                                   read_text)
from emmcil.data.write_folder import main as write_folder_main
from emmcil.data.write_folder import write_folder
from emmcil.data.writing import read_captions

# Every kind of character a caption or title may hold: CSV's own (quote, comma), line breaks of every kind
# (str.splitlines splits at all of these; JSON keeps U+2028, U+2029 and U+0085 raw), control characters, a BOM
# inside the text, non-ASCII from several scripts, an emoji (outside the BMP), surrounding spaces.
HOSTILE = [
    'he said "hi", then ""left""',
    "comma, comma,, end,",
    "new\nline and\n\nblank line",
    "carriage\rreturn and crlf\r\ninside",
    "tab\tNUL\x00 vt\x0b ff\x0c fs\x1c gs\x1d rs\x1e us\x1f del\x7f",
    "line sep\u2028para sep\u2029 next line\x85 end",
    "\ufeffa BOM inside the text",
    "crème brûlée, 日本語のキャプション, Ελληνικά, עברית, emoji 🍰",
    "  padded with spaces  ",
    "'single' and `back` quotes; semicolon; \\ backslash",
]


def with_bom(path, encoding="utf-8"):
    data = path.read_bytes()
    path.write_bytes(codecs.BOM_UTF8 + data if encoding == "utf-8" else data)
    return path


# ---------------------------------------------------------------- the reader itself
def test_lines_split_at_newline_only(tmp_path):
    text = "a\u2028b\x85c\x1cd\x0be\rf\r\ng\n\nlast"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    assert list(read_text(path).lines()) == [(1, "a\u2028b\x85c\x1cd\x0be\rf"), (2, "g"), (3, ""), (4, "last")]
    assert len(text.splitlines()) == 9  # what str.splitlines would have made of it
    assert "".join(line for _, line in read_text(path).lines(keepends=True)) == text


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom"])
def test_encodings_with_a_bom_are_read(tmp_path, encoding):
    text = "path,caption\r\na.jpg,crème 🍰\r\n"
    data = {"utf-16-le-bom": codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
            "utf-16-be-bom": codecs.BOM_UTF16_BE + text.encode("utf-16-be")}.get(encoding)
    path = tmp_path / "c.csv"
    path.write_bytes(data if data is not None else text.encode(encoding))
    assert read_text(path).text == text


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_its_bom_is_an_error_that_says_so(tmp_path, codec):
    """NUL is valid UTF-8, so UTF-16 without a BOM "decoded" and failed later as a malformed CSV line."""
    path = tmp_path / "c.csv"
    path.write_bytes("path,caption\na.jpg,crème\n".encode(codec))
    for errors in ("strict", "replace"):
        with pytest.raises(TextDecodeError, match=r"c\.csv: 25 of its 50 bytes are NUL: UTF-16 without a byte-order"):
            read_text(path, errors=errors)
    path.write_bytes(b"")
    assert read_text(path).text == ""  # an empty file is empty text


def test_bytes_that_are_not_utf8_are_an_error_naming_file_line_and_bytes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes("apple\nbr\u00fbl\u00e9e\n".encode() + b"cr\xe8me\nok\n\xff\xfeend\n")
    with pytest.raises(TextDecodeError, match=r"classes\.txt: line 3, byte 2: b'\\xe8' is not UTF-8 .*1 more line"):
        read_text(path)
    tf = read_text(path, errors="replace")
    assert [(r.line, r.byte, r.raw) for r in tf.not_utf8] == [(3, 2, b"\xe8"), (5, 0, b"\xff"), (5, 1, b"\xfe")]
    assert tf.text == "apple\nbr\u00fbl\u00e9e\ncr\ufffdme\nok\n\ufffd\ufffdend\n"
    assert tf.repair_notes()[0] == "line 3, byte 2: b'\\xe8' in 'cr\ufffdme'"


def test_jsonl_round_trip_with_hostile_content(tmp_path):
    records = [{"path": f"c/{i}.jpg", "caption": t} for i, t in enumerate(HOSTILE)]
    path = tmp_path / "c.jsonl"
    lines = [json_line(r) for r in records]
    lines[4] = json.dumps(records[4]) + "\r\n"  # one written ASCII-escaped, with a CRLF ending
    lines.insert(3, "\n")  # an empty line
    path.write_text("".join(lines), encoding="utf-8", newline="")
    with_bom(path)
    assert [obj for _, obj in read_jsonl(path)[0]] == records
    assert read_captions(path) == {r["path"]: [r["caption"]] for r in records}


@pytest.mark.parametrize("delimiter,suffix,encoding", [(",", ".csv", "utf-8"), ("\t", ".tsv", "utf-8"),
                                                       ("\t", ".tsv", "utf-16")])
def test_caption_csv_round_trip_with_hostile_content(tmp_path, delimiter, suffix, encoding):
    keys = [f"c/{i}, \"odd\" name.jpg" for i in range(len(HOSTILE))]  # the path column is hostile too
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delimiter)
    w.writerow(["path", "caption"])
    for k, t in zip(keys, HOSTILE):
        w.writerow([k, t])
        if k == keys[2]:
            buf.write("\r\n")  # an empty line between rows
    path = tmp_path / f"c{suffix}"
    path.write_bytes(buf.getvalue().encode(encoding))
    if encoding == "utf-8":
        with_bom(path)
    assert read_captions(path) == {k: [t] for k, t in zip(keys, HOSTILE)}
    rows, _ = read_csv(path, delimiter)
    assert [n for n, _ in rows][:3] == [1, 2, 3] and len(rows) == len(HOSTILE) + 1


def test_caption_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("path,caption\na.jpg,fine\nb.jpg,a caption, with an unquoted comma\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.csv:3: 3 fields where the header has 2"):
        read_captions(path)
    path.write_text("file,words\na.jpg,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs a header"):
        read_captions(path)
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"path": "a.jpg", "caption": "x"}\n{"path": "b.jpg", "caption": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.jsonl:2: not valid JSON"):
        read_captions(jl)


def test_caption_files_with_non_utf8_bytes_are_repaired_and_reported(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"path": "a.jpg", "caption": "cr\xe8me"}\n{"path": "b.jpg", "caption": "fine"}\n')
    assert read_captions(path) == {"a.jpg": ["cr\ufffdme"], "b.jpg": ["fine"]}
    out = capsys.readouterr().out
    assert "repaired 1 runs of bytes that are not UTF-8 on 1 lines" in out and "line 1, byte 32: b'\\xe8'" in out


def test_class_list_with_bom_and_crlf(tmp_path):
    root = tmp_path / "raw"
    rels = image_folder(root, ["b", "a"], per_class=2)
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": r, "caption": "x"} for r in rels])
    classes = tmp_path / "classes.txt"
    classes.write_bytes(codecs.BOM_UTF8 + b"b\r\n\r\na\r\n")
    assert read_lines(classes) == ["b", "a"]
    train = write_folder(root, caps, tmp_path / "o", "t", classes=str(classes), test_fraction=0)["train"]
    assert {r["image_id"]: r["label"] for r in read_arrow(train).to_pylist()} == {r: "ba".index(r[0]) for r in rels}


def test_class_list_errors_name_file_and_line(tmp_path, capsys):
    root = tmp_path / "raw"
    rels = image_folder(root, ["a"], per_class=1)
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": r, "caption": "x"} for r in rels])
    classes = tmp_path / "classes.txt"
    argv = ["--root", str(root), "--captions", str(caps), "--out", str(tmp_path / "o"), "--name", "t",
            "--classes", str(classes)]
    classes.write_bytes(b"a\ncr\xe8me\n")
    with pytest.raises(SystemExit):
        write_folder_main(argv)
    assert "classes.txt: line 2, byte 2: b'\\xe8' is not UTF-8" in capsys.readouterr().err
    classes.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        write_folder_main(argv)
    assert "listed twice: ['a']" in capsys.readouterr().err


# ---------------------------------------------------------------- Food-101
def titles_csv(path, rows, line_terminator="\r\n"):
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator=line_terminator).writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(codecs.BOM_UTF8 + buf.getvalue().encode("utf-8"))
    return path


@pytest.mark.parametrize("line_terminator", ["\r\n", "\n"])
def test_food101_titles_csv_round_trip_with_hostile_titles(tmp_path, line_terminator):
    rows = [(f"apple_pie_{i}.jpg", t, "apple_pie") for i, t in enumerate(HOSTILE)]
    path = titles_csv(tmp_path / "train_titles.csv", rows, line_terminator)
    parsed, repaired, skipped = W101.read_titles_csv(path)
    assert parsed == [(f, t.strip(), c) for f, t, c in rows]
    assert repaired == {} and skipped == {}


def test_food101_titles_with_non_utf8_bytes_are_repaired_and_reported(tmp_path, capsys):
    """The issue's instance: Latin-1 bytes in a scraped title become U+FFFD, counted and listed with their line."""
    path = tmp_path / "texts" / "train_titles.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'apple_pie_0.jpg,Cr\xe8me br\xfbl\xe9e pie,apple_pie\n'
                     b'apple_pie_1.jpg,"fine, really",apple_pie\n'
                     b'apple_pie_2.jpg,"Tarte \xe0 la cr\xe8me\nsecond line",apple_pie\n')
    parsed, repaired, skipped = W101.read_titles_csv(path)
    assert parsed == [("apple_pie_0.jpg", "Cr\ufffdme br\ufffdl\ufffde pie", "apple_pie"),
                      ("apple_pie_1.jpg", "fine, really", "apple_pie"),
                      ("apple_pie_2.jpg", "Tarte \ufffd la cr\ufffdme\nsecond line", "apple_pie")]
    assert repaired == {W101.NOT_UTF8: ["line 1: apple_pie_0.jpg b'\\xe8 \\xfb \\xe9'",
                                        "line 3: apple_pie_2.jpg b'\\xe0 \\xe8'"]} and skipped == {}
    W101._print_csv_report(path, parsed, repaired, skipped)
    out = capsys.readouterr().out
    assert "2 repaired" in out and f"repaired ({W101.NOT_UTF8}): 2" in out


def test_food101_unclosed_quote_does_not_swallow_a_following_multiline_title(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('apple_pie_0.jpg,"never closed,apple_pie\n'
                    'apple_pie_1.jpg,"two\nlines, ""quoted""",apple_pie\n'
                    'apple_pie_2.jpg,plain,apple_pie\n', encoding="utf-8")
    parsed, repaired, skipped = W101.read_titles_csv(path)
    assert parsed == [("apple_pie_0.jpg", "never closed", "apple_pie"),
                      ("apple_pie_1.jpg", 'two\nlines, "quoted"', "apple_pie"),
                      ("apple_pie_2.jpg", "plain", "apple_pie")]
    assert list(repaired) == ["unclosed quote"] and skipped == {}


def test_food101_json_trio_round_trip_with_hostile_titles_and_bom(tmp_path, capsys):
    raw = tmp_path / "raw"
    fx = food101_json(raw)
    names = [n for names in fx["splits"].values() for n in names]
    texts = {n: HOSTILE[i % len(HOSTILE)] for i, n in enumerate(names)}
    (raw / "text.json").write_bytes(codecs.BOM_UTF8 + json.dumps(texts, ensure_ascii=False, indent=1).encode())
    with_bom(raw / "class_idx.json")
    W101.main(["--root", str(raw), "--out", str(tmp_path / "o")])
    got = {r["image_id"]: r["text"] for s in ("train", "val", "test")
           for r in read_arrow(tmp_path / "o" / f"food101_{s}.arrow").to_pylist()}
    assert got == {n: [t.strip()] for n, t in texts.items()}
    assert "not UTF-8" not in capsys.readouterr().out

    data = (raw / "text.json").read_bytes().replace("brûlée".encode(), b"br\xfbl\xe9e")
    (raw / "text.json").write_bytes(data)
    W101.main(["--root", str(raw), "--out", str(tmp_path / "o2")])
    out = capsys.readouterr().out
    n = sum("brûlée" in t for t in texts.values())
    assert f"text.json: repaired {2 * n} runs of bytes that are not UTF-8" in out and "b'\\xfb'" in out
    (raw / "split.json").write_bytes(b'{"train": ["apple_pie_\xe9.jpg"]}')
    with pytest.raises(SystemExit):
        W101.main(["--root", str(raw), "--out", str(tmp_path / "o3")])
    assert "split.json: line 1, byte 22: b'\\xe9' is not UTF-8" in capsys.readouterr().err


# ---------------------------------------------------------------- the captioner's resumable output
@pytest.fixture
def hostile_captioner(monkeypatch):
    """``generate_captions`` replaced by one that returns HOSTILE captions in turn (no model needed)."""
    state = {"n": 0}

    def fake(model, processor, images, *args):
        assert all(im.mode == "RGB" for im in images)  # the decoder's output
        out = [HOSTILE[(state["n"] + i) % len(HOSTILE)] for i in range(len(images))]
        state["n"] += len(images)
        return out

    monkeypatch.setattr(C, "generate_captions", fake)
    return dict(model=object(), processor=object(), batch_size=3)


def caption_records(path):
    return [obj for _, obj in read_jsonl(path)[0]]


def test_captioner_resumes_whatever_its_captions_hold(tmp_path, hostile_captioner):
    root = tmp_path / "imgs"
    rels = image_folder(root, ["a", "b"], per_class=5)
    out = tmp_path / "c.jsonl"
    assert C.caption_folder(root, out, limit=4, **hostile_captioner) == 4
    assert C.caption_folder(root, out, **hostile_captioner) == 6
    assert C.caption_folder(root, out, **hostile_captioner) == 0
    records = caption_records(out)
    assert [r["path"] for r in records] == rels and [r["caption"] for r in records] == HOSTILE
    assert read_captions(out) == {r: [t] for r, t in zip(rels, HOSTILE)}  # what write_imagenet_r reads


def test_captioner_resumes_after_a_kill_at_any_byte(tmp_path, hostile_captioner, capsys):
    root = tmp_path / "imgs"
    rels = image_folder(root, ["a"], per_class=8)  # the last caption is HOSTILE[7]: multi-byte characters
    full = tmp_path / "full.jsonl"
    C.caption_folder(root, full, **hostile_captioner)
    data = full.read_bytes()
    last = data.rfind(b"\n", 0, len(data) - 1) + 1  # where the last record starts
    out = tmp_path / "c.jsonl"
    for cut in range(last, len(data) - 1):  # a kill at every byte of the last record, inside UTF-8 sequences too
        out.write_bytes(data[:cut])
        assert C.done_paths(out) == set(rels[:-1])
        assert out.read_bytes() == data[:last]
    out.write_bytes(data[:-1])  # the whole record but its newline: kept
    assert C.done_paths(out) == set(rels) and out.read_bytes() == data
    out.write_bytes(data[:last + 7])
    hostile_captioner["model"] = object()
    assert C.caption_folder(root, out, **hostile_captioner) == 1
    records = caption_records(out)
    assert [r["path"] for r in records] == rels and len(records) == len(rels)
    assert "removed an incomplete last line" in capsys.readouterr().out


def test_captioner_output_keeps_file_names_that_are_not_utf8(tmp_path, hostile_captioner):
    """A file name with non-UTF-8 bytes (os.listdir gives it as lone surrogates) is written escaped and read back
    equal, so resuming skips it and write_imagenet_r finds its caption."""
    root = tmp_path / "imgs"
    image_folder(root, ["a"], per_class=1)
    odd = os.fsdecode(b"a/caf\xe9.jpg")
    os.rename(root / "a" / "img_0.jpg", os.fsencode(root) + b"/a/caf\xe9.jpg")
    out = tmp_path / "c.jsonl"
    assert C.caption_folder(root, out, **hostile_captioner) == 1
    out.read_bytes().decode("utf-8")  # the file is valid UTF-8
    assert C.done_paths(out) == {odd}
    assert C.caption_folder(root, out, **hostile_captioner) == 0
    assert list(read_captions(out)) == [odd]


def test_resume_rejects_lines_it_did_not_write(tmp_path):
    out = tmp_path / "c.jsonl"
    out.write_text('{"path": "a.jpg", "caption": "x"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.jsonl:2: not a caption line"):
        C.done_paths(out)
    out.write_bytes(b'{"path": "a.jpg", "caption": "cr\xe8me"}\n')
    with pytest.raises(TextDecodeError, match="line 1"):
        C.done_paths(out)
    assert cut_partial_last_line(tmp_path / "absent.jsonl") is None
