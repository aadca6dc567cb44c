"""The one image decoder: every Pillow mode against an 8-bit RGB reference, EXIF orientation, 16-bit scaling,
transparency on white, undecodable files named; and its use by the writer, the dataset and the memory budget."""
import io
import json
import pickle
import zlib

import numpy as np
import pytest
import torch
from data_helpers import image_folder, make_jpeg, write_jsonl
from PIL import ExifTags, Image

from emmcil.data import ArrowDataset, CorruptImageError, get_tokenizer, pixelbert_transform
from emmcil.data.images import BACKGROUND, ImageDecodeError, decode_image, image_size, to_rgb
from emmcil.data.write_folder import write_folder

W, H = 24, 16


def reference() -> np.ndarray:
    """The 8-bit RGB reference picture (H, W, 3): smooth ramps, so that lossy formats stay close to it."""
    y, x = np.mgrid[0:H, 0:W]
    ref = np.stack([x * 255 / (W - 1), y * 255 / (H - 1), 127.5 + 100 * np.sin(x / 4 + y / 5)], -1)
    return np.rint(ref).astype(np.uint8)


def alpha() -> np.ndarray:
    """(H, W) uint8 alpha: 0 (transparent) in the top-left corner to 255 (opaque) in the bottom-right."""
    y, x = np.mgrid[0:H, 0:W]
    return np.rint(255 * (x + y) / (W + H - 2)).astype(np.uint8)


