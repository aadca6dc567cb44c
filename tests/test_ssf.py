"""SSF: placement, initialisation, freeze policy, merge."""
import pytest
import torch

from conftest import make_batch
from emmcil.model import SSF, ViLT, ViLTConfig, apply_freeze_policy, count_parameters, merge_ssf


def test_ssf_placement_and_init():
    model = ViLT(ViLTConfig(hidden_size=64, num_layers=3, num_heads=4, patch_size=16, image_size=64,
                            vocab_size=50, mlp_ratio=4.0))
    names = {n for n, m in model.named_modules() if isinstance(m, SSF)}
    per_block = {"ssf_norm1", "attn.ssf_qkv", "attn.ssf_proj", "ssf_norm2", "mlp.ssf_fc1", "mlp.ssf_fc2"}
    expected = {f"transformer.blocks.{i}.{n}" for i in range(3) for n in per_block}
    expected |= {"transformer.patch_embed.ssf", "transformer.ssf_norm"}
    assert names == expected
    dims = {n: m.dim for n, m in model.named_modules() if isinstance(m, SSF)}
    assert dims["transformer.blocks.0.attn.ssf_qkv"] == 192 and dims["transformer.blocks.0.mlp.ssf_fc1"] == 256
    scales = torch.cat([m.scale.detach() for m in model.modules() if isinstance(m, SSF)])
    shifts = torch.cat([m.shift.detach() for m in model.modules() if isinstance(m, SSF)])
    assert abs(scales.mean() - 1) < 0.01 and abs(scales.std() - 0.02) < 0.005
    assert abs(shifts.mean()) < 0.01 and abs(shifts.std() - 0.02) < 0.005


def test_ssf_channel_axis_is_the_layout_not_a_coincidence_of_sizes():
    """The patch embedding's SSF scales the conv output's channels even when the patch grid is exactly hidden_size
    patches wide (a 1024 px wide image, patch 16, hidden 64): it used to scale the width there."""
    model = ViLT(ViLTConfig(hidden_size=64, num_layers=1, num_heads=4, patch_size=16, image_size=64, vocab_size=50))
    pe = model.transformer.patch_embed
    with torch.no_grad():
        pe.ssf.scale.uniform_(0.5, 1.5)
        pe.ssf.shift.uniform_(-1, 1)
        for width in (1008, 1024):  # 63 and 64 (= hidden_size) patches wide
            x = torch.randn(1, 3, 16, width)
            ref = pe.proj(x) * pe.ssf.scale.view(1, -1, 1, 1) + pe.ssf.shift.view(1, -1, 1, 1)
            assert torch.equal(pe(x), ref), width
    tokens = SSF(8)
    with torch.no_grad():
        x = torch.randn(2, 8, 8)  # tokens (B, N = C, C): channels last, whatever N is
        assert torch.equal(tokens(x), x * tokens.scale + tokens.shift)
    with pytest.raises(ValueError, match=r"SSF\(8\) over \(B, C, ...\) got a tensor of shape \(1, 4, 8, 8\)"):
        SSF(8, channel_dim=1)(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"over \(\.\.\., C\)"):
        tokens(torch.zeros(2, 8, 4))


def test_ssf_switch_off():
    model = ViLT(ViLTConfig(hidden_size=32, num_layers=1, num_heads=4, patch_size=16, image_size=64,
                            vocab_size=50, ssf=False))
    assert not any(isinstance(m, SSF) for m in model.modules())
    with pytest.raises(ValueError, match="without SSF"):
        apply_freeze_policy(model, "ssf")
    assert apply_freeze_policy(model, "frozen") == count_parameters(model.pooler)


def test_vilt_b32_trainable_count_is_ssf_plus_pooler():
    model = ViLT(ViLTConfig())  # ViLT-B/32 at real size
    n = apply_freeze_policy(model, "ssf")
    assert n == 205_824 + 768 * 768 + 768


def test_frozen_parameters_get_no_gradient(tiny_cfg):
    torch.manual_seed(0)
    model = ViLT(tiny_cfg)
    apply_freeze_policy(model, "ssf")
    out = model(*make_batch())
    out.pooled.sum().backward()
    for name, p in model.named_parameters():
        if ".ssf" in name or name.startswith("pooler."):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_freeze_policy_prefixes_match_at_any_depth(tiny_cfg):
    wrapper = torch.nn.Module()
    wrapper.backbone = ViLT(tiny_cfg)
    wrapper.classifier = torch.nn.Linear(32, 5)
    n = apply_freeze_policy(wrapper, "ssf")
    assert wrapper.classifier.weight.requires_grad and wrapper.backbone.pooler.dense.weight.requires_grad
    assert not wrapper.backbone.transformer.blocks[0].attn.qkv.weight.requires_grad
    assert n == count_parameters(wrapper, trainable_only=True)
    with pytest.raises(ValueError, match="tuning="):
        apply_freeze_policy(wrapper, "lora")


def test_merge_folds_ssf_with_equal_outputs(tiny_cfg):
    torch.manual_seed(0)
    model = ViLT(tiny_cfg).eval()
    # make the SSF factors far from identity so that a wrong fold would show
    for m in model.modules():
        if isinstance(m, SSF):
            m.scale.data.uniform_(0.5, 1.5)
            m.shift.data.uniform_(-0.5, 0.5)
    batch = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    before = model(*batch, return_attention=True)
    merged = merge_ssf(model)
    assert not any(isinstance(m, SSF) for m in merged.modules())
    after = merged(*batch, return_attention=True)
    assert torch.allclose(before.hidden, after.hidden, atol=1e-5)
    assert torch.allclose(before.pooled, after.pooled, atol=1e-5)
    for a, b in zip(before.attentions, after.attentions):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("qkv_bias", [True, False])  # without a bias, folding the shift creates one
def test_inference_runs_a_merged_copy_and_leaves_the_trained_backbone_alone(tiny_cfg, qkv_bias):
    from emmcil.engine.module import IncrementalModule
    from emmcil.methods import Method
    from emmcil.model.ssf import has_ssf
    from run_helpers import settings

    torch.manual_seed(0)
    cfg = {**tiny_cfg, "load_path": "", "tuning": "ssf", "qkv_bias": qkv_bias}
    s = settings(**cfg)
    module = IncrementalModule(Method(s), s)
    module.add_classes(3)
    module.eval()
    ssfs = [m for m in module.modules() if isinstance(m, SSF)]
    for m in ssfs:
        m.scale.data.uniform_(0.5, 1.5)
        m.shift.data.uniform_(-0.5, 0.5)
    text_ids, text_masks, images, pixel_masks = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    batch = {"text_ids": text_ids, "text_masks": text_masks, "images": images, "pixel_masks": pixel_masks}
    trained = module.backbone
    state = {k: v.clone() for k, v in module.state_dict().items()}
    n_params = sum(1 for _ in module.parameters())
    for step in range(2):
        reference = module(batch)
        with torch.no_grad(), module.ssf_merged():
            assert module.backbone is not trained and not has_ssf(module.backbone)
            merged = module(batch)
        assert module.backbone is trained
        assert torch.allclose(merged, reference, atol=1e-5)
        # the trained parameters and the checkpointed state are untouched; the copy is no submodule
        assert all(torch.equal(v, module.state_dict()[k]) for k, v in state.items())
        assert sum(1 for _ in module.parameters()) == n_params
        # training moves SSF on: the next merged pass follows it
        ssfs[0].scale.data.mul_(1.5)
        state = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(RuntimeError), module.ssf_merged():
        raise RuntimeError("a failing pass")
    assert module.backbone is trained
