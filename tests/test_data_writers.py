"""Arrow writers on small raw trees in the real layouts, including every kind of bad input."""
import csv
import json
import shutil
from collections import Counter

import pandas as pd
import pytest
from data_helpers import FOOD_CLASSES, corrupt, food101_csv, food101_json, image_folder, make_jpeg, write_jsonl

from emmcil.data import write_folder as WF
from emmcil.data import write_food101 as W101
from emmcil.data import write_imagenet_r as WIR
from emmcil.data.arrow import read_arrow
from emmcil.data.imagenet_r_classes import IMAGENET_R_CLASSES, IMAGENET_R_WNIDS, WNID_TO_LABEL, WNID_TO_NAME
from emmcil.data.writing import BadSampleError


def rows_of(path):
    return read_arrow(path).to_pylist()


# ---------------------------------------------------------------- Food-101, json trio
def test_food101_json_trio(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    fx = food101_json(raw)
    W101.main(["--root", str(raw), "--out", str(out)])
    for split, names in fx["splits"].items():
        rows = rows_of(out / f"food101_{split}.arrow")
        assert [r["image_id"] for r in rows] == names  # split.json order, nothing lost
        for r in rows:
            cls = r["image_id"].rsplit("_", 1)[0]
            assert r["label"] == FOOD_CLASSES[cls] and r["split"] == split
            assert r["text"] == [fx["texts"][r["image_id"]]]
            folder = "test" if split == "test" else "train"  # val images live in images/train
            assert r["image"] == (raw / "images" / folder / cls / r["image_id"]).read_bytes()
    names = json.loads((out / "food101_classes.json").read_text())
    assert [FOOD_CLASSES[n] for n in names] == list(range(len(FOOD_CLASSES)))


# ---------------------------------------------------------------- Food-101, original CSV
def test_titles_csv_survives_the_unclosed_quote(tmp_path, capsys):
    rows = food101_csv(tmp_path)
    csv_path = tmp_path / "texts" / "train_titles.csv"
    # the quirk is real in the fixture: a whole-file CSV parser swallows the rows after the broken line
    with open(csv_path, newline="") as f:
        assert len(list(csv.reader(f))) < len(rows["train"])
    with pytest.raises(pd.errors.ParserError):
        pd.read_csv(csv_path, header=None)
    parsed, repaired, skipped = W101.read_titles_csv(csv_path)
    assert parsed == rows["train"]  # every row, titles unquoted ('""' -> '"'), the broken one without its quote
    assert list(repaired) == ["unclosed quote"] and "apple_pie_3.jpg" in repaired["unclosed quote"][0]
    assert skipped == {}


def test_titles_csv_reports_skipped_lines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('image,title,class\napple_pie_0.jpg,Pie,apple_pie\ngarbage line\n'
                    'apple_pie_1.jpg,Pie, with a comma,apple_pie\n')
    parsed, repaired, skipped = W101.read_titles_csv(path)
    assert parsed == [("apple_pie_0.jpg", "Pie", "apple_pie"), ("apple_pie_1.jpg", "Pie, with a comma", "apple_pie")]
    assert sorted(skipped) == ["fewer than 3 fields", "header"]
    assert list(repaired) == ["unquoted comma in title"]


def test_food101_csv_layout_with_seeded_val(tmp_path, capsys):
    raw = tmp_path / "raw"
    rows = food101_csv(raw, n_train=10)
    W101.main(["--root", str(raw), "--out", str(tmp_path / "a"), "--seed", "0"])
    report = capsys.readouterr().out
    assert "1 repaired" in report and "unclosed quote" in report and "0 skipped" in report
    train = rows_of(tmp_path / "a" / "food101_train.arrow")
    val = rows_of(tmp_path / "a" / "food101_val.arrow")
    test = rows_of(tmp_path / "a" / "food101_test.arrow")
    # val is carved from train: disjoint, together the whole train CSV, 10 % of each class
    assert sorted(r["image_id"] for r in train + val) == sorted(r[0] for r in rows["train"])
    assert Counter(r["label"] for r in val) == {lab: 1 for lab in range(3)}
    assert [r["image_id"] for r in test] == [r[0] for r in rows["test"]]
    # labels: sorted class names (no class_idx.json in this layout)
    assert {r["image_id"]: r["label"] for r in train + val} == {
        f: sorted(FOOD_CLASSES).index(c) for f, _, c in rows["train"]}
    titles = {f: t for f, t, _ in rows["train"]}
    assert all(r["text"] == [titles[r["image_id"]]] for r in train + val)

    def val_ids(seed, out):
        W101.main(["--root", str(raw), "--out", str(tmp_path / out), "--seed", str(seed)])
        return {r["image_id"] for r in rows_of(tmp_path / out / "food101_val.arrow")}

    assert val_ids(0, "b") == {r["image_id"] for r in val}  # same seed, same split
    assert any(val_ids(s, f"s{s}") != {r["image_id"] for r in val} for s in (1, 2, 3))


# ---------------------------------------------------------------- MM-ImageNet-R
def test_imagenet_r_table():
    assert len(IMAGENET_R_WNIDS) == len(set(IMAGENET_R_WNIDS)) == 200 == len(set(IMAGENET_R_CLASSES))
    assert IMAGENET_R_WNIDS == sorted(IMAGENET_R_WNIDS)
    assert WNID_TO_NAME["n01443537"] == "goldfish" and WNID_TO_NAME["n12267677"] == "acorn"


def test_imagenet_r_writer(tmp_path):
    root = tmp_path / "imagenet-r"
    wnids = [IMAGENET_R_WNIDS[0], IMAGENET_R_WNIDS[97], IMAGENET_R_WNIDS[199]]
    rels = image_folder(root, wnids, per_class=10, prefix="art")
    caps = write_jsonl(tmp_path / "captions.jsonl", [{"path": r, "caption": f"a drawing, {r}"} for r in rels])

    def run(out, seed):
        WIR.main(["--root", str(root), "--captions", str(caps), "--out", str(tmp_path / out), "--seed", str(seed)])
        return {s: rows_of(tmp_path / out / f"mm_imagenet_r_{s}.arrow") for s in ("train", "test")}

    a = run("a", 0)
    every = a["train"] + a["test"]
    assert sorted(r["image_id"] for r in every) == sorted(rels)
    for r in every:
        assert r["label"] == WNID_TO_LABEL[r["image_id"].split("/")[0]]
        assert r["text"] == [f"a drawing, {r['image_id']}"]
    assert Counter(r["label"] for r in a["test"]) == {WNID_TO_LABEL[w]: 2 for w in wnids}  # 20 % per class
    assert run("b", 0) == a
    assert {r["image_id"] for r in run("c", 1)["test"]} != {r["image_id"] for r in a["test"]}
    assert json.loads((tmp_path / "a" / "mm_imagenet_r_classes.json").read_text()) == IMAGENET_R_CLASSES


# ---------------------------------------------------------------- generic folder
def test_folder_writer_csv_captions(tmp_path, capsys):
    root = tmp_path / "pets"
    rels = image_folder(root, ["dog", "cat", "emu"], per_class=5)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "more").mkdir()  # a sub-folder: not read, and named as a folder
    # half the captions keyed by absolute paths under --root: the same images (they were reported as uncaptioned)
    keys = [str(root / r) if i % 2 else r for i, r in enumerate(rels)]
    pd.DataFrame({"path": keys, "caption": [f"caption of {r}" for r in rels]}).to_csv(tmp_path / "c.csv", index=False)
    WF.main(["--root", str(root), "--captions", str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"),
             "--name", "pets", "--test-fraction", "0.4"])
    assert ("left out 2 entries that are neither images (by extension) nor captioned, e.g. cat/more/, cat/notes.txt"
            in capsys.readouterr().out)
    train, test = (rows_of(tmp_path / "o" / f"pets_{s}.arrow") for s in ("train", "test"))
    assert json.loads((tmp_path / "o" / "pets_classes.json").read_text()) == ["cat", "dog", "emu"]
    assert sorted(r["image_id"] for r in train + test) == sorted(rels)
    assert all(r["label"] == ["cat", "dog", "emu"].index(r["image_id"].split("/")[0]) for r in train + test)
    assert Counter(r["label"] for r in test) == {0: 2, 1: 2, 2: 2}
    assert all(r["text"] == [f"caption of {r['image_id']}"] for r in train)


