"""Decoding and normalising where they are cheapest (docs/data.md, "Decoding"): uint8 batches normalised on the
device equal ViLT's float batches; the loader's resize and reduced-scale JPEG decoding stay within their stated
bounds of Pillow's full decode + resize; device decoding (run here on the CPU, the same code as on CUDA) equals the
CPU path within the JPEG decoders' tolerance, and hands everything it cannot decode as the CPU would back to the
CPU. Pixel differences are in levels of 0-255; after normalisation one level is 2/255."""
import json

import numpy as np
import pytest
import torch
from data_helpers import encode, photo, sideways
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from emmcil.data import (ArrowDataset, EncodedImage, MissingTable, PixelbertPixels, collate, ensure_demo,
                         get_tokenizer, model_images, pixelbert_transform, resize_uint8, write_arrow)
from emmcil.data.device import decode_encoded, image_pixels, resize_on_device
from emmcil.data.images import ImageDecodeError, decode_image, device_jpeg_size
from emmcil.data.missing import IMAGE_MISSING
from emmcil.data.transforms import normalize_uint8, pixelbert_resize
from emmcil.engine.driver import run_experiment
from emmcil.engine.loaders import KeepCollate
from emmcil.memory.exemplar import Exemplar
from run_helpers import demo_config, one_thread

LEVEL = 2 / 255  # one pixel level after normalisation to [-1, 1]




@pytest.fixture(scope="module")
def files() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Photos as found: smaller than the model's size (upscaled), larger (downscaled; DCT-scalable at 1024 px and
    up), 4:2:0 and 4:4:4, progressive, greyscale; and what a device decoder must not take: a sideways phone photo, a
    PNG, a CMYK JPEG."""
    found = {
        "small.jpg": encode(photo((500, 375), 1), quality=90),
        "mid.jpg": encode(photo((800, 600), 2), quality=90),
        "double.jpg": encode(photo((1024, 768), 3), quality=90),
        "large.jpg": encode(photo((1600, 1200), 4), quality=90, subsampling=0),
        "huge.jpg": encode(photo((2400, 1800), 5), quality=85, progressive=True),
        "tall.jpg": encode(photo((900, 1400), 6), quality=90),
        "grey.jpg": encode(photo((1100, 820), 7).convert("L"), quality=90),
    }
    not_for_the_device = {
        "phone.jpg": sideways(photo((1400, 1050), 8)),
        "picture.png": encode(photo((640, 480), 9), "PNG"),
        "cmyk.jpg": encode(photo((700, 500), 10).convert("CMYK"), quality=90),
    }
    return found, not_for_the_device


@pytest.fixture(scope="module")
def photos(tmp_path_factory, files):
    files = {**files[0], **files[1]}
    rows = [{"image": data, "text": [f"a picture called {name}"], "label": i % 3, "image_id": name, "split": "train"}
            for i, (name, data) in enumerate(files.items())]
    return write_arrow(rows, tmp_path_factory.mktemp("photos") / "photos_train.arrow")


def dataset(path, transform, **kw) -> ArrowDataset:
    return ArrowDataset(path, get_tokenizer(), transform, 16, **kw)


def batch_of(ds: ArrowDataset) -> dict:
    return collate([ds[i] for i in range(len(ds))])


def levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of two pixel tensors (uint8 or any dtype), in levels."""
    return (a.double() - b.double()).abs()