def on_white(rgb: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The exact composite of ``rgb`` with alpha ``a`` over BACKGROUND, float (H, W, 3)."""
    a = a[..., None].astype(np.float64) / 255
    return rgb * a + np.array(BACKGROUND) * (1 - a)


def grey(ref: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(ref).convert("L"))


def rgb_of(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=-1)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png16(values: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow writes no 16-bit colour PNG): values uint16 (H, W, C), big-endian."""
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, colour_type, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# Each case: (file bytes or an in-memory image of that mode, the mode Pillow opens it in, expected float (H, W, 3),
# tolerance as (max |difference|, mean |difference|) in 8-bit levels). Lossless paths are exact up to the
# rounding of a composite (1 level); lossy ones (JPEG, YCbCr / HSV / LAB conversions) get a stated budget.
def cases():
    ref, a = reference(), alpha()
    g = grey(ref)
    g16 = g.astype(np.uint16) * 257  # the 16-bit twin: v * 257 maps 0..255 onto 0..65535 exactly
    rgba = np.dstack([ref, a])
    pal = Image.fromarray(ref).quantize(32, dither=Image.Dither.NONE)
    pal_rgb = np.asarray(pal.convert("RGB")).astype(np.float64)
    hole = np.where(np.asarray(pal) == 3, 0, 255).astype(np.uint8)  # palette index 3 made transparent
    bw = g >= 128
    exact, composite = (0, 0), (1, 0.5)
    yield "1 png", encode(Image.fromarray(bw), "PNG"), "1", rgb_of(bw * 255.0), exact
    yield "L png", encode(Image.fromarray(g), "PNG"), "L", rgb_of(g), exact
    yield "LA png", encode(Image.fromarray(np.dstack([g, a]), "LA"), "PNG"), "LA", on_white(rgb_of(g), a), composite
    yield "La", Image.fromarray(np.dstack([g, a]), "LA").convert("La"), "La", on_white(rgb_of(g), a), (2, 0.5)
    yield "P png", encode(pal, "PNG"), "P", pal_rgb, exact
    yield "P png transparent index", encode(pal, "PNG", transparency=3), "P", on_white(pal_rgb, hole), exact
    yield "P gif transparent index", encode(pal, "GIF", transparency=3), "P", on_white(pal_rgb, hole), exact
    yield "PA tiff", encode(Image.fromarray(rgba, "RGBA").convert("PA"), "TIFF"), "PA", None, composite
    yield "RGB png", encode(Image.fromarray(ref), "PNG"), "RGB", ref, exact
    yield "RGB jpeg", encode(Image.fromarray(ref), "JPEG", quality=95, subsampling=0), "RGB", ref, (12, 2)
    yield "RGB png transparent colour", encode(Image.fromarray(ref), "PNG", transparency=tuple(ref[0, 0].tolist())), \
        "RGB", on_white(ref, np.where((ref == ref[0, 0]).all(-1), 0, 255)), exact
    yield "RGBA png", encode(Image.fromarray(rgba, "RGBA"), "PNG"), "RGBA", on_white(ref, a), composite
    yield "RGBa", Image.fromarray(rgba, "RGBA").convert("RGBa"), "RGBa", on_white(ref, a), (2, 0.5)
    yield "RGBX", Image.fromarray(ref).convert("RGBX"), "RGBX", ref, exact
    yield "CMYK tiff", encode(Image.fromarray(ref).convert("CMYK"), "TIFF"), "CMYK", ref, exact
    yield "CMYK jpeg", encode(Image.fromarray(ref).convert("CMYK"), "JPEG", quality=95), "CMYK", ref, (6, 1.5)
    yield "YCbCr tiff", encode(Image.fromarray(ref).convert("YCbCr"), "TIFF"), "YCbCr", ref, (4, 1.5)
    yield "HSV", Image.fromarray(ref).convert("HSV"), "HSV", ref, (6, 1.5)
    yield "LAB tiff", encode(Image.fromarray(ref).convert("LAB"), "TIFF"), "LAB", ref, (40, 3)  # Pillow's LAB is coarse
    yield "I;16 png", encode(Image.fromarray(g16), "PNG"), "I;16", rgb_of(g), exact
    yield "I;16B tiff", encode(Image.frombytes("I;16B", (W, H), g16.astype(">u2").tobytes()), "TIFF"), "I;16B", \
        rgb_of(g), exact
    yield "I;16L", Image.frombytes("I;16L", (W, H), g16.astype("<u2").tobytes()), "I;16L", rgb_of(g), exact
    yield "I;16N", Image.frombytes("I;16N", (W, H), g16.astype("=u2").tobytes()), "I;16N", rgb_of(g), exact
    yield "I tiff", encode(Image.fromarray(g16.astype(np.int32)), "TIFF"), "I", rgb_of(g), exact
    yield "I pgm (16-bit)", encode(Image.fromarray(g16), "PPM"), "I", rgb_of(g), exact
    yield "F tiff", encode(Image.fromarray(g.astype(np.float32)), "TIFF"), "F", rgb_of(g), exact
    yield "16-bit RGB png", png16(ref.astype(np.uint16) * 257, 2), "RGB", ref, exact
    yield "16-bit RGBA png", png16(rgba.astype(np.uint16) * 257, 6), "RGBA", on_white(ref, a), composite
    yield "16-bit LA png", png16(np.dstack([g, a]).astype(np.uint16) * 257, 4), "RGBA", on_white(rgb_of(g), a), \
        composite  # Pillow opens it as RGBA


CASES = {c[0]: c[1:] for c in cases()}
EVERY_MODE = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB", "I",
              "I;16", "I;16B", "I;16L", "I;16N", "F"}


def test_every_pillow_mode_has_a_case():
    assert {mode for _, mode, _, _ in CASES.values()} == EVERY_MODE == set(Image.MODES)


@pytest.mark.parametrize("name", list(CASES))
def test_every_mode_decodes_to_the_8bit_rgb_reference(name):
    data, mode, expected, (max_tol, mean_tol) = CASES[name]
    if isinstance(data, bytes):
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode == mode  # the case really exercises that mode
        out = decode_image(data, name)
    else:
        assert data.mode == mode
        out = to_rgb(data)
    if expected is None:  # PA: the palette of the RGBA source, then its alpha
        pa = data if not isinstance(data, bytes) else Image.open(io.BytesIO(data))
        rgba = np.asarray(pa.convert("RGBA")).astype(np.float64)
        expected = on_white(rgba[..., :3], rgba[..., 3])
    assert out.mode == "RGB" and out.size == (W, H)
    diff = np.abs(np.asarray(out).astype(np.float64) - expected)
    assert diff.max() <= max_tol and diff.mean() <= mean_tol, (diff.max(), diff.mean())


