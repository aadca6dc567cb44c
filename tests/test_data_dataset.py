"""ArrowDataset items, collate batches and missing-modality tables, end to end from a writer."""
import pickle

import numpy as np
import pytest
import torch
from data_helpers import image_folder, write_jsonl
from torch.utils.data import DataLoader

from emmcil.data import (ArrowDataset, CorruptImageError, MissingTable, collate, get_tokenizer, pixelbert_transform,
                         write_arrow)
from emmcil.data.arrow import ArrowFormatError, read_arrow
from emmcil.data.missing import IMAGE_MISSING, NONE, TEXT_MISSING
from emmcil.data.write_folder import write_folder

T = 24


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A folder set written by the generic writer: 3 classes x 6 images of 3 widths, captions of varied length."""
    tmp = tmp_path_factory.mktemp("set")
    rels = image_folder(tmp / "raw", ["ant", "bee", "cow"], per_class=6)
    caps = {r: "a small " + " ".join(["bug"] * (i % 5)) + f" number {i}" for i, r in enumerate(rels)}
    write_jsonl(tmp / "c.jsonl", [{"path": k, "caption": v} for k, v in caps.items()])
    paths = write_folder(tmp / "raw", tmp / "c.jsonl", tmp / "out", "toy", test_fraction=0.5)
    return paths, caps


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def make(paths, tok, **kw):
    return ArrowDataset(paths, tok, pixelbert_transform(size=32, size_divisor=16), max_text_len=T, **kw)


def test_item_fields(written, tok):
    paths, caps = written
    ds = make(paths["train"], tok)
    table = read_arrow(paths["train"]).to_pylist()
    assert len(ds) == len(table)
    for i in (0, len(ds) - 1):
        item = ds[i]
        row = table[i]
        assert item["label"] == row["label"] and item["index"] == i and item["image_id"] == row["image_id"]
        assert item["raw_text"] == caps[row["image_id"]] and item["missing_type"] == NONE
        assert item["image"].dtype == torch.float32 and item["image"].shape[0] == 3
        assert item["image"].shape[1] % 16 == 0 and item["image"].shape[2] % 16 == 0
        assert item["text_ids"].shape == item["text_masks"].shape == (T,)
        assert item["text_ids"].dtype == item["text_masks"].dtype == torch.long
        n = int(item["text_masks"].sum())
        assert item["text_ids"][0] == 101 and item["text_ids"][n - 1] == 102 and not item["text_ids"][n:].any()
        assert tok.decode(item["text_ids"][1:n - 1]) == item["raw_text"]


def test_labels_come_from_the_column_without_decoding(written, tok, monkeypatch):
    ds = make(written[0]["train"], tok)
    monkeypatch.setattr(ArrowDataset, "load_image", lambda *a: pytest.fail("decoded an image"))
    expected = np.array(read_arrow(written[0]["train"]).column("label").to_pylist())
    assert isinstance(ds.labels, np.ndarray) and np.array_equal(ds.labels, expected)


def test_collate_pads_bottom_right_with_masks(written, tok):
    ds = make(written[0]["train"], tok)
    items = [ds[i] for i in range(len(ds))]
    assert len({it["image"].shape for it in items}) > 1  # the fixture mixes sizes
    b = collate(items)
    B = len(items)
    hmax = max(it["image"].shape[1] for it in items)
    wmax = max(it["image"].shape[2] for it in items)
    assert b["images"].shape == (B, 3, hmax, wmax) and b["pixel_masks"].shape == (B, hmax, wmax)
    assert b["pixel_masks"].dtype == torch.bool
    for i, it in enumerate(items):
        h, w = it["image"].shape[1:]
        assert torch.equal(b["images"][i, :, :h, :w], it["image"])
        assert b["pixel_masks"][i, :h, :w].all() and int(b["pixel_masks"][i].sum()) == h * w
        assert not b["images"][i, :, h:].any() and not b["images"][i, :, :, w:].any()
    assert b["text_ids"].shape == b["text_masks"].shape == (B, T)
    for key, field in (("labels", "label"), ("indices", "index"), ("missing_types", "missing_type")):
        assert b[key].dtype == torch.long and b[key].tolist() == [it[field] for it in items]
    assert b["image_ids"] == [it["image_id"] for it in items]


def test_collate_refuses_mixed_items(written, tok):
    ds = make(written[0]["train"], tok)
    a, b = ds[0], dict(ds[1], extra=1)
    with pytest.raises(ValueError, match="different keys"):
        collate([a, b])


def test_several_files_and_dataloader_workers(written, tok):
    paths = [written[0]["train"], written[0]["test"]]
    ds = make(paths, tok)
    n_train = len(make(paths[0], tok))
    assert len(ds) == n_train + len(make(paths[1], tok))
    assert ds.file_of(n_train - 1) == paths[0] and ds.file_of(n_train) == paths[1]
    assert ds[n_train]["image_id"] == read_arrow(paths[1]).column("image_id")[0].as_py()
    clone = pickle.loads(pickle.dumps(ds))  # what spawn-started DataLoader workers receive
    assert clone._tables is None and torch.equal(clone[n_train]["image"], ds[n_train]["image"])
    batches = list(DataLoader(ds, batch_size=5, collate_fn=collate, num_workers=0))
    assert torch.equal(torch.cat([b["indices"] for b in batches]), torch.arange(len(ds)))


def test_corrupt_image_names_sample_index_and_file(tmp_path, tok):
    image_folder(tmp_path / "raw", ["a"], per_class=1)
    data = next((tmp_path / "raw" / "a").iterdir()).read_bytes()
    rows = [{"image": data, "text": ["ok"], "label": 0, "image_id": "fine.jpg", "split": "train"},
            {"image": data[:200], "text": ["broken"], "label": 0, "image_id": "broken.jpg", "split": "train"}]
    path = write_arrow(rows, tmp_path / "t_train.arrow")
    ds = make(path, tok)
    assert ds[0]["image_id"] == "fine.jpg"
    with pytest.raises(CorruptImageError, match=r"'broken\.jpg' \(index 1\) in .*t_train\.arrow"):
        ds[1]


def test_unreadable_headers_and_empty_captions_are_found_before_any_training(tmp_path, tok):
    """A run reads every image header when it builds its data (build_data): all the samples whose header does not
    parse are counted and the first named, instead of the first one stopping a phase that drew it, maybe after
    other phases trained. A row without caption is an error when the file is opened."""
    image_folder(tmp_path / "raw", ["a"], per_class=1)
    data = next((tmp_path / "raw" / "a").iterdir()).read_bytes()
    rows = [{"image": data, "text": ["ok"], "label": 0, "image_id": "fine.jpg", "split": "test"},
            {"image": b"<html>", "text": ["x"], "label": 0, "image_id": "page.jpg", "split": "test"},
            {"image": b"", "text": ["y"], "label": 0, "image_id": "empty.jpg", "split": "test"}]
    ds = make(write_arrow(rows, tmp_path / "t_test.arrow"), tok)
    with pytest.raises(CorruptImageError, match=r"header of 2 samples: 'page\.jpg' \(index 1\) in .*t_test\.arrow: "
                                                r".*; 'empty\.jpg' \(index 2\)"):
        ds.image_sizes()
    rows[1] = dict(rows[0], text=[], image_id="silent.jpg")
    with pytest.raises(ArrowFormatError, match=r"1 samples have no caption .* 'silent\.jpg' \(index 1\) in "):
        make(write_arrow(rows[:2], tmp_path / "u_test.arrow"), tok)


def test_text_index_selects_a_caption(tmp_path, tok):
    image_folder(tmp_path / "raw", ["a"], per_class=1)
    data = next((tmp_path / "raw" / "a").iterdir()).read_bytes()
    path = write_arrow([{"image": data, "text": ["first one", "second one"], "label": 0, "image_id": "i",
                         "split": "train"}], tmp_path / "t_train.arrow")
    assert make(path, tok)[0]["raw_text"] == "first one"
    assert make(path, tok, text_index=1)[0]["raw_text"] == "second one"
    with pytest.raises(IndexError, match="2 caption"):
        make(path, tok, text_index=2)[0]


# ---------------------------------------------------------------- missing modality
@pytest.mark.parametrize("kind", ["text", "image", "both"])
def test_missing_table_reproducible_and_seed_dependent(kind):
    a = MissingTable.build(1000, kind, 0.7, seed=0)
    assert np.array_equal(a.codes, MissingTable.build(1000, kind, 0.7, seed=0).codes)
    assert not np.array_equal(a.codes, MissingTable.build(1000, kind, 0.7, seed=1).codes)
    counts = np.bincount(a.codes, minlength=3)
    assert counts[NONE] == 300
    if kind == "text":
        assert counts[TEXT_MISSING] == 700 and counts[IMAGE_MISSING] == 0
    elif kind == "image":
        assert counts[IMAGE_MISSING] == 700 and counts[TEXT_MISSING] == 0
    else:
        assert counts[IMAGE_MISSING] == 350 and counts[TEXT_MISSING] == 350


def test_missing_table_save_load_keyed_by_seed_and_ratio(tmp_path):
    t = MissingTable.build(50, "both", 0.4, seed=3, both_ratio=0.25)
    path = t.save(tmp_path, "toy_test")
    assert "r0.4" in path.name and "s3" in path.name and "both" in path.name
    back = MissingTable.load(path)
    assert np.array_equal(back.codes, t.codes) and (back.seed, back.ratio, back.both_ratio) == (3, 0.4, 0.25)
    other = MissingTable.build(50, "both", 0.4, seed=4, both_ratio=0.25)
    assert other.save(tmp_path, "toy_test") != path  # keyed by the seed: a second table does not overwrite it


def test_missing_modalities_reach_the_items(written, tok):
    path = written[0]["train"]
    n = len(make(path, tok))
    table = MissingTable.build(n, "both", 1.0, seed=0)
    ds, full = make(path, tok, missing=table), make(path, tok)
    seen = set()
    for i in range(n):
        item, ref = ds[i], full[i]
        assert item["missing_type"] == table[i]
        seen.add(table[i])
        if table[i] == TEXT_MISSING:
            assert item["raw_text"] == "" and item["text_ids"][:3].tolist() == [101, 102, 0]
            assert int(item["text_masks"].sum()) == 2 and torch.equal(item["image"], ref["image"])
        else:  # white image of the real image's size, text intact
            assert item["image"].shape == ref["image"].shape and torch.all(item["image"] == 1.0)
            assert item["raw_text"] == ref["raw_text"] and torch.equal(item["text_ids"], ref["text_ids"])
    assert seen == {TEXT_MISSING, IMAGE_MISSING}
    assert collate([ds[i] for i in range(n)])["missing_types"].tolist() == table.codes.tolist()
    with pytest.raises(ValueError, match="codes"):
        make(path, tok, missing=MissingTable.build(n + 1, "text", 0.5, 0))


def test_fingerprint_names_the_content_not_the_place(written, tmp_path, tok):
    """A copy elsewhere has the same fingerprint; the same folder written with images stored resized, or with one
    caption changed, another (what a run checks before it resumes)."""
    import shutil

    from emmcil.data.resize import StoredResize

    paths, caps = written
    src = paths["train"].parent
    shutil.copytree(src, tmp_path / "copy")
    same = make(tmp_path / "copy" / paths["train"].name, tok).fingerprint()
    assert same == make(paths["train"], tok).fingerprint() and len(same) == 32
    raw, jsonl = src.parent / "raw", src.parent / "c.jsonl"
    resized = write_folder(raw, jsonl, tmp_path / "resized", "toy", test_fraction=0.5, resize=StoredResize(32, 16))
    assert make(resized["train"], tok).fingerprint() != same
    lines = jsonl.read_text().splitlines()
    (tmp_path / "edited.jsonl").write_text("\n".join([lines[0].replace("a small", "a tiny")] + lines[1:]) + "\n")
    edited = write_folder(raw, tmp_path / "edited.jsonl", tmp_path / "edited", "toy", test_fraction=0.5)
    changed = [make(edited[s], tok).fingerprint() != make(paths[s], tok).fingerprint() for s in ("train", "test")]
    assert sorted(changed) == [False, True]  # the split holding the edited caption, and only that one