# ---------------------------------------------------------------------------------------------- on the device
def test_uint8_batches_normalised_on_the_device_equal_vilts_float_batches(tmp_path):
    """The demo set (JPEGs at the transform's size): the loaders' uint8 batch, normalised by ``model_images``, is
    ViLT's float batch (ToTensor + Normalize per item, zero padding) exactly: the same elementwise operations in the
    same order, correctly rounded; tolerance 0."""
    root = ensure_demo(tmp_path / "demo")
    ds_float = dataset(root / "demo_test.arrow", pixelbert_transform(96, 16))
    ds_uint8 = dataset(root / "demo_test.arrow", PixelbertPixels(96, 16), jpeg_draft=True)
    idx = list(range(0, 100, 7))
    a = collate([ds_float[i] for i in idx])
    b = collate([ds_uint8[i] for i in idx])
    assert a["images"].dtype == torch.float32 and b["images"].dtype == torch.uint8
    assert b["images"].element_size() * 4 == a["images"].element_size()  # a quarter of the bytes to copy
    assert torch.equal(model_images(b)["images"], a["images"]) and model_images(b)["images"].is_contiguous()
    assert model_images(a) is a  # a float batch is normalised already


def test_a_batch_with_replayed_exemplars_normalises_as_items_did():
    """Data items and masked exemplars (uint8 canvases, 0 outside their kept patches) in one batch: normalised on the
    device they equal what normalising each item on the CPU gave (padding and dropped cells 0.0); tolerance 0."""
    P, g = 16, torch.Generator().manual_seed(0)
    text = {"text_ids": torch.arange(12), "text_masks": torch.ones(12, dtype=torch.long), "label": 0, "index": 0,
            "orig_label": 0, "image_id": "x", "raw_text": "", "missing_type": 0}
    data_item = {**text, "image": torch.randint(0, 256, (3, 2 * P, 3 * P), generator=g, dtype=torch.uint8)}
    keep = torch.tensor([[True, False, True, False], [False, False, True, True], [True, True, True, False]])
    source = {**text, "image": torch.randint(0, 256, (3, 3 * P, 4 * P), generator=g, dtype=torch.uint8)}
    replay = Exemplar.from_item(source, P, patch_keep=keep).to_item(12)
    batch = KeepCollate(P)([data_item, replay])
    # before: each item normalised on the CPU, the exemplar's canvas 0.0 outside its kept patches
    kept_px = keep.repeat_interleave(P, 0).repeat_interleave(P, 1)
    before = KeepCollate(P)([{**data_item, "image": normalize_uint8(data_item["image"])},
                             {**replay, "image": normalize_uint8(source["image"]) * kept_px}])
    after = model_images(batch)
    assert after["images"].dtype == torch.float32 and torch.equal(after["images"], before["images"])
    assert torch.equal(after["patch_keep"], before["patch_keep"]) and "images" in batch  # input left as it was
    assert batch["images"].dtype == torch.uint8


def test_loader_resize_stays_within_two_levels_of_pillow(photos, files):
    """The loaders resize uint8 pixels with torch's antialiased bicubic (a fifth of Pillow's time): at most 2 levels
    from ViLT's Pillow resize, 0.05 on average; the device's float version at most 2, 0.3 on average."""
    found = files[0]
    resize = pixelbert_resize(384, 32)
    for name, data in found.items():
        picture = decode_image(data)
        w, h = resize.output_size(*picture.size)
        reference = pil_to_tensor(picture.resize((w, h), Image.BICUBIC))
        ours = resize_uint8(pil_to_tensor(picture), (h, w))
        device = resize_on_device(pil_to_tensor(picture), (h, w))
        assert ours.shape == device.shape == reference.shape == (3, h, w)
        assert levels(ours, reference).max() <= 2 and levels(ours, reference).mean() <= 0.05, name
        assert levels(device, reference).max() <= 2 and levels(device, reference).mean() <= 0.3, name
    # and through the datasets, as batches: ViLT's float transform vs the loaders' uint8 one (no draft)
    a = batch_of(dataset(photos, pixelbert_transform(384, 32)))
    b = model_images(batch_of(dataset(photos, PixelbertPixels(384, 32))))
    assert a["images"].shape == b["images"].shape and torch.equal(a["pixel_masks"], b["pixel_masks"])
    assert (a["images"] - b["images"]).abs().max() <= 2 * LEVEL + 1e-6