def test_folder_writer_presplit_tree_and_class_file(tmp_path):
    root = tmp_path / "tree"
    tr = image_folder(root / "train", ["b", "a"], per_class=3)
    te = image_folder(root / "test", ["b", "a"], per_class=1, prefix="t")
    keys = [f"train/{r}" for r in tr] + [f"test/{r}" for r in te]
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": k, "text": [k, "second caption"]} for k in keys])
    (tmp_path / "classes.txt").write_text("b\na\n")
    WF.main(["--root", str(root), "--captions", str(caps), "--out", str(tmp_path / "o"), "--name", "t",
             "--classes", str(tmp_path / "classes.txt")])
    train, test = (rows_of(tmp_path / "o" / f"t_{s}.arrow") for s in ("train", "test"))
    assert sorted(r["image_id"] for r in train) == sorted(keys[:6])
    assert sorted(r["image_id"] for r in test) == sorted(keys[6:])
    assert all(r["label"] == ["b", "a"].index(r["image_id"].split("/")[1]) for r in train + test)
    assert all(r["text"] == [r["image_id"], "second caption"] for r in train + test)


# ---------------------------------------------------------------- bad inputs
def _folder_case(tmp_path, bad):
    """A 2-class folder tree with one bad sample of kind ``bad``: (kwargs, argv, bad sample id, its file, samples)."""
    root = tmp_path / "raw"
    rels = image_folder(root, ["cat", "dog"], per_class=10)  # 2 test images a class: one may be skipped
    caps = {r: f"a photo {r}" for r in rels}
    victim = "dog/img_2.jpg"
    classes = None
    if bad == "corrupt_image":
        corrupt(root / victim)
    elif bad == "empty_caption":
        caps[victim] = "   "
    elif bad == "missing_caption":
        del caps[victim]
    elif bad == "missing_file":
        victim = "dog/img_99.jpg"  # captioned, never on disk
        caps[victim] = "a photo of nothing"
    elif bad == "unknown_class":
        victim = "eel/img_0.jpg"
        make_jpeg(root / victim)
        caps[victim] = "an eel"
        classes = tmp_path / "classes.txt"
        classes.write_text("cat\ndog\n")
    write_jsonl(tmp_path / "c.jsonl", [{"path": k, "caption": v} for k, v in caps.items()])
    kw = dict(root=root, captions=tmp_path / "c.jsonl", out=tmp_path / "out", name="x", classes=classes)
    argv = [f"--{k}={v}" for k, v in kw.items() if v is not None]
    return kw, argv, victim, str(root / victim), len(rels) + (bad in ("missing_file", "unknown_class"))


