"""The memory browser: what each phase saves (emmcil.memory.snapshot), the pages written from it
(python -m emmcil.report.memory), torch-free, with clear errors for runs it cannot show, and the demo's page drawn by
headless Chromium with every exemplar's image on screen and the kept words in red."""
import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image

from emmcil.data import ensure_demo
from emmcil.data.transforms import normalize_uint8
from emmcil.engine.driver import run_experiment
from emmcil.memory import snapshot
from emmcil.memory.buffer import MemoryBuffer
from emmcil.memory.exemplar import CimExemplar, Exemplar, JpegExemplar
from emmcil.report import memory as browser
from run_helpers import demo_config, one_thread, report_in_a_fresh_process

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
ROOT = Path(__file__).resolve().parents[1]
P = 16


def make_item(h=4, w=5, label=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = normalize_uint8(torch.randint(0, 256, (3, h * P, w * P), generator=g, dtype=torch.uint8))
    ids = torch.zeros(12, dtype=torch.long)
    ids[:8] = torch.tensor([101, 11, 12, 13, 14, 15, 16, 102])  # [CLS], 6 words, [SEP]
    return {"image": image, "text_ids": ids, "text_masks": (ids > 0).long(), "label": label, "index": seed,
            "image_id": f"s{seed}"}


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------- what a phase saves
def test_the_browser_reads_the_layout_the_phases_write():
    assert (browser.FOLDER, browser.MANIFEST, browser.FORMAT) == (snapshot.FOLDER, snapshot.MANIFEST,
                                                                   snapshot.FORMAT)


def test_each_kind_is_shown_as_stored():
    item = make_item()
    pixels = np.asarray((item["image"] * 0.5 + 0.5).mul(255).round().byte().permute(1, 2, 0))
    keep = torch.zeros(4, 5, dtype=torch.bool)
    keep[1:3, 1:4] = True
    # a masked exemplar: its kept patches exactly, every discarded cell dark (nothing is stored there)
    data, suffix, size = snapshot.stored_image_file(Exemplar.from_item(item, P, patch_keep=keep))
    shown, cells = decode(data), np.kron(keep.numpy(), np.ones((P, P), dtype=bool))
    assert suffix == ".png" and size == (64, 80) and shown.shape == (64, 80, 3)
    assert (shown[cells] == pixels[cells]).all() and (shown[~cells] == snapshot.DISCARDED_RGB).all()
    # CIM: the background as stored (downsampled, blown up with nearest neighbours), the box at full resolution
    cim = CimExemplar.from_item(item, P, keep, compress_ratio=4.0)
    data, suffix, _ = snapshot.stored_image_file(cim)
    assert suffix == ".png" and (decode(data) == cim.image_uint8().permute(1, 2, 0).numpy()).all()
    assert not (decode(data)[~cells] == pixels[~cells]).all()  # the background is not the original's
    # MRDC: the stored JPEG file itself, byte for byte; a PNG it kept instead stays that PNG
    stored = Image.fromarray(pixels)
    jpeg = JpegExemplar.from_image(item, stored, 10**6, P, quality=50)
    data, suffix, size = snapshot.stored_image_file(jpeg)
    assert (data, suffix, size) == (jpeg.jpeg.numpy().tobytes(), ".jpg", (64, 80))
    buf = io.BytesIO()
    Image.new("RGB", (80, 64), (200, 30, 30)).save(buf, format="PNG")
    kept = JpegExemplar.from_image(item, Image.open(io.BytesIO(buf.getvalue())), len(buf.getvalue()), P, 50,
                                   smaller=buf.getvalue())
    assert snapshot.stored_image_file(kept)[:2] == (buf.getvalue(), ".png")


@pytest.mark.parametrize("unit", ["tokens", "byte_share", "bytes"])
def test_a_record_costs_what_the_buffer_charges_in_the_runs_unit(unit):
    keep = torch.zeros(4, 5, dtype=torch.bool)
    keep[:2] = True
    ex = Exemplar.from_item(make_item(), P, patch_keep=keep, token_keep=torch.tensor([1, 1, 0, 1] + [0] * 3 + [1]
                                                                                    + [0] * 4, dtype=torch.bool))
    buffer = MemoryBuffer(unit=unit, full_exemplar_bytes=1000.0)
    rec = snapshot.exemplar_record(ex, buffer, tokens=["[CLS]", "a", "b", "c", "d", "e", "f", "[SEP]"],
                                   token_kept=[1, 1, 0, 1, 0, 0, 0, 1], rank=2, candidates=9, similarity=0.5,
                                   attention=torch.full((4, 5), 0.25))
    assert rec["cost"] == ex.cost(unit) == ex.costs[unit] and rec["unit"] == unit
    assert rec["costs"] == ex.costs and rec["nbytes"] == ex.nbytes and rec["patch_share"] == 0.5
    assert rec["word_share"] == 2 / 6 and rec["num_tokens"] == 4 and rec["grid"] == [4, 5]
    assert rec["attention"] == [[0.25] * 5] * 4 and (rec["rank"], rec["candidates"]) == (2, 9)
    json.dumps(rec)  # JSON types only


def test_captions_and_costs_as_the_page_writes_them():
    text = browser.caption_html(["[CLS]", "a", "red", "tri", "##angle", "<b>", "and", "[SEP]"],
                                [True, False, True, True, False, True, True, True])
    assert text == ('<span class="s">[CLS]</span> <span class="d">a</span> <span class="k">red tri</span>'
                    '<span class="d">angle</span> <span class="k">&lt;b&gt; and</span> <span class="s">[SEP]</span>')
    assert browser.format_cost(0.31415, "tokens") == "0.314\u00a0full\u00a0ex."
    assert browser.format_cost(3 * 2**20, "bytes") == "3.0 MB"
    assert browser.format_cost(0.25, "tokens") == browser.format_cost(0.25, "byte_share") == "0.250\u00a0full\u00a0ex."
    assert browser.format_cost(0.25, "pages") == "0.25 pages"  # a unit this browser does not know yet


# ---------------------------------------------------------------------------------------------- the demo's runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``demo emm`` and ``demo replay`` at 1 full exemplar a class (so the page fits one screenshot), and a phase
    of ``replay`` with memory_browser=False."""
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    logs = tmp_path_factory.mktemp("runs")
    with one_thread():
        made = {m: run_experiment(demo_config(root, logs, m, memory_per_class=1)) for m in ("emm", "replay")}
        made["off"] = run_experiment(demo_config(root, logs, "replay", memory_browser=False, stop_after_phase=0,
                                                 exp_name="off"))
    return made


@pytest.fixture(scope="module")
def pages(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser")
    assert browser.main([str(runs["emm"]), str(runs["replay"]), "--out", str(out)]) == 0
    return out


def cards(page: str, run: int) -> list[str]:
    return re.findall(rf'<article class="ex" data-run="{run}".*?</article>', page)


def test_the_page_shows_every_exemplar_after_the_last_phase(runs, pages):
    last = len(json.loads((runs["emm"] / "results.json").read_text())["memory"]) - 1
    page = (pages / f"phase_{last}.html").read_text()
    for k, name in enumerate(("emm", "replay")):
        memory = json.loads((runs[name] / "results.json").read_text())["memory"][last]
        shown = cards(page, k)
        assert len(shown) == memory["exemplars"] > 0, name
        assert page.count('id="class-') == len(memory["exemplars_per_class"]) == 10
        for card in shown:  # its image, which is beside the page, its caption, its cost and rank
            src = re.search(r'<img class="stored" src="([^"]+)"', card).group(1)
            assert (pages / unquote(html.unescape(src))).is_file(), src
            assert 'class="cap"' in card and "\u00a0full\u00a0ex.</span><br>" in card
            assert re.search(r"rank \d+/30", card)
            assert "in the other units: byte_share: " in card  # the cost in every unit, on hovering
    emm, replay = cards(page, 0), cards(page, 1)
    assert all('class="attn"' in c and 'class="k"' in c and 'class="d"' in c for c in emm)  # map, red and gray words
    assert all('data-patch-share="1.000000"' in c and 'class="d"' not in c and 'class="attn"' not in c
               for c in replay)                                                                  # full exemplars
    assert all('data-patch-share="1.000000"' not in c for c in emm)
    assert "<script" not in page and "http" not in page  # nothing to run, nothing to fetch
    assert page.count('loading="lazy"') == len(emm) * 2 + len(replay)
    index = (pages / "index.html").read_text()
    assert 'class="n bad"' not in index and index.count('href="phase_1.html"') >= 2  # counts agree with results.json


def test_a_phase_of_many_classes_takes_several_pages(runs, tmp_path):
    """--classes-per-page 4: the 10 classes of the last phase on 3 pages, every exemplar on one of them, and every
    page's class list pointing at the page that holds the class."""
    assert browser.main([str(runs["emm"]), "--out", str(tmp_path), "--classes-per-page", "4"]) == 0
    pages = [tmp_path / "phase_1.html", tmp_path / "phase_1_2.html", tmp_path / "phase_1_3.html"]
    texts = [p.read_text() for p in pages]
    assert [t.count('<section class="cls"') for t in texts] == [4, 4, 2]
    memory = json.loads((runs["emm"] / "results.json").read_text())["memory"][-1]
    assert sum(len(cards(t, 0)) for t in texts) == memory["exemplars"]
    for name, text in zip(("phase_1.html", "phase_1_2.html", "phase_1_3.html"), texts):
        for target, c in re.findall(r'<a href="([^"#]*)#class-(\d+)"', text):
            assert f'id="class-{c}"' in (text if not target else (tmp_path / target).read_text()), (name, c)
    assert not (tmp_path / "phase_1_4.html").exists() and (tmp_path / "phase_0_2.html").is_file()


def test_each_phase_saved_ranks_similarities_and_captions(runs):
    for name in ("emm", "replay"):
        results = json.loads((runs[name] / "results.json").read_text())
        for t, memory in enumerate(results["memory"]):
            manifest = json.loads((runs[name] / "memory" / f"phase_{t}" / "memory.json").read_text())
            assert {c: len(v) for c, v in manifest["classes"].items()} == memory["exemplars_per_class"]
            assert manifest["unit"] == memory["unit"] and manifest["class_budget"] == memory["class_budget"]
            new = manifest["exemplars"]
            assert {r["label"] for r in new} == set(manifest["new_classes"])
            for c in manifest["new_classes"]:
                recs = [r for r in new if r["label"] == c]
                assert [r["index"] for r in recs] == manifest["classes"][str(c)]  # stored order
                ranks = [r["rank"] for r in recs]
                assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
                if name == "replay":
                    assert ranks == [1] and recs[0]["cost"] == 1.0 and recs[0]["input_image"] is None
                else:  # ranked by cos(f(x~), mu_c): the similarity falls with the rank
                    sims = [r["similarity"] for r in recs]
                    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
                    assert sum(r["cost"] for r in recs) <= 1.0
            for r in new:
                assert (runs[name] / "memory" / f"phase_{t}" / r["stored_image"]).is_file()
                assert len(r["tokens"]) == len(r["token_kept"]) and r["tokens"][0] == "[CLS]"
                assert sum(r["token_kept"]) == r["num_tokens"]
                if name == "emm":
                    assert len(r["attention"]) == r["grid"][0] and len(r["attention"][0]) == r["grid"][1]


def test_runs_it_cannot_show_get_a_clear_message(runs, tmp_path, capsys):
    old = tmp_path / "old_run"
    shutil.copytree(runs["replay"], old, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    shutil.rmtree(old / "memory")  # as a run made before the phases saved the browser's files
    cases = {old: "made before the phases saved what the browser shows", runs["off"]: "memory_browser=False"}
    for run, message in cases.items():
        assert browser.main([str(run), "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {run}: ") and message in err and "restart=True" in err, err
    assert browser.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no results.json" in capsys.readouterr().err
    finetune = tmp_path / "finetune"
    finetune.mkdir()
    results = json.loads((runs["off"] / "results.json").read_text())
    (finetune / "results.json").write_text(json.dumps({**results, "method": "finetune", "memory": [None]}))
    assert browser.main([str(finetune), "--out", str(tmp_path / "out")]) == 1
    assert "'finetune' keeps no memory" in capsys.readouterr().err


def test_a_run_whose_first_phase_saved_nothing_shows_the_rest(runs, tmp_path, capsys):
    """As a run resumed after the browser arrived: phase 0 saved nothing, so its classes show as counted but not
    drawn on phase 1's page, and a note says why."""
    run = tmp_path / "resumed"
    shutil.copytree(runs["emm"], run, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    shutil.rmtree(run / "memory" / "phase_0")
    assert browser.main([str(run), "--out", str(tmp_path / "out")]) == 0
    assert "phases [0] saved nothing for the browser" in capsys.readouterr().err
    page = (tmp_path / "out" / "phase_1.html").read_text()
    manifest = json.loads((run / "memory" / "phase_1" / "memory.json").read_text())
    missing = sum(len(v) for c, v in manifest["classes"].items() if int(c) not in manifest["new_classes"])
    stored = json.loads((run / "results.json").read_text())["memory"][-1]["exemplars"]
    assert missing and len(cards(page, 0)) + missing == stored
    assert page.count("saved before the browser, not shown") == len(manifest["classes"]) - len(
        manifest["new_classes"])
    # the totals of a class and of the phase are results.json's, not the short sums of the exemplars shown
    memory = json.loads((run / "results.json").read_text())["memory"][1]
    order = json.loads((run / "class_order.json").read_text())["class_order"]
    old = next(c for c in manifest["classes"] if int(c) not in manifest["new_classes"])
    section = page[page.index(f'id="class-{order[int(old)]}"'):]
    assert f"cost {browser.format_cost(memory['cost_per_class'][old], memory['unit'])}" in section[:3000]
    assert f"<td class=n>{browser.format_cost(memory['cost'], memory['unit'])}</td>" in page
    index = (tmp_path / "out" / "index.html").read_text()
    assert '<td class="n bad">' in index  # the phase whose exemplars are not all shown is marked
    assert not (tmp_path / "out" / "phase_0.html").exists()


def test_the_browser_imports_no_torch(runs, tmp_path):
    code, imported, output = report_in_a_fresh_process(str(runs["emm"]), "--out", str(tmp_path / "b"),
                                                       module="emmcil.report.memory")
    assert code == 0 and not imported, output
    assert "memory browser: file://" in output and (tmp_path / "b" / "index.html").is_file()


# ---------------------------------------------------------------------------------------------- in a real browser
def colour_mask(rgb: np.ndarray, colour) -> np.ndarray:
    """Pixels of ``colour`` (#rrggbb or (r, g, b)), within 2 of each channel."""
    target = [int(colour[i:i + 2], 16) for i in (1, 3, 5)] if isinstance(colour, str) else colour
    return np.logical_and.reduce([np.abs(rgb[..., c].astype(np.int16) - target[c]) <= 2 for c in range(3)])


def extent(line: np.ndarray) -> int:
    """How many True values ``line`` starts with."""
    return int(line.argmin()) if not line.all() else len(line)


def framed(rgb: np.ndarray, colour: str, min_side: int = 24) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of every rectangle framed in ``colour`` at least ``min_side`` wide and high: its
    outer top-left corner starts a run of frame pixels rightwards and downwards."""
    mask = colour_mask(rgb, colour)
    free_left = ~np.pad(mask, ((0, 0), (1, 0)))[:, :-1]
    free_above = ~np.pad(mask, ((1, 0), (0, 0)))[:-1]
    boxes = []
    for y, x in zip(*(mask & free_left & free_above).nonzero()):
        h, w = extent(mask[y:, x]), extent(mask[y, x:])
        if h >= min_side and w >= min_side:
            boxes.append((int(y), int(x), h, w))
    return boxes


def non_blank(rgb: np.ndarray, box: tuple[int, int, int, int], frame: int = 2) -> bool:
    """An image inside the frame: varied pixels, not mostly the page's white (an image that did not load shows
    white, or a small icon on white)."""
    y, x, h, w = box
    inner = rgb[y + frame:y + h - frame, x + frame:x + w - frame].reshape(-1, 3).astype(np.float64)
    white = (inner.min(1) >= 245).mean()
    return inner.std(0).max() > 8 and white < 0.5


def test_the_demo_page_in_headless_chromium(runs, pages, tmp_path):
    """The last phase's page, emm beside replay, as Chromium draws it: one framed, non-blank image tile per stored
    exemplar, one attention map per masked one, the kept words in red and the discarded ones in gray."""
    if not (os.environ.get("CHROMIUM") or any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome")))):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package before the tests")
        pytest.skip("needs Chromium: apt-get install -y chromium (.ci/run installs it)")
    last = len(json.loads((runs["emm"] / "results.json").read_text())["memory"]) - 1
    page = (pages / f"phase_{last}.html").read_text()
    n_emm, n_replay = len(cards(page, 0)), len(cards(page, 1))
    shot = tmp_path / "page.png"
    subprocess.run(["bash", str(ROOT / "scripts" / "screenshot.sh"), str(pages / f"phase_{last}.html"), str(shot),
                    "1600", "4400"], check=True, timeout=120)
    rgb = np.asarray(Image.open(shot).convert("RGB"))
    assert colour_mask(rgb, browser.END_BAR).sum(1).max() > 1000, "the page grew taller than the window"
    stored, maps = framed(rgb, browser.STORED_FRAME), framed(rgb, browser.MAP_FRAME)
    assert len(stored) == n_emm + n_replay and len(maps) == n_emm, (len(stored), len(maps), n_emm, n_replay)
    assert all(non_blank(rgb, box) for box in stored + maps)
    # the words, outside the image tiles (a demo image may hold red or gray): Fig. 4's red and gray
    text = np.ones(rgb.shape[:2], dtype=bool)
    for y, x, h, w in stored + maps:
        text[y:y + h, x:x + w] = False
    red, gray = colour_mask(rgb, browser.KEPT) & text, colour_mask(rgb, browser.DISCARDED) & text
    assert red.sum() > 50 * n_emm and gray.sum() > 20 * n_emm, (red.sum(), gray.sum())
