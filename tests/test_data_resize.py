"""Writers' --resize: images stored at the pixelbert transform's size give the model the same input as the originals
(to the JPEG re-encoding's error; exactly with --resize-format ppm), whatever the file's mode or EXIF orientation;
the choice is recorded in the arrow metadata, and a run with another image_size or patch_size refuses the files."""
import io
import json

import numpy as np
import pytest
import torch
from data_helpers import encode, photo, sideways, write_jsonl
from PIL import Image

from emmcil.data import ArrowDataset, get_tokenizer
from emmcil.data import write_folder as WF
from emmcil.data.arrow import ArrowFormatError
from emmcil.data.images import decode_image
from emmcil.data.resize import METADATA_KEY, StoredResize, check_stored_resize, stored_resize
from emmcil.data.transforms import PixelbertPixels, pixelbert_resize

# The JPEG re-encoding's error in pixel levels (0-255) of photo-like images at quality 95, 4:4:4: about 1 level mean
# and 7-20 max on the pictures below (500x375 to 1600x1200: measured 0.9-1.3 and 20); bounds 2.5 and 32.
MEAN_TOL, MAX_TOL = 2.5, 32


@pytest.mark.parametrize("size,divisor", [(384, 32), (96, 16), (224, 16)])
def test_pixelbert_resize_is_idempotent(size, divisor):
    """The transform leaves a stored (already resized) image's size alone: output_size(output_size(s)) = output_size(s),
    on random sizes and the extremes (tiny, panoramic, tall, huge)."""
    resize = pixelbert_resize(size, divisor)
    rng = np.random.default_rng(0)
    sizes = [tuple(int(v) for v in s) for s in rng.integers(1, 4000, size=(3000, 2))]
    sizes += [(1, 1), (5000, 40), (40, 5000), (639, 384), (640, 384), (1000, 601), (1000, 600), (8000, 6000)]
    for s in sizes:
        once = resize.output_size(*s)
        assert resize.output_size(*once) == once, (s, once)
        assert min(once) <= size and max(once) <= resize.longer and once[0] % divisor == once[1] % divisor == 0