BAD = ["corrupt_image", "empty_caption", "missing_caption", "missing_file", "unknown_class"]


@pytest.mark.parametrize("bad", BAD)
def test_bad_sample_is_an_error_naming_sample_and_file(tmp_path, bad, capsys):
    kw, argv, victim, file, _ = _folder_case(tmp_path, bad)
    with pytest.raises(BadSampleError) as e:
        WF.write_folder(**kw)
    assert e.value.reason == bad and victim in str(e.value) and file in str(e.value)
    with pytest.raises(SystemExit) as ex:  # the command: exit status 1, message on stderr
        WF.main(argv)
    assert ex.value.code == 1
    err = capsys.readouterr().err
    assert victim in err and "--skip-bad" in err


@pytest.mark.parametrize("bad", BAD)
def test_skip_bad_counts_per_reason(tmp_path, bad, capsys):
    _, argv, victim, _, total = _folder_case(tmp_path, bad)
    WF.main(argv + ["--skip-bad"])
    out = capsys.readouterr().out
    assert "skipped 1 samples" in out and f"{bad} (" in out and victim in out
    ids = [r["image_id"] for s in ("train", "test") for r in rows_of(tmp_path / "out" / f"x_{s}.arrow")]
    assert victim not in ids and len(ids) == total - 1
    log = json.loads((tmp_path / "out" / "x_skipped.json").read_text())
    assert log["counts"] == {bad: 1} and log["samples"][0]["image_id"] == victim


