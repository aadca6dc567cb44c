"""pixelbert resize/normalise and its uint8 inverse."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from emmcil.data.transforms import MinMaxResize, denormalize_to_uint8, normalize_uint8, pixelbert_transform


def rgb(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("hw", [(96, 96), (96, 128), (128, 96)])
def test_demo_sizes_are_kept_by_the_tiny_model_transform(hw):
    h, w = hw
    x = pixelbert_transform(size=96, size_divisor=16)(rgb(w, h))
    assert x.shape == (3, h, w) and x.dtype == torch.float32


def test_resize_rules_worked_by_hand():
    # 500x375 (WxH): shorter 375 -> 384, so W = 512; both multiples of 32
    assert pixelbert_transform(384)(rgb(500, 375)).shape == (3, 384, 512)
    # 1000x200: shorter -> 384 makes W 1920 > 639 = int(1333/800*384); rescale to W 639, H 127.8 -> 128;
    # floored to multiples of 32: W 608, H 128
    assert pixelbert_transform(384)(rgb(1000, 200)).shape == (3, 128, 608)
    # 100x70 with size 96 / divisor 16: H 96, W 137.1 -> 137 -> floored to 128
    assert pixelbert_transform(96, 16)(rgb(100, 70)).shape == (3, 96, 128)


@settings(max_examples=60, deadline=None)
@given(w=st.integers(8, 3000), h=st.integers(8, 3000), size=st.sampled_from([96, 384]),
       div=st.sampled_from([16, 32]))
def test_resize_properties(w, h, size, div):
    nw, nh = MinMaxResize(size, int(1333 / 800 * size), div).output_size(w, h)
    assert nw % div == 0 and nh % div == 0 and nw >= div and nh >= div
    assert min(nw, nh) <= size and max(nw, nh) <= int(1333 / 800 * size)
    if max(w, h) / min(w, h) < 1333 / 800 * 0.9:  # not capped: the shorter side reaches size (minus flooring)
        assert min(nw, nh) > size - div
        assert abs(nw / nh - w / h) / (w / h) < 0.5


def test_inception_normalisation():
    t = pixelbert_transform(96, 16)
    assert torch.all(t(Image.new("RGB", (96, 96), (255, 255, 255))) == 1.0)
    assert torch.all(t(Image.new("RGB", (96, 96), (0, 0, 0))) == -1.0)


def test_uint8_round_trip_is_exact():
    img = rgb(96, 128, seed=3)
    x = pixelbert_transform(96, 16)(img)  # no resize: exact pixels
    u = denormalize_to_uint8(x)
    assert u.dtype == torch.uint8 and torch.equal(u, torch.from_numpy(np.array(img)).permute(2, 0, 1))
    assert torch.allclose(normalize_uint8(u), x, atol=1e-6)
    batch = torch.stack([x, -x])
    assert denormalize_to_uint8(batch).shape == (2, 3, 128, 96)


def test_randaugment_changes_pixels_not_size():
    img = rgb(96, 128, seed=4)
    torch.manual_seed(0)
    plain = pixelbert_transform(96, 16)(img)
    augmented = [pixelbert_transform(96, 16, randaug=True)(img) for _ in range(4)]
    assert all(a.shape == plain.shape for a in augmented)
    assert any(not torch.equal(a, plain) for a in augmented)