def originals() -> dict[str, bytes]:
    """Files of several sizes and kinds: photo JPEGs (landscape, portrait, large, panoramic: the longer side capped),
    a sideways phone photo, a transparent PNG, a 16-bit grey PNG, and one already at the transform's size."""
    rgba = np.dstack([np.asarray(photo((600, 450), 5)), np.tile(np.linspace(0, 255, 600), (450, 1)).astype(np.uint8)])
    grey16 = (np.asarray(photo((700, 500), 6).convert("L"), dtype=np.uint16) * 257)
    return {
        "landscape.jpg": encode(photo((500, 375), 1), "JPEG", quality=90),
        "portrait.jpg": encode(photo((375, 500), 2), "JPEG", quality=90),
        "large.jpg": encode(photo((1600, 1200), 3), "JPEG", quality=90),
        "panorama.jpg": encode(photo((1200, 500), 4), "JPEG", quality=90),
        "phone.jpg": sideways(photo((480, 640), 7), quality=92),
        "alpha.png": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "grey16.png": encode(Image.fromarray(grey16), "PNG"),
        "exact.jpg": encode(photo((512, 384), 8), "JPEG", quality=90),
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The same folder written as found and with --resize, then read back through ArrowDataset."""
    root = tmp_path_factory.mktemp("resize")
    files = originals()
    for name, data in files.items():
        (root / "raw" / "things" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "raw" / "things" / name).write_bytes(data)
    write_jsonl(root / "captions.jsonl", [{"path": f"things/{n}", "caption": f"a picture called {n}"} for n in files])
    args = ["--root", str(root / "raw"), "--captions", str(root / "captions.jsonl"), "--test-fraction", "0"]
    WF.main(args + ["--out", str(root / "found"), "--name", "set"])
    WF.main(args + ["--out", str(root / "resized"), "--name", "set", "--resize"])
    WF.main(args + ["--out", str(root / "exact"), "--name", "set", "--resize", "--resize-format", "ppm"])
    tf = PixelbertPixels(384, 32)  # the loaders' transform (uint8 pixels)
    data = {kind: ArrowDataset(root / kind / "set_train.arrow", get_tokenizer(), tf, 40)
            for kind in ("found", "resized", "exact")}
    return files, data


def test_stored_pixels_are_exactly_the_model_input(written):
    """--resize-format ppm stores the resized pixels themselves: the model input of every file (EXIF, alpha, 16 bits
    included) is bitwise that of the original under ViLT's transform, and the loaders only copy it."""
    files, data = written
    found, exact = data["found"], data["exact"]
    record = stored_resize(exact.paths[0])
    assert record["format"] == "PPM (8-bit RGB, uncompressed)" and record["size"] == 384
    for i, name in enumerate(found.image_ids):
        assert torch.equal(found[i]["image"], exact[i]["image"]), name
        raw = exact.image_bytes(i)
        if name != "things/exact.jpg":  # an image already of that size keeps its bytes
            assert raw.startswith(b"P6") and len(raw) > 3 * found[i]["image"][0].numel()


def test_stored_images_give_the_same_model_input(written):
    files, data = written
    found, resized = data["found"], data["resized"]
    assert found.image_ids == resized.image_ids and len(found) == len(files)
    resize = pixelbert_resize(384, 32)
    for i, name in enumerate(found.image_ids):
        x, y = found[i]["image"].int(), resized[i]["image"].int()  # uint8 levels
        stored = decode_image(resized.image_bytes(i))
        assert stored.size == resize.output_size(*stored.size) == (x.shape[-1], x.shape[-2]), name  # no 2nd resize
        diff = (x - y).abs().float()
        assert diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL, (name, diff.mean(), diff.max())
    # the panorama hits the longer-side cap, the phone photo is stored upright (portrait, as displayed)
    shapes = {name: tuple(found[i]["image"].shape[-2:]) for i, name in enumerate(found.image_ids)}
    assert shapes["things/panorama.jpg"] == (256, 608) and shapes["things/phone.jpg"] == (512, 384)
    assert shapes["things/large.jpg"] == (384, 512) and shapes["things/portrait.jpg"] == (512, 384)


def test_stored_bytes_and_metadata(written):
    files, data = written
    found, resized = data["found"], data["resized"]
    assert stored_resize(found.paths[0]) is None  # off by default: the files' bytes as found
    for i, name in enumerate(found.image_ids):
        assert found.image_bytes(i) == files[name.split("/")[1]]
    record = stored_resize(resized.paths[0])
    assert record["size"] == 384 and record["size_divisor"] == 32 and record["longer"] == 639
    assert record["quality"] == 95 and record["format"] == "JPEG 4:4:4"
    for i, name in enumerate(resized.image_ids):
        raw = resized.image_bytes(i)
        if name == "things/exact.jpg":
            assert raw == files["exact.jpg"]  # already the transform's size: kept, not re-encoded
            continue
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and not im.getexif()  # upright 8-bit RGB, no EXIF
            assert im.size == tuple(resized[i]["image"].shape[-1:-3:-1])
    assert sum(map(len, (resized.image_bytes(i) for i in range(len(resized))))) < \
        sum(map(len, files.values())) / 2


def test_a_run_with_another_transform_refuses_resized_files(written, tmp_path):
    _, data = written
    path = data["resized"].paths[0]
    check_stored_resize([path, data["found"].paths[0]], 384, 32)  # the transform they were stored for: fine
    # an ArrowFormatError: run.py refuses with the message alone (exit 1), not a traceback
    with pytest.raises(ArrowFormatError, match=r"set_train\.arrow holds images stored resized for image_size=384, "
                                         r"patch_size=32 .* this run uses image_size=96, patch_size=16"):
        check_stored_resize([path], 96, 16)


def test_bad_resize_options_are_errors_naming_the_option(tmp_path, capsys):
    with pytest.raises(ValueError, match="--resize-quality 0"):
        StoredResize(384, 32, 0)
    with pytest.raises(ValueError, match="--resize-format png"):
        StoredResize(384, 32, 95, "png")
    with pytest.raises(SystemExit):
        WF.main(["--root", str(tmp_path), "--captions", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "o"),
                 "--name", "x", "--resize", "8", "--resize-divisor", "16"])
    assert "--resize 8 with size divisor 16" in capsys.readouterr().err


def test_metadata_is_json_under_one_key():
    meta = StoredResize(96, 16, 90).metadata()
    assert list(meta) == [METADATA_KEY]
    assert json.loads(meta[METADATA_KEY])["longer"] == int(1333 / 800 * 96)
