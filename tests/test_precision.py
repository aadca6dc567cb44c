"""Mixed precision on CPU: bf16 autocast predictions vs float32, and masks that do not depend on autocast."""
import pytest
import torch
from torch.utils.data import DataLoader

from emmcil.data import ArrowDataset, collate, ensure_demo, get_tokenizer, pixelbert_transform
from emmcil.memory.masking import MaskingConfig, mask_canvas, masking_step
from emmcil.model import TINY, ViLT


@pytest.fixture(scope="module")
def demo_batches(tmp_path_factory):
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    ds = ArrowDataset(root / "demo_test.arrow", get_tokenizer(), pixelbert_transform(96, 16), 40)
    return list(DataLoader(ds, batch_size=50, collate_fn=collate))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ViLT(dict(TINY, max_text_len=40, drop_rate=0.0)).eval()
    head = torch.nn.Linear(m.cfg.hidden_size, 10)
    return m, head


def test_bf16_autocast_predictions_match_float32(model, demo_batches):
    backbone, head = model
    agree, total, worst = 0, 0, 0.0
    with torch.no_grad():
        for batch in demo_batches:
            args = (batch["text_ids"], batch["text_masks"], batch["images"], batch["pixel_masks"])
            f32 = backbone(*args).pooled
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = backbone(*args).pooled.float()
            worst = max(worst, float((bf16 - f32).abs().max()))
            agree += int((head(bf16).argmax(1) == head(f32).argmax(1)).sum())
            total += len(f32)
    # stated tolerance: pooled features within 0.05 (tanh outputs in [-1, 1]), >= 95 % identical predictions
    assert worst < 0.05
    assert agree / total >= 0.95


def test_masks_under_autocast_equal_float32(model, demo_batches):
    backbone, _ = model
    cfg, canvas = MaskingConfig(), mask_canvas(96, 16)
    batch = demo_batches[0]
    ref = masking_step(backbone, batch, cfg, canvas)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = masking_step(backbone, batch, cfg, canvas)
    for key in ("patch_keep", "text_keep"):
        assert torch.equal(ref[key], amp[key]), key
    # bitwise: masking_step switches autocast off, so both calls run the same float32 kernels on the same inputs
    for key in ("image_scores", "features", "masked_features"):
        assert amp[key].dtype == torch.float32 and torch.equal(ref[key], amp[key]), key