def test_rgb_is_returned_as_is():
    im = Image.fromarray(reference())
    assert to_rgb(im) is im


def test_transparent_pixels_are_white_not_what_the_file_keeps_under_them():
    rgba = np.zeros((H, W, 4), np.uint8)  # black everywhere, fully transparent: convert("RGB") gives black
    out = np.asarray(decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert (out == 255).all()


def ramp_pair(tmp_path):
    """A 0 -> 1 horizontal ramp saved as 16-bit PNG (mode I;16) and as its 8-bit twin."""
    ramp = np.tile(np.linspace(0.0, 1.0, 64), (32, 1))
    (tmp_path / "ramp").mkdir(parents=True)
    Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)).save(tmp_path / "ramp" / "ramp16.png")
    Image.fromarray(np.rint(ramp * 255).astype(np.uint8)).save(tmp_path / "ramp" / "ramp8.png")
    return ramp


RED, GREEN = (255, 0, 0), (0, 255, 0)


def exif_jpeg(path, orientation: int, size=(40, 30)):
    """A landscape JPEG (W > H as stored), red block in its stored top-left corner, green in its top-right."""
    arr = np.full((size[1], size[0], 3), 200, np.uint8)
    arr[:10, :10] = RED
    arr[:10, -10:] = GREEN
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def test_16bit_ramp_and_exif_orientation_through_writer_and_dataset(tmp_path):
    """The issue's instances: a 16-bit ramp reaches the model with the mean of its 8-bit twin (127.5, not 251),
    and an Orientation=6 JPEG (stored 40x30) as the portrait picture every viewer shows."""
    root = tmp_path / "raw"
    ramp_pair(root)
    exif_jpeg(root / "photo" / "sideways.jpg", 6)
    keys = ["ramp/ramp16.png", "ramp/ramp8.png", "photo/sideways.jpg"]
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": k, "caption": "a picture"} for k in keys])
    paths = write_folder(root, caps, tmp_path / "arrow", "wild", test_fraction=0)
    ds = ArrowDataset(paths["train"], get_tokenizer(), pixelbert_transform(64, 16), max_text_len=8)
    by_id = {ds.image_ids[i]: i for i in range(len(ds))}
    r16, r8 = (np.asarray(ds.load_image(by_id[k])) for k in keys[:2])
    assert r16.mean() == pytest.approx(127.5, abs=0.5) and np.abs(r16.astype(int) - r8).max() == 0
    with Image.open(root / keys[0]) as im:  # what Pillow's convert("RGB") made of it
        assert np.asarray(im.convert("RGB")).mean() > 250

    photo = ds.load_image(by_id[keys[2]])
    assert photo.size == (30, 40)  # portrait
    arr = np.asarray(photo)  # turned clockwise: the stored top-left corner is now the top-right one
    assert (np.abs(corner(arr, "TR") - RED) < 40).all() and (np.abs(corner(arr, "BL") - 200) < 40).all()
    image = ds[by_id[keys[2]]]["image"]
    assert image.shape[-2] > image.shape[-1]  # the model sees it upright too


def corner(arr: np.ndarray, where: str) -> np.ndarray:
    """The inside of the 10x10 block in corner ``where`` (TL, TR, BL, BR), away from JPEG's blurred edges."""
    rows = slice(1, 9) if where[0] == "T" else slice(-9, -1)
    cols = slice(1, 9) if where[1] == "L" else slice(-9, -1)
    return arr[rows, cols].astype(int)


