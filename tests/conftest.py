import importlib
import os
import warnings

import pytest
import torch
from PIL import Image

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


def pytest_addoption(parser):
    parser.addoption("--environment-report", action="store_true",
                     help="print Python, torch and its build, the CPU and every installed version before the tests "
                          "(emmcil.environment; .ci/run sets it)")


def pytest_sessionstart(session):
    # printed even under -q, which hides pytest's own header: CI output must say what the tests ran on
    if session.config.getoption("--environment-report"):
        from emmcil.environment import report
        session.config.get_terminal_writer().line(report(with_freeze=True))


TINY_CFG = dict(hidden_size=32, num_layers=2, num_heads=4, mlp_ratio=2.0, patch_size=16, image_size=64,
                max_text_len=12, vocab_size=120, drop_rate=0.0)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """The embedded demo set, written once for a test module (``emmcil.data.ensure_demo``)."""
    from emmcil.data import ensure_demo

    return ensure_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def tiny_cfg():
    return dict(TINY_CFG)


def make_batch(B=3, T=12, H=64, W=96, vocab=120, seed=0, sizes=None):
    """Random image-text batch; ``sizes`` [(h, w)] zero-pads each image to (H, W) bottom/right."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(B, 3, H, W, generator=g)
    pixel_masks = torch.ones(B, H, W, dtype=torch.bool)
    for b, (h, w) in enumerate(sizes or []):
        images[b, :, h:] = 0
        images[b, :, :, w:] = 0
        pixel_masks[b, h:] = False
        pixel_masks[b, :, w:] = False
    text_ids = torch.randint(5, vocab, (B, T), generator=g)
    text_ids[:, 0] = 1
    text_masks = torch.ones(B, T, dtype=torch.long)
    for b in range(B):
        n = T - 2 * b  # different text lengths
        text_masks[b, n:] = 0
        text_ids[b, n:] = 0
    return text_ids, text_masks, images, pixel_masks


def require(module: str):
    """A package requirements.txt lists for a feature that stays optional at run time (TensorBoard's writer, W&B).
    Under CI (``CI`` set) it must be installed, so its test runs there and fails if it is missing; in a development
    environment without it, the test is skipped with the command that installs it."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed here: pip install -r requirements.txt")


def assert_print_figure(png) -> None:
    """A figure for a paper: the PNG at print resolution (300 dpi recorded, and that many pixels: a 5-inch-wide
    panel is 1,500 px), and a vector PDF beside it with TrueType fonts (venues refuse Type 3)."""
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.5)
        assert image.width >= 1500, image.size  # every figure is at least 5 inches wide
    pdf = png.with_suffix(".pdf").read_bytes()
    assert pdf[:5] == b"%PDF-" and b"/FontFile2" in pdf and b"/Type3" not in pdf
