"""The embedded demo set: deterministic, 10 classes, evidence in one region, captions that describe it."""
import io
import multiprocessing as mp
import os

import numpy as np
import pytest
from PIL import Image

from emmcil.data import demo as D
from emmcil.data.arrow import read_arrow, read_metadata


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return D.ensure_demo(tmp_path_factory.mktemp("demo"))


def test_two_generations_are_byte_identical(root, tmp_path):
    other = D.ensure_demo(tmp_path / "again")
    for split in ("train", "test"):
        assert (root / f"demo_{split}.arrow").read_bytes() == (other / f"demo_{split}.arrow").read_bytes()


def test_classes_and_counts(root):
    assert D.DEMO_NUM_CLASSES == len(D.DEMO_CLASSES) == len(set(D.DEMO_CLASSES)) == 10
    assert len({s for _, s in D.DEMO_SPECS}) == len({c for c, _ in D.DEMO_SPECS}) == 10  # form and colour unique
    for split, n in D.DEMO_PER_CLASS.items():
        labels = read_arrow(root / f"demo_{split}.arrow").column("label").to_numpy()
        assert np.array_equal(np.bincount(labels), [n] * D.DEMO_NUM_CLASSES)


def test_images_captions_and_boxes_mean_something(root):
    rows = read_arrow(root / "demo_train.arrow").to_pylist()
    sizes, inside, outside = set(), [], []
    for r in rows:
        img = np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB"), dtype=np.float32)
        sizes.add(img.shape[:2])
        colour, shape = D.DEMO_SPECS[r["label"]]
        words = r["text"][0].rstrip(".").replace(",", "").replace(";", "").split()
        assert 15 <= len(words) <= 25 and colour in words and shape in words
        x0, y0, x1, y1 = r["box"]
        h, w = img.shape[:2]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert 0.15 <= (x1 - x0) * (y1 - y0) / (h * w) <= 0.35
        # pixels close to the class colour concentrate in the box
        near = np.linalg.norm(img - np.array(D._COLOURS[colour]), axis=-1) < 40
        box = np.zeros_like(near)
        box[y0:y1, x0:x1] = True
        inside.append(near[box].mean())
        outside.append(near[~box].mean())
    assert sizes == set(D.DEMO_IMAGE_SIZES)
    assert np.mean(inside) > 0.3 and np.mean(outside) < 0.05


def test_regenerates_missing_or_stale_files_and_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EMMCIL_DATA", str(tmp_path / "data"))
    root = D.ensure_demo()
    assert root == tmp_path / "data" / "demo"
    train = root / "demo_train.arrow"
    reference = train.read_bytes()
    train.unlink()
    D.ensure_demo()
    assert train.read_bytes() == reference
    with monkeypatch.context() as m:
        m.setattr(D, "DEMO_VERSION", "0-old")
        train.unlink()
        D.ensure_demo()
    assert read_metadata(train)["emmcil_demo_version"] == "0-old"
    D.ensure_demo()  # stale -> rewritten with the current version
    assert read_metadata(train)["emmcil_demo_version"] == D.DEMO_VERSION and train.read_bytes() == reference


def _call(root):
    D.ensure_demo(root)


def test_concurrent_first_use(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_call, args=(tmp_path,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(os.listdir(tmp_path)) == ["demo_test.arrow", "demo_train.arrow"]  # no temporaries left
    assert len(read_arrow(tmp_path / "demo_train.arrow")) == 10 * D.DEMO_PER_CLASS["train"]