# EXIF orientation -> where the stored top-left (red) and top-right (green) corners are displayed
DISPLAYED = {1: ("TL", "TR"), 2: ("TR", "TL"), 3: ("BR", "BL"), 4: ("BL", "BR"), 5: ("TL", "BL"), 6: ("TR", "BR"),
             7: ("BR", "TR"), 8: ("BL", "TL")}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_and_image_size_agrees(tmp_path, orientation):
    data = exif_jpeg(tmp_path / "x.jpg", orientation).read_bytes()
    image = decode_image(data)
    assert image_size(data) == image.size == ((30, 40) if orientation >= 5 else (40, 30))
    red, green = DISPLAYED[orientation]
    arr = np.asarray(image)
    assert (np.abs(corner(arr, red) - RED) < 40).all() and (np.abs(corner(arr, green) - GREEN) < 40).all()


def test_undecodable_files_are_errors_naming_the_file(tmp_path):
    png = encode(Image.fromarray(reference()), "PNG")
    for name, data in {"cut.png": png[:len(png) // 2], "empty.jpg": b"", "text.jpg": b"not an image"}.items():
        with pytest.raises(ImageDecodeError, match=name):
            decode_image(data, name)
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageDecodeError, match=str(path)):
            decode_image(path)
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "absent.png")
    with pytest.raises(ImageDecodeError, match="header of text.jpg"):
        image_size(b"not an image", "text.jpg")
    err = pickle.loads(pickle.dumps(ImageDecodeError("cannot decode image x: why", "x", "why")))
    assert str(err) == "cannot decode image x: why"  # survives a DataLoader worker


def test_dataset_names_sample_and_file_of_bytes_that_do_not_decode(tmp_path):
    from emmcil.data import write_arrow

    good = (tmp_path / "g.jpg")
    make_jpeg(good)
    rows = [{"image": good.read_bytes()[:200], "text": ["x"], "label": 0, "image_id": "cut.jpg", "split": "train"}]
    ds = ArrowDataset(write_arrow(rows, tmp_path / "t_train.arrow"), get_tokenizer(), pixelbert_transform(32, 16), 8)
    with pytest.raises(CorruptImageError,
                       match=r"cannot decode image 'cut\.jpg' \(index 0\) in .*t_train\.arrow: OSError"):
        ds[0]


def test_writer_skips_and_lists_a_truncated_png(tmp_path, capsys):
    from emmcil.data.write_folder import main

    root = tmp_path / "raw"
    rels = image_folder(root, ["a"], per_class=3)
    png = encode(Image.fromarray(reference()), "PNG")
    (root / "a" / "cut.png").write_bytes(png[:len(png) // 2])
    caps = write_jsonl(tmp_path / "c.jsonl", [{"path": p, "caption": "x"} for p in rels + ["a/cut.png"]])
    argv = ["--root", str(root), "--captions", str(caps), "--out", str(tmp_path / "o"), "--name", "t",
            "--test-fraction", "0"]
    with pytest.raises(SystemExit):
        main(argv)
    assert "a/cut.png" in capsys.readouterr().err
    main(argv + ["--skip-bad"])
    log = json.loads((tmp_path / "o" / "t_skipped.json").read_text())
    assert log["counts"] == {"corrupt_image": 1} and log["samples"][0]["image_id"] == "a/cut.png"


def test_jpeg_exemplar_decodes_through_the_decoder():
    from emmcil.memory.exemplar import JpegExemplar

    x = torch.rand(3, 64, 96) * 2 - 1
    item = {"image": x, "text_ids": torch.tensor([101, 7, 102, 0]), "text_masks": torch.tensor([1, 1, 1, 0]),
            "label": 1, "index": 3, "image_id": "x"}
    stored = Image.fromarray(((x * 0.5 + 0.5) * 255).round().byte().permute(1, 2, 0).numpy())
    e = JpegExemplar.from_image(item, stored, original_nbytes=len(encode(stored, "PNG")), patch_size=32, quality=90)
    out = e.to_item(4)["image"]
    assert e.num_patches == 6 and out.shape == x.shape
