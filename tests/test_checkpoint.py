"""Checkpoint loading: the original ViLT Lightning format, Hugging Face ViltModel, timm ViT; resizing; errors."""
import collections

import pytest
import torch
from transformers import ViltConfig as HFViltConfig
from transformers import ViltModel

from conftest import make_batch
from emmcil.model import ViLT, ViLTConfig, build_backbone, load_pretrained, read_state_dict


def original_vilt_state_dict(hidden=768, layers=12, vocab=30522, text_len=40, grid=12, patch=32, seed=0):
    """Random tensors under the key names and shapes of ``vilt_200k_mlm_itm.ckpt`` (written out independently of
    our module tree, from the original ViLT code: vilt_module.py, vision_transformer.py, heads.py)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.02  # noqa: E731
    C, M = hidden, 4 * hidden
    sd = collections.OrderedDict()
    sd["text_embeddings.position_ids"] = torch.arange(text_len)[None]
    sd["text_embeddings.word_embeddings.weight"] = r(vocab, C)
    sd["text_embeddings.position_embeddings.weight"] = r(text_len, C)
    sd["text_embeddings.token_type_embeddings.weight"] = r(2, C)
    sd["text_embeddings.LayerNorm.weight"] = 1 + r(C)
    sd["text_embeddings.LayerNorm.bias"] = r(C)
    sd["token_type_embeddings.weight"] = r(2, C)
    sd["transformer.cls_token"] = r(1, 1, C)
    sd["transformer.pos_embed"] = r(1, 1 + grid * grid, C)
    sd["transformer.patch_embed.proj.weight"] = r(C, 3, patch, patch)
    sd["transformer.patch_embed.proj.bias"] = r(C)
    for i in range(layers):
        b = f"transformer.blocks.{i}."
        sd[b + "norm1.weight"], sd[b + "norm1.bias"] = 1 + r(C), r(C)
        sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"] = r(3 * C, C), r(3 * C)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = r(C, C), r(C)
        sd[b + "norm2.weight"], sd[b + "norm2.bias"] = 1 + r(C), r(C)
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = r(M, C), r(M)
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = r(C, M), r(C)
    sd["transformer.norm.weight"], sd["transformer.norm.bias"] = 1 + r(C), r(C)
    sd["pooler.dense.weight"], sd["pooler.dense.bias"] = r(C, C), r(C)
    sd["mlm_score.bias"] = r(vocab)
    sd["mlm_score.transform.dense.weight"], sd["mlm_score.transform.dense.bias"] = r(C, C), r(C)
    sd["mlm_score.transform.LayerNorm.weight"], sd["mlm_score.transform.LayerNorm.bias"] = 1 + r(C), r(C)
    sd["mlm_score.decoder.weight"] = r(vocab, C)
    sd["itm_score.fc.weight"], sd["itm_score.fc.bias"] = r(2, C), r(2)
    return sd


def test_original_vilt_b32_checkpoint_loads_with_no_missing_backbone_key(tmp_path):
    sd = original_vilt_state_dict()
    path = tmp_path / "vilt_200k_mlm_itm.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 200000}, path)
    model = ViLT(ViLTConfig())
    report = load_pretrained(model, path)
    assert report.format == "vilt"
    assert report.missing == [] and report.resized == []
    assert sorted(report.unexpected) == sorted(k for k in sd if k.startswith(("mlm_score", "itm_score")))
    own = model.state_dict()
    for k, v in sd.items():
        if k in own:
            assert torch.equal(own[k], v), k


def test_original_checkpoint_round_trip_gives_same_outputs(tmp_path, tiny_cfg):
    torch.manual_seed(0)
    src = ViLT(dict(tiny_cfg, ssf=False)).eval()
    sd = {k: v for k, v in src.state_dict().items()}
    sd["text_embeddings.position_ids"] = torch.arange(12)[None]
    torch.save({"state_dict": sd}, tmp_path / "tiny.ckpt")
    with pytest.raises(TypeError, match=r"\['load_path'\] in the config mapping are arguments"):
        build_backbone(dict(tiny_cfg, ssf=False, load_path=str(tmp_path / "tiny.ckpt")))  # would load nothing
    dst = build_backbone(dict(tiny_cfg, ssf=False), load_path=str(tmp_path / "tiny.ckpt")).eval()
    batch = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    assert torch.allclose(src(*batch).pooled, dst(*batch).pooled, atol=1e-6)


def test_text_position_embeddings_are_interpolated(tmp_path):
    sd = original_vilt_state_dict(hidden=32, layers=1, vocab=50, grid=4, patch=16)
    torch.save({"state_dict": sd}, tmp_path / "a.ckpt")
    model = ViLT(ViLTConfig(hidden_size=32, num_layers=1, num_heads=4, patch_size=16, image_size=64,
                            vocab_size=50, max_text_len=77))
    report = load_pretrained(model, tmp_path / "a.ckpt")
    assert report.resized == ["text_embeddings.position_embeddings.weight"]
    new = model.text_embeddings.position_embeddings.weight.detach()
    old = sd["text_embeddings.position_embeddings.weight"]
    assert new.shape == (77, 32)
    # bilinear over positions: endpoints follow the old ones, values stay within the old range per channel
    assert torch.all(new.max(0).values <= old.max(0).values + 1e-6)
    assert torch.all(new.min(0).values >= old.min(0).values - 1e-6)
    assert torch.allclose(new[0], old[0], atol=1e-2) and torch.allclose(new[-1], old[-1], atol=1e-2)


def test_image_position_grid_is_resized(tmp_path):
    sd = original_vilt_state_dict(hidden=32, layers=1, vocab=50, grid=12, patch=16)
    torch.save({"state_dict": sd}, tmp_path / "a.ckpt")
    model = ViLT(ViLTConfig(hidden_size=32, num_layers=1, num_heads=4, patch_size=16, image_size=64,
                            vocab_size=50, max_text_len=40))
    report = load_pretrained(model, tmp_path / "a.ckpt")
    assert report.resized == ["transformer.pos_embed"]
    assert model.transformer.pos_embed.shape == (1, 17, 32)
    assert torch.equal(model.transformer.pos_embed[0, 0], sd["transformer.pos_embed"][0, 0])


@pytest.mark.parametrize("image_size", [224, 512])
def test_vilt_b32_positions_resize_as_vilt_does(image_size):
    """ViLT-B/32's 12 x 12 table (C = 768) resized for another image_size equals ViLT's own bilinear resize
    (``F.interpolate(..., mode="bilinear", align_corners=True)`` of the grid, the [CLS] entry kept), written out
    here independently of the library call; 1e-6 covers float32 rounding (the values are ~0.02)."""
    from emmcil.model.checkpoint import resize_image_positions

    pos = original_vilt_state_dict(hidden=768, layers=0, vocab=2)["transformer.pos_embed"]   # (1, 145, 768)
    grid = image_size // 32
    spatial = pos[:, 1:].transpose(1, 2).reshape(1, 768, 12, 12)
    spatial = torch.nn.functional.interpolate(spatial, size=(grid, grid), mode="bilinear", align_corners=True)
    expected = torch.cat([pos[:, :1], spatial.flatten(2).transpose(1, 2)], dim=1)
    out = resize_image_positions(pos, grid)
    assert out.shape == (1, 1 + grid * grid, 768) and torch.equal(out[:, 0], pos[:, 0])
    assert torch.allclose(out, expected, rtol=0, atol=1e-6)
    assert torch.equal(resize_image_positions(pos, 12), pos)  # the checkpoint's own size: unchanged
    with pytest.raises(ValueError, match="square"):
        resize_image_positions(pos[:, :-1], grid)


def test_shape_mismatch_names_the_key(tmp_path):
    sd = original_vilt_state_dict(hidden=32, layers=1, vocab=50, grid=4, patch=16)
    torch.save({"state_dict": sd}, tmp_path / "a.ckpt")
    model = ViLT(ViLTConfig(hidden_size=32, num_layers=1, num_heads=4, patch_size=16, image_size=64,
                            vocab_size=60))
    with pytest.raises(ValueError, match=r"word_embeddings.weight: checkpoint \(50, 32\) vs model \(60, 32\)"):
        load_pretrained(model, tmp_path / "a.ckpt")


def test_missing_backbone_keys_fail_unless_allowed(tmp_path):
    sd = original_vilt_state_dict(hidden=32, layers=2, vocab=50, grid=4, patch=16)
    del sd["transformer.blocks.1.mlp.fc2.weight"]
    torch.save({"state_dict": sd}, tmp_path / "a.ckpt")
    model = ViLT(ViLTConfig(hidden_size=32, num_layers=2, num_heads=4, patch_size=16, image_size=64, vocab_size=50))
    with pytest.raises(ValueError, match="blocks.1.mlp.fc2.weight"):
        load_pretrained(model, tmp_path / "a.ckpt")
    report = load_pretrained(model, tmp_path / "a.ckpt", allow_missing_backbone=True)
    assert report.missing_backbone == ["transformer.blocks.1.mlp.fc2.weight"]


class _Opaque:  # stands for the sacred config objects a Lightning checkpoint pickles
    pass


def test_weights_only_by_default_and_trust_opt_in(tmp_path):
    sd = original_vilt_state_dict(hidden=32, layers=1, vocab=50, grid=4, patch=16)
    torch.save({"state_dict": sd, "hyper_parameters": _Opaque()}, tmp_path / "a.ckpt")
    with pytest.raises(RuntimeError, match="trust"):
        read_state_dict(tmp_path / "a.ckpt")
    assert "transformer.cls_token" in read_state_dict(tmp_path / "a.ckpt", trust=True)


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        read_state_dict(tmp_path / "nope.ckpt")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    model = ViLT(ViLTConfig(hidden_size=32, num_layers=1, num_heads=4, patch_size=16, image_size=64, vocab_size=50))
    with pytest.raises(ValueError, match="unrecognised checkpoint"):
        load_pretrained(model, tmp_path / "foreign.pt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_state_dict(tmp_path / "empty_dir")


def _hf_twin(tiny_cfg, seed=0):
    """A random transformers ViltModel of the tiny size with ViLT's LayerNorm eps (1e-12 text, 1e-6 encoder)."""
    torch.manual_seed(seed)
    hf_cfg = HFViltConfig(vocab_size=tiny_cfg["vocab_size"], hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, max_position_embeddings=12,
                          image_size=64, patch_size=16, layer_norm_eps=1e-12, max_image_length=-1)
    hf = ViltModel(hf_cfg).eval()
    with torch.no_grad():  # random LayerNorm affine too, so that a wrongly mapped norm would show
        for name, p in hf.named_parameters():
            if "layernorm" in name.lower():
                p.add_(torch.randn_like(p) * 0.1)
    for layer in hf.encoder.layer:
        layer.layernorm_before.eps = layer.layernorm_after.eps = 1e-6
    hf.layernorm.eps = 1e-6
    return hf


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_hugging_face_vilt_loads_and_matches_transformers_outputs(tmp_path, tiny_cfg, fmt):
    hf = _hf_twin(tiny_cfg)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=(fmt == "safetensors"))
    ours = build_backbone(dict(tiny_cfg, ssf=False), load_path=str(tmp_path / "hf")).eval()
    text_ids, text_masks, images, pixel_masks = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    with torch.no_grad():
        ref = hf(input_ids=text_ids, attention_mask=text_masks, pixel_values=images,
                 pixel_mask=pixel_masks.long(), output_attentions=True)
        out = ours(text_ids, text_masks, images, pixel_masks, return_attention=True)
    assert torch.allclose(out.pooled, ref.pooler_output, atol=1e-5)
    # text tokens do not depend on the image-token order (HF shuffles patches when all are valid)
    assert torch.allclose(out.hidden[:, :12], ref.last_hidden_state[:, :12], atol=1e-5)
    # text [CLS] -> text attention of the last layer agrees too
    assert torch.allclose(out.attentions[-1][:, :, 0, :12], ref.attentions[-1][:, :, 0, :12], atol=1e-5)


def test_hugging_face_task_model_prefix_is_stripped(tmp_path, tiny_cfg):
    hf = _hf_twin(tiny_cfg)
    sd = {f"vilt.{k}": v for k, v in hf.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(4, 32)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    model = ViLT(dict(tiny_cfg, ssf=False))
    report = load_pretrained(model, tmp_path)
    assert report.format == "hf" and report.missing == []
    assert report.unexpected == ["classifier.0.weight"]


def test_timm_vit_initialises_the_image_side(tmp_path, tiny_cfg):
    import timm
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, embed_dim=32, depth=2, num_heads=4,
                            mlp_ratio=2.0, img_size=64, num_classes=7)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    model = ViLT(tiny_cfg)
    report = load_pretrained(model, tmp_path / "vit.pth", allow_missing_backbone=True)
    assert report.format == "timm" and report.missing == []
    assert torch.equal(model.transformer.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)
    assert torch.equal(model.transformer.pos_embed, vit.pos_embed)