def test_food101_bad_inputs_name_sample_and_file(tmp_path, capsys):
    raw = tmp_path / "raw"
    fx = food101_json(raw)
    split = json.loads((raw / "split.json").read_text())
    split["train"] += ["apple_pie_99.jpg", "ramen_0.jpg"]  # listed but absent; class outside class_idx.json
    make_jpeg(raw / "images" / "train" / "ramen" / "ramen_0.jpg")
    (raw / "split.json").write_text(json.dumps(split))
    texts = dict(fx["texts"], **{"apple_pie_99.jpg": "ghost", "ramen_0.jpg": "noodles"})
    del texts["beef_tartare_1.jpg"]  # no title
    (raw / "text.json").write_text(json.dumps(texts))
    corrupt(raw / "images" / "test" / "apple_pie" / "apple_pie_6.jpg")

    with pytest.raises(BadSampleError) as e:
        W101.write_food101(raw, tmp_path / "o")
    assert "beef_tartare_1.jpg" in str(e.value) and "split.json" in str(e.value)
    W101.main(["--root", str(raw), "--out", str(tmp_path / "o"), "--skip-bad"])
    out = capsys.readouterr().out
    log = json.loads((tmp_path / "o" / "food101_skipped.json").read_text())
    assert log["counts"] == {"missing_caption": 1, "missing_file": 1, "unknown_class": 1, "corrupt_image": 1}
    for name in ("beef_tartare_1.jpg", "apple_pie_99.jpg", "ramen_0.jpg", "apple_pie_6.jpg"):
        assert name in out
    assert len(rows_of(tmp_path / "o" / "food101_train.arrow")) == len(fx["splits"]["train"]) - 1


def test_imagenet_r_foreign_folder_is_unknown_class(tmp_path):
    root = tmp_path / "imagenet-r"
    rels = image_folder(root, [IMAGENET_R_WNIDS[5], "n99999999"], per_class=2)
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": r, "caption": "x"} for r in rels])
    with pytest.raises(BadSampleError, match="n99999999/img_0.jpg") as e:
        WIR.write_imagenet_r(root, caps, tmp_path / "o")
    assert e.value.reason == "unknown_class" and str(root) in str(e.value)