def test_reduced_scale_jpeg_decoding_is_bounded(photos, files):
    """``jpeg_draft``: JPEGs of at least twice the model's size are decoded at 1/2 .. 1/8 scale (never below the
    model's size) and then resized; against full decoding + the same resize, on these photo-like JPEGs: at most 32
    levels at a pixel (sharp edges), at most 1.5 levels on average over an image, 0.8 over all. Measured: 21-24, 1.1,
    0.4 (the pixel path that changes by design; docs/data.md)."""
    found, others = files
    full = dataset(photos, PixelbertPixels(384, 32))
    draft = dataset(photos, PixelbertPixels(384, 32), jpeg_draft=True)
    means = []
    for i, name in enumerate(full.image_ids):
        x, y = full[i]["image"], draft[i]["image"]
        assert x.shape == y.shape, name  # the model's size either way
        d = levels(x, y)
        assert d.max() <= 32 and d.mean() <= 1.5, (name, d.max(), d.mean())
        means.append(float(d.mean()))
        if name in ("small.jpg", "mid.jpg", "picture.png"):  # under twice the size, or not a JPEG: decoded in full
            assert torch.equal(x, y), name
    assert np.mean(means) <= 0.8
    # the decoder did work at reduced scale, upright for the sideways photo (EXIF applied after the scaling)
    target = pixelbert_resize(384, 32).output_size
    sizes = {name: decode_image(data, draft=target).size for name, data in {**found, **others}.items()}
    assert sizes["double.jpg"] == (512, 384) and sizes["large.jpg"] == (800, 600) and sizes["huge.jpg"] == (600, 450)
    assert sizes["phone.jpg"] == (700, 525) and sizes["small.jpg"] == (500, 375)
    seen = []
    half_by_quarter = lambda w, h: seen.append((w, h)) or (w // 2, h // 4)  # noqa: E731
    assert decode_image(others["phone.jpg"], draft=half_by_quarter).size == (700, 525)  # 1/2: the file turned
    assert seen == [(1400, 1050)]  # asked with the picture as displayed


# ---------------------------------------------------------------------------------------------- decode_on=device
def test_device_decoding_on_the_cpu_equals_the_cpu_path(photos, files):
    """``decode_on="device"``: the workers hand over the JPEGs a plain decoder reads as decode_image does, and
    ``model_images`` decodes them (one batched decode_jpeg, then the float resize) into the padded batch. On the CPU
    (libjpeg-turbo on both sides) against the CPU path without draft: at most 2 levels at a pixel, 0.3 on average
    (the resize's float rounding); the JPEG decoders' tolerance we allow a GPU's decoder is the same 2 levels."""
    found = files[0]
    cpu = dataset(photos, PixelbertPixels(384, 32))
    device = dataset(photos, PixelbertPixels(384, 32), decode_on="device")
    handed = {device.image_ids[i]: device[i]["image"] for i in range(len(device))}
    for name, image in handed.items():
        assert isinstance(image, EncodedImage) == (name in found), name  # the rest decoded by the worker
    b = batch_of(device)
    assert [e is not None for e in b["encoded_images"]] == [n in found for n in device.image_ids]
    assert b["images"].dtype == torch.uint8 and torch.equal(b["pixel_masks"], batch_of(cpu)["pixel_masks"])
    a, b = model_images(batch_of(cpu)), model_images(b)
    assert "encoded_images" not in b and b["images"].dtype == torch.float32
    d = (a["images"] - b["images"]).abs() / LEVEL
    assert d.max() <= 2 + 1e-3 and d[a["pixel_masks"][:, None].expand_as(d)].mean() <= 0.3
    # JPEGs already at the model's size (as the writers' --resize stores them) are decoded alone, no resize: equal
    exact = {k: encode(decode_image(v).resize(pixelbert_resize(384, 32).output_size(*decode_image(v).size),
                                               Image.BICUBIC), quality=95, subsampling=0) for k, v in found.items()}
    files = [EncodedImage(v, decode_image(v).size[::-1], k) for k, v in exact.items()]
    for f, x in zip(files, decode_encoded(files, "cpu")):
        assert levels(x, pil_to_tensor(decode_image(f.data))).max() <= 2, f.name
    assert torch.equal(image_pixels(files[0]), decode_encoded(files[:1], "cpu")[0])


def test_device_decoding_keeps_missing_images_white_and_names_a_bad_file(photos, files):
    """A missing image (CMML) is the worker's white picture of the size the file would have had, 1.0 once
    normalised; a file the device cannot decode is an error naming it."""
    found = files[0]
    table = MissingTable(np.array([IMAGE_MISSING] + [0] * 9), "image", 0.1, 0)
    ds = dataset(photos, PixelbertPixels(384, 32), decode_on="device", missing=table)
    white = ds[0]["image"]  # no file handed over: a white image of the size the picture would have had
    assert white.dtype == torch.uint8 and white.eq(255).all() and white.shape == (3, 384, 512)
    assert model_images(collate([ds[0], ds[1]]))["images"][0, :, :384, :512].eq(1).all()
    bad = EncodedImage(b"\xff\xd8\xff" + bytes(500), (384, 512), "cut.jpg")  # a JPEG marker, then nothing
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        decode_encoded([EncodedImage(found["mid.jpg"], (384, 512), "fine.jpg"), bad], "cpu")
    assert device_jpeg_size(b"not an image") is None


def test_randaug_stays_in_the_worker_and_batches_do_not_mix_pixel_kinds(photos):
    """RandAugment draws per sample on the pixels, so an augmented set decodes in the worker whatever decode_on says;
    uint8 and float pixels in one batch are an error, not a silent cast."""
    ds = dataset(photos, PixelbertPixels(384, 32, randaug=True), decode_on="device")
    item = ds[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 384, 512)
    floats = dataset(photos, pixelbert_transform(384, 32))
    with pytest.raises(ValueError, match="different dtypes"):
        collate([item, floats[1]])
    with pytest.raises(ValueError, match="decode_on='gpu'"):
        dataset(photos, PixelbertPixels(384, 32), decode_on="gpu")


def test_a_run_decoding_on_the_device_trains_on_the_same_pixels(tmp_path):
    """Through Lightning (the pin-memory thread and the transfer leave the files alone; the module decodes them):
    an emm run with decode_on=device, at the demo pictures' own size (no resize, whose float and uint8 versions
    differ by up to 2 levels). Where the two decoders give the pictures the same pixels, as libjpeg-turbo does on
    both sides of a CPU, it computes what the CPU run computes: the accuracy matrix and every stored exemplar."""
    root = ensure_demo(tmp_path / "demo")
    with one_thread():
        runs = {on: run_experiment(demo_config(root, tmp_path / on, "emm", image_size=96, decode_on=on,
                                               jpeg_draft=False))  # the device decodes at full scale
                for on in ("cpu", "device")}
    results = {on: json.loads((d / "results.json").read_text()) for on, d in runs.items()}
    assert runs["device"].name != runs["cpu"].name  # decode_on names a run: its resize is float, not uint8
    assert results["device"]["completed_phases"] == 2 and results["device"]["memory"][-1]["exemplars"] > 0
    test = dataset(root / "demo_test.arrow", PixelbertPixels(96, 16))
    files = [EncodedImage(test.image_bytes(i), tuple(test[i]["image"].shape[-2:]), test.image_ids[i])
             for i in range(0, len(test), 9)]
    if all(torch.equal(x, test[i * 9]["image"]) for i, x in enumerate(decode_encoded(files, "cpu"))):
        assert results["device"]["accuracy_matrix"] == results["cpu"]["accuracy_matrix"]
        assert results["device"]["memory"] == results["cpu"]["memory"]
