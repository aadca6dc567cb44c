"""scripts/prepare_*.sh: the commands a dry run prints, and real runs on small fixtures in the raw layouts."""
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from data_helpers import FOOD_CLASSES, corrupt, food101_csv, food101_json, image_folder, write_jsonl

from emmcil.data.arrow import read_arrow
from emmcil.data.imagenet_r_classes import IMAGENET_R_WNIDS, WNID_TO_LABEL

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(name: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` with bash in ``cwd``; ``env`` adds variables (the defaults are cleared first)."""
    base = {k: v for k, v in os.environ.items() if k not in {
        "RAW", "OUT", "LAYOUT", "SEED", "VAL_FRACTION", "SKIP_BAD", "NAME", "DRY_RUN", "TAR", "IMAGES", "CAPTIONS",
        "INSTRUCTBLIP", "TEST_FRACTION", "DEVICE", "DTYPE", "BATCH_SIZE", "NUM_BEAMS", "MAX_NEW_TOKENS", "PROMPT",
        "STEPS", "RESIZE"}}
    base["PYTHON"] = sys.executable
    return subprocess.run(["bash", str(SCRIPTS / name)], cwd=cwd, env={**base, **env}, capture_output=True,
                          text=True, timeout=60)


def commands(out: str) -> list[list[str]]:
    """The argv of every printed command (dry-run stdout: one shell-quoted command a line)."""
    return [shlex.split(line) for line in out.splitlines() if line.strip() and not line.startswith("#")]


def options(argv: list[str]) -> dict[str, str | bool]:
    """``--key value`` / ``--flag`` pairs of an argv."""
    opts, i = {}, 0
    while i < len(argv):
        if argv[i].startswith("--"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                opts[argv[i]] = argv[i + 1]
                i += 2
                continue
            opts[argv[i]] = True
        i += 1
    return opts


def module_of(argv: list[str]) -> str:
    return argv[argv.index("-m") + 1]


# ---------------------------------------------------------------- dry runs
def test_food101_dry_run_prints_the_writer_command_and_runs_nothing(tmp_path):
    out = tmp_path / "arrow dir"  # a space: the printed command must quote it
    p = run_script("prepare_food101.sh", tmp_path, DRY_RUN="1", RAW=str(tmp_path / "no_such_raw"), OUT=str(out),
                   SEED="7", SKIP_BAD="1", RESIZE="384")
    assert p.returncode == 0, p.stderr
    (argv,) = commands(p.stdout)
    assert argv[0] == sys.executable and module_of(argv) == "emmcil.data.write_food101"
    opts = options(argv)
    assert opts["--root"] == str(tmp_path / "no_such_raw")
    assert opts["--out"] == str(out)
    assert opts["--seed"] == "7" and opts["--layout"] == "auto" and opts["--name"] == "food101"
    assert opts["--skip-bad"] is True and opts["--resize"] == "384"
    assert "not found" in p.stderr  # the missing raw folder is only a note in a dry run
    assert not out.exists()


def test_food101_dry_run_defaults(tmp_path):
    p = run_script("prepare_food101.sh", tmp_path, DRY_RUN="1")
    assert p.returncode == 0, p.stderr
    (argv,) = commands(p.stdout)
    opts = options(argv)
    assert opts["--root"] == "data/raw/food101" and opts["--out"] == "data/arrow"
    assert "--skip-bad" not in opts  # SKIP_BAD defaults to 0: stop at the first bad sample
    assert "--resize" not in opts  # images stored as found unless RESIZE is set
    assert not (tmp_path / "data").exists()


def test_food101_without_raw_folder_fails_with_a_pointer(tmp_path):
    p = run_script("prepare_food101.sh", tmp_path, RAW=str(tmp_path / "missing"), OUT=str(tmp_path / "out"))
    assert p.returncode == 1
    assert "not found" in p.stderr and "where to get it" in p.stderr


def test_a_failing_writer_fails_the_script_with_a_skip_bad_hint(tmp_path):
    (tmp_path / "raw").mkdir()
    for script in ("prepare_food101.sh", "prepare_mm_imagenet_r.sh"):  # `false` stands in for a writer that fails
        p = run_script(script, tmp_path, PYTHON="false", RAW=str(tmp_path / "raw"), STEPS="arrow")
        assert p.returncode == 1 and "SKIP_BAD=1" in p.stderr, (script, p.stderr)
        p = run_script(script, tmp_path, PYTHON="false", RAW=str(tmp_path / "raw"), STEPS="arrow", SKIP_BAD="1")
        assert p.returncode == 1 and "SKIP_BAD=1" not in p.stderr, (script, p.stderr)


def test_imagenet_r_dry_run_prints_extract_captions_and_writer(tmp_path):
    env = dict(TAR=str(tmp_path / "imagenet-r.tar"), IMAGES=str(tmp_path / "imagenet-r"),
               CAPTIONS=str(tmp_path / "caps.jsonl"), INSTRUCTBLIP=str(tmp_path / "instructblip-vicuna-7b"),
               OUT=str(tmp_path / "arrow"), SEED="3", SKIP_BAD="1", NUM_BEAMS="1", RESIZE="384")
    p = run_script("prepare_mm_imagenet_r.sh", tmp_path, DRY_RUN="1", **env)
    assert p.returncode == 0, p.stderr
    mkdir, tar, caps, write = commands(p.stdout)
    assert mkdir == ["mkdir", "-p", env["IMAGES"]]
    assert tar[:3] == ["tar", "-xf", env["TAR"]] and tar[tar.index("-C") + 1] == env["IMAGES"]
    assert "--strip-components=1" in tar

    assert module_of(caps) == "emmcil.data.captions"
    o = options(caps)
    assert o["--images"] == env["IMAGES"] and o["--model"] == env["INSTRUCTBLIP"] and o["--out"] == env["CAPTIONS"]
    assert o["--num-beams"] == "1" and o["--dtype"] == "float16" and o["--skip-bad"] is True

    assert module_of(write) == "emmcil.data.write_imagenet_r"
    o = options(write)
    assert o["--root"] == env["IMAGES"] and o["--captions"] == env["CAPTIONS"] and o["--out"] == env["OUT"]
    assert o["--seed"] == "3" and o["--test-fraction"] == "0.2" and o["--skip-bad"] is True
    assert o["--resize"] == "384" and "--resize" not in options(caps)
    assert "instructblip" in p.stderr.lower()  # the missing model directory is noted, not fatal, in a dry run
    assert not (tmp_path / "arrow").exists() and not (tmp_path / "imagenet-r").exists()


def test_imagenet_r_dry_run_steps_and_empty_dtype(tmp_path):
    images = tmp_path / "imagenet-r"
    image_folder(images, [IMAGENET_R_WNIDS[0]], 1)  # already unpacked: no extraction
    p = run_script("prepare_mm_imagenet_r.sh", tmp_path, DRY_RUN="1", IMAGES=str(images), DTYPE="",
                   STEPS="extract,captions", PROMPT="Describe the image.")
    assert p.returncode == 0, p.stderr
    (caps,) = commands(p.stdout)
    o = options(caps)
    assert module_of(caps) == "emmcil.data.captions" and "--dtype" not in o and "--skip-bad" not in o
    assert o["--prompt"] == "Describe the image."
    assert run_script("prepare_mm_imagenet_r.sh", tmp_path, DRY_RUN="1", STEPS="caption").returncode == 2


# ---------------------------------------------------------------- real runs
def test_food101_end_to_end_json_layout(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    fx = food101_json(raw)
    p = run_script("prepare_food101.sh", tmp_path, RAW=str(raw), OUT=str(out))
    assert p.returncode == 0, p.stderr
    for split, names in fx["splits"].items():
        table = read_arrow(out / f"food101_{split}.arrow")
        assert table.column("image_id").to_pylist() == names
    assert (out / "food101_classes.json").is_file() and not (out / "food101_skipped.json").exists()


def test_food101_end_to_end_csv_layout_skip_bad(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    food101_csv(raw, n_train=10, n_test=3)
    corrupt(raw / "images" / "train" / "apple_pie" / "apple_pie_0.jpg")
    p = run_script("prepare_food101.sh", tmp_path, RAW=str(raw), OUT=str(out), SKIP_BAD="1")
    assert p.returncode == 0, p.stderr
    n = {s: read_arrow(out / f"food101_{s}.arrow").num_rows for s in ("train", "val", "test")}
    assert n["train"] + n["val"] == 10 * len(FOOD_CLASSES) - 1 and n["test"] == 3 * len(FOOD_CLASSES)
    assert "corrupt_image" in (out / "food101_skipped.json").read_text()


def test_imagenet_r_extract_and_arrow_end_to_end(tmp_path):
    """The extract and arrow steps on a real tar (the captions come from a file, as InstructBLIP would write it)."""
    wnids = list(IMAGENET_R_WNIDS[:2])
    staging = tmp_path / "staging" / "imagenet-r"
    rels = image_folder(staging, wnids, 5, prefix="art")
    tar_path = tmp_path / "imagenet-r.tar"
    with tarfile.open(tar_path, "w") as tf:
        tf.add(staging, arcname="imagenet-r")
    captions = write_jsonl(tmp_path / "caps.jsonl", [{"path": r, "caption": f"a drawing, {r}"} for r in rels])
    images, out = tmp_path / "unpacked", tmp_path / "arrow"
    p = run_script("prepare_mm_imagenet_r.sh", tmp_path, TAR=str(tar_path), IMAGES=str(images),
                   CAPTIONS=str(captions), OUT=str(out), STEPS="extract,arrow", SEED="1")
    assert p.returncode == 0, p.stderr
    assert sorted(str(f.relative_to(images)) for f in images.rglob("*.jpg")) == sorted(rels)
    train, test = (read_arrow(out / f"mm_imagenet_r_{s}.arrow") for s in ("train", "test"))
    assert train.num_rows == 8 and test.num_rows == 2  # round(0.2 * 5) = 1 test image per class
    assert set(train.column("label").to_pylist()) == {WNID_TO_LABEL[w] for w in wnids}