def test_command_line_errors_are_messages_not_tracebacks(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        WF.main(["--root", str(tmp_path / "absent"), "--captions", str(tmp_path / "c.jsonl"),
                 "--out", str(tmp_path / "out"), "--name", "x"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "absent" in err and "Traceback" not in err


def test_a_write_that_stops_leaves_the_dataset_written_before(tmp_path):
    """A re-write that stopped on a bad sample of its test split left its new train file beside the old test file,
    which could then share images; now the splits are swapped in together, and a split no longer made is removed."""
    root = tmp_path / "pets"  # train/ val/ test/ folders: the bad sample is in test, written after train
    rels = [f"{split}/{r}" for split in ("train", "val", "test")
            for r in image_folder(root / split, ["dog", "cat"], per_class=3, prefix=split)]
    caps = tmp_path / "c.csv"
    pd.DataFrame({"path": rels, "caption": [f"caption of {r}" for r in rels]}).to_csv(caps, index=False)
    out = tmp_path / "o"
    WF.write_folder(root, caps, out, "pets")
    before = {p.name: p.read_bytes() for p in out.glob("pets_*.arrow")}
    assert sorted(before) == ["pets_test.arrow", "pets_train.arrow", "pets_val.arrow"]
    pd.DataFrame({"path": rels + ["test/cat/ghost.jpg"],
                  "caption": ["new"] * (len(rels) + 1)}).to_csv(caps, index=False)
    with pytest.raises(BadSampleError, match="ghost.jpg"):
        WF.write_folder(root, caps, out, "pets")
    assert {p.name: p.read_bytes() for p in out.glob("pets_*.arrow")} == before
    assert not (out / ".pets.writing").exists()
    shutil.rmtree(root / "val")
    rels = [r for r in rels if not r.startswith("val/")]
    pd.DataFrame({"path": rels, "caption": ["new"] * len(rels)}).to_csv(caps, index=False)
    WF.write_folder(root, caps, out, "pets")  # no val split now: the old one goes
    assert sorted(p.name for p in out.glob("pets_*.arrow")) == ["pets_test.arrow", "pets_train.arrow"]


def test_a_caption_path_outside_the_image_folder_is_named_as_such(tmp_path):
    """A caption keyed '../x.jpg' or by an absolute path elsewhere was reported as an unknown class (None, '..')."""
    root = tmp_path / "pets"
    rels = image_folder(root, ["dog", "cat"], per_class=3)
    caps = tmp_path / "c.csv"
    outside = ["../elsewhere.jpg", str(tmp_path / "elsewhere.jpg")]
    pd.DataFrame({"path": rels + outside, "caption": ["a pet"] * (len(rels) + 2)}).to_csv(caps, index=False)
    with pytest.raises(BadSampleError, match=r"captioned path outside the image folder \(--root\) \(outside_root\)"):
        WF.write_folder(root, caps, tmp_path / "o", "pets", test_fraction=0.0)
    WF.write_folder(root, caps, tmp_path / "o", "pets", test_fraction=0.0, skip_bad=True)
    skipped = json.loads((tmp_path / "o" / "pets_skipped.json").read_text())
    assert skipped["counts"] == {"outside_root": 2}


# ---------------------------------------------------------------- entries that cannot be read, empty classes
def test_unreadable_entries_are_reported_as_such_and_counted(tmp_path, monkeypatch):
    """A directory named like an image, a symlink loop and a file without read permission: an error naming the
    kind (not a traceback), or with --skip-bad a count per kind; captioned or not."""
    import os

    from emmcil.data import writing as W

    root = tmp_path / "pets"
    rels = image_folder(root, ["dog", "cat"], per_class=3)
    (root / "dog" / "folder.jpg").mkdir()
    os.symlink("loop.jpg", root / "cat" / "loop.jpg")
    locked = root / "cat" / "img_0.jpg"
    real_access = os.access
    monkeypatch.setattr(W.os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": r, "caption": "a pet"} for r in rels + ["cat/loop.jpg"]])
    with pytest.raises(BadSampleError) as e:
        WF.write_folder(root, caps, tmp_path / "o", "pets")
    assert e.value.reason in {"is_directory", "symlink_loop", "no_permission"}
    # half of each class held out, so that both splits keep a sample of cat after its two bad entries are skipped
    WF.write_folder(root, caps, tmp_path / "o", "pets", skip_bad=True, test_fraction=0.5)
    skipped = json.loads((tmp_path / "o" / "pets_skipped.json").read_text())
    assert skipped["counts"] == {"is_directory": 1, "symlink_loop": 1, "no_permission": 1}
    assert {s["image_id"] for s in skipped["samples"]} == {"dog/folder.jpg", "cat/loop.jpg", "cat/img_0.jpg"}


def test_a_class_without_images_is_an_error_naming_it(tmp_path, capsys):
    """An empty class folder, or one whose every sample was skipped, stops the write; a folder that links back to
    the image root (a loop) is reported, not made a class."""
    import os

    root = tmp_path / "pets"
    rels = image_folder(root, ["dog", "cat"], per_class=3)
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": r, "caption": "a pet"} for r in rels])
    (root / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        WF.main(["--root", str(root), "--captions", str(caps), "--out", str(tmp_path / "o"), "--name", "pets",
                 "--skip-bad"])
    assert e.value.code == 1 and "'empty'" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*.arrow"))
    (root / "empty").rmdir()
    os.symlink(".", root / "loop")
    with pytest.raises(BadSampleError, match=r"sample 'loop/'.*which holds the class folders itself") as e:
        WF.write_folder(root, caps, tmp_path / "o", "pets")
    assert e.value.reason == "symlink_loop"
    WF.write_folder(root, caps, tmp_path / "o", "pets", skip_bad=True)
    assert json.loads((tmp_path / "o" / "pets_classes.json").read_text()) == ["cat", "dog"]


def test_readers_refuse_a_folder_that_a_stopped_write_left_half_moved(tmp_path, monkeypatch):
    """Every file of a write carries its id and the folder's {name}_write.json names the write being moved in: a
    writer stopped between two moves leaves a new train split beside an old test split, and readers refuse it."""
    import os

    from emmcil.data import writing as W
    from emmcil.data.arrow import ArrowFormatError, check_same_write
    from emmcil.data.dataset import ArrowDataset

    root = tmp_path / "pets"
    rels = image_folder(root, ["dog", "cat"], per_class=4)
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": r, "caption": "v1"} for r in rels])
    out = tmp_path / "o"
    paths = WF.write_folder(root, caps, out, "pets", test_fraction=0.5)
    ArrowDataset([paths["train"], paths["test"]], tokenizer=None, transform=None, max_text_len=8)
    old_test = paths["test"].read_bytes()
    write_jsonl(caps, [{"path": r, "caption": "v2"} for r in rels])
    class StopAfterTheFirstMove:  # the writer's os, whose replace (its moves into place) stops after one
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, a, b):
            os.replace(a, b)
            raise KeyboardInterrupt("stopped between two moves")

    monkeypatch.setattr(W, "os", StopAfterTheFirstMove())
    with pytest.raises(KeyboardInterrupt):
        WF.write_folder(root, caps, out, "pets", test_fraction=0.5)
    monkeypatch.undo()
    assert paths["test"].read_bytes() == old_test  # the old test split beside the new train split
    with pytest.raises(ArrowFormatError, match="pets_write.json names.*mixes two writes"):
        ArrowDataset(paths["test"], tokenizer=None, transform=None, max_text_len=8)
    ArrowDataset(paths["train"], tokenizer=None, transform=None, max_text_len=8)  # of the write named
    shutil.copy(paths["train"], tmp_path / "pets_train.arrow")  # the files alone, without the manifest
    shutil.copy(paths["test"], tmp_path / "pets_test.arrow")
    with pytest.raises(ArrowFormatError, match="different writes"):
        check_same_write([tmp_path / "pets_train.arrow", tmp_path / "pets_test.arrow"])
    WF.write_folder(root, caps, out, "pets", test_fraction=0.5)  # writing again mends it
    ArrowDataset([paths["train"], paths["test"]], tokenizer=None, transform=None, max_text_len=8)
# ---------------------------------------------------------------- split fractions, classes without a split
def _small_tree(tmp_path, sizes: dict[str, int]):
    """``raw/<class>/img_k.jpg`` with ``sizes[class]`` images, captioned; returns the writer's argv (without
    fractions) and an output folder holding an earlier write's files."""
    root = tmp_path / "raw"
    rels = []
    for cls, n in sizes.items():
        rels += image_folder(root, [cls], per_class=n, prefix=f"img_{cls}")
    write_jsonl(tmp_path / "c.jsonl", [{"path": r, "caption": f"a photo {r}"} for r in rels])
    out = tmp_path / "out"
    out.mkdir()
    for split in ("train", "test"):
        (out / f"x_{split}.arrow").write_bytes(b"an earlier write")
    return ["--root", str(root), "--captions", str(tmp_path / "c.jsonl"), "--out", str(out), "--name", "x"], out


@pytest.mark.parametrize("fractions,message", [
    (["--test-fraction", "0.6", "--val-fraction", "0.6"], r"--test-fraction 0.6 \+ --val-fraction 0.6 = 1.2: "),
    (["--test-fraction", "0.5", "--val-fraction", "0.5"], r"--test-fraction 0.5 \+ --val-fraction 0.5 = 1: "),
    (["--test-fraction", "-0.2"], r"--test-fraction -0.2: expected a share of each class's images in \[0, 1\)"),
    (["--test-fraction", "1.0"], r"--test-fraction 1.0: expected"),
    (["--val-fraction", "nan"], r"--val-fraction nan: expected"),
])
def test_split_fractions_that_leave_no_training_data_are_refused(tmp_path, capsys, fractions, message):
    """Each used to exit 0: 0.6 + 0.6 wrote val and test files only (and removed the earlier train file), -0.2 no
    test split. Now an error naming the options, and the earlier files are left as they were."""
    argv, out = _small_tree(tmp_path, {"cat": 12, "dog": 12})
    with pytest.raises(SystemExit) as e:
        WF.main(argv + fractions)
    assert e.value.code == 1 and __import__("re").search(message, capsys.readouterr().err)
    assert all((out / f"x_{s}.arrow").read_bytes() == b"an earlier write" for s in ("train", "test"))
    with pytest.raises(ValueError, match=r"--test-fraction 1.5"):
        WIR.write_imagenet_r(tmp_path / "raw", tmp_path / "c.jsonl", out, test_fraction=1.5)
    with pytest.raises(ValueError, match=r"--val-fraction -0.1"):
        W101.write_food101(tmp_path / "raw", out, val_fraction=-0.1)


def test_classes_left_without_a_train_or_test_sample_are_listed(tmp_path, capsys):
    """A class of 2 images gets round(0.4) = 0 test images and one of 1 image none either; with --test-fraction
    0.6 a 1-image class gets no training image. Every such class is listed in one error and nothing is written;
    --allow-incomplete-classes lists them and writes. No test split asked for: no test sample required."""
    argv, out = _small_tree(tmp_path, {"ant": 10, "bee": 2, "cow": 1})
    with pytest.raises(SystemExit) as e:
        WF.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "2 classes left without a sample in train or test:" in err
    assert "'bee' (label 1): 2 images -> train 2, test 0" in err
    assert "'cow' (label 2): 1 images -> train 1, test 0" in err
    assert "'ant'" not in err and "--allow-incomplete-classes" in err
    assert (out / "x_train.arrow").read_bytes() == b"an earlier write"  # nothing written

    WF.main(argv + ["--allow-incomplete-classes"])
    printed = capsys.readouterr().out
    assert "warning (--allow-incomplete-classes): 2 classes left without" in printed and "'bee'" in printed
    assert Counter(r["label"] for r in rows_of(out / "x_test.arrow")) == {0: 2}

    with pytest.raises(SystemExit):
        WF.main(argv + ["--test-fraction", "0.6"])
    assert "'cow' (label 2): 1 images -> train 0, test 1" in capsys.readouterr().err

    WF.main(argv + ["--test-fraction", "0"])  # a train split only, as asked: complete
    assert not (out / "x_test.arrow").exists() and len(rows_of(out / "x_train.arrow")) == 13
