"""The ViLT-derived backbone: shapes, attention, masks, variable image sizes, patch subsets, patch sampling."""
import pytest
import torch

from conftest import make_batch
from emmcil.model import ViLT, ViLTConfig


@pytest.fixture
def model(tiny_cfg):
    torch.manual_seed(0)
    return ViLT(tiny_cfg).eval()


def test_shapes_and_layout(model, tiny_cfg):
    text_ids, text_masks, images, pixel_masks = make_batch()
    out = model(text_ids, text_masks, images, pixel_masks, return_attention=True)
    P = (64 // 16) * (96 // 16)
    N = 12 + 1 + P
    assert out.pooled.shape == (3, 32)
    assert out.hidden.shape == (3, N, 32)
    assert out.masks.shape == (3, N) and out.text_len == 12
    assert out.patch_index.shape == (3, P, 2)
    assert out.grid_sizes.tolist() == [[4, 6]] * 3
    assert len(out.attentions) == tiny_cfg["num_layers"]
    assert all(a.shape == (3, 4, N, N) and a.dtype == torch.float32 for a in out.attentions)
    # pooled = tanh(pooler(norm(x)[:, 0]))
    assert torch.allclose(out.pooled, torch.tanh(model.pooler.dense(out.hidden[:, 0])))
    # row-major patch order at evaluation
    assert out.patch_index[0, :7].tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [1, 0]]


def test_attention_rows_sum_to_one_over_valid_keys(model):
    text_ids, text_masks, images, pixel_masks = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    out = model(text_ids, text_masks, images, pixel_masks, return_attention=True)
    keys = out.masks[:, None, None, :]
    for attn in out.attentions:
        assert torch.allclose(attn.sum(-1), torch.ones_like(attn[..., 0]), atol=1e-5)
        assert (attn.masked_select(~keys.expand_as(attn)) == 0).all()
    # the padded text of sample 2 and the padded patches of samples 1, 2 are masked
    assert out.masks[2, 8:12].sum() == 0
    assert out.image_masks[1].sum() == 2 * 4 and out.image_masks[2].sum() == 3 * 2


def test_sdpa_path_equals_explicit_attention(tiny_cfg):
    torch.manual_seed(1)
    model = ViLT(tiny_cfg).eval()
    batch = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    fused = model(*batch)
    explicit = model(*batch, return_attention=True)
    assert fused.attentions is None
    assert torch.allclose(fused.hidden, explicit.hidden, atol=1e-5)
    assert torch.allclose(fused.pooled, explicit.pooled, atol=1e-5)


def test_images_of_different_sizes_in_one_batch_equal_alone(model):
    sizes = [(64, 96), (32, 64), (48, 32)]
    text_ids, text_masks, images, pixel_masks = make_batch(sizes=sizes)
    batched = model(text_ids, text_masks, images, pixel_masks)
    for b, (h, w) in enumerate(sizes):
        alone = model(text_ids[b:b + 1], text_masks[b:b + 1], images[b:b + 1, :, :h, :w])
        assert alone.grid_sizes[0].tolist() == [h // 16, w // 16]
        assert torch.allclose(batched.pooled[b], alone.pooled[0], atol=1e-5)


def test_patch_keep_mask_equals_feeding_only_those_patches(model):
    text_ids, text_masks, images, pixel_masks = make_batch(B=2, sizes=[(64, 96), (48, 64)])
    g = torch.Generator().manual_seed(3)
    keep = torch.rand(2, 4, 6, generator=g) > 0.5
    keep[:, 0, 0] = True
    # zero pixels in kept patches must not be mistaken for padding
    images[0, :, :16, :16] = 0
    masked = model(text_ids, text_masks, images, pixel_masks, patch_keep=keep, return_attention=True)
    # the same patches cut out and fed as a subset at their grid positions
    p = 16
    for b, (h, w) in enumerate([(4, 6), (3, 4)]):
        cells = [(r, c) for r in range(h) for c in range(w) if keep[b, r, c]]
        patches = torch.stack([images[b, :, r * p:(r + 1) * p, c * p:(c + 1) * p] for r, c in cells])[None]
        index = torch.tensor(cells)[None]
        subset = model(text_ids[b:b + 1], text_masks[b:b + 1], patches=patches, patch_index=index,
                       grid_sizes=torch.tensor([[h, w]]))
        assert masked.image_masks[b].sum() == len(cells)
        assert torch.allclose(masked.pooled[b], subset.pooled[0], atol=1e-5)
        assert masked.patch_index[b, :len(cells)].tolist() == [list(c) for c in cells]
    # masked patches receive no attention
    kept_grid = masked.patch_index[0][masked.image_masks[0]]
    assert (kept_grid[:, 0] * 6 + kept_grid[:, 1]).tolist() == keep[0].flatten().nonzero()[:, 0].tolist()


def test_a_batch_that_keeps_no_patch_has_the_image_cls_alone(model):
    """Every patch dropped (an image-missing probe, a batch of image-less samples): the image [CLS] alone; the
    position-embedding lookup of zero patches used to fail to reshape."""
    text_ids, text_masks, images, pixel_masks = make_batch(B=2, H=64, W=96)
    out = model(text_ids, text_masks, images, pixel_masks, patch_keep=torch.zeros(2, 4, 6, dtype=torch.bool))
    assert out.pooled.shape == (2, 32) and out.num_patches == 0 and torch.isfinite(out.pooled).all()


def test_text_mask_drops_words_but_keeps_positions(model):
    text_ids, text_masks, images, pixel_masks = make_batch(B=1)
    keep = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1]])
    masked = model(text_ids, keep, images, pixel_masks)
    # replacing the dropped words by other ids changes nothing: they are never attended to
    other = text_ids.clone()
    other[keep == 0] = 7
    same = model(other, keep, images, pixel_masks)
    assert torch.allclose(masked.pooled, same.pooled, atol=1e-6)
    full = model(text_ids, text_masks, images, pixel_masks)
    assert not torch.allclose(masked.pooled, full.pooled, atol=1e-4)


def test_no_patch_sampling_at_eval_random_subset_in_training(tiny_cfg):
    cfg = dict(tiny_cfg, max_image_len=10)
    torch.manual_seed(0)
    model = ViLT(cfg).eval()
    batch = make_batch(B=2)
    a, b = model(*batch), model(*batch)
    assert a.image_masks.shape[1] == 24 and torch.equal(a.pooled, b.pooled)  # the same forward replayed: bitwise
    model.train()
    torch.manual_seed(1)
    t1 = model(*batch)
    torch.manual_seed(2)
    t2 = model(*batch)
    assert t1.image_masks.shape[1] == 10 and t1.image_masks.all()
    assert not torch.equal(t1.patch_index, t2.patch_index)
    # a sampled subset is a set of distinct real patches
    for idx in t1.patch_index:
        assert len({tuple(x) for x in idx.tolist()}) == 10


def test_position_embeddings_interpolated_to_each_grid(model):
    """pos_embed_at is ViLT's F.interpolate(bilinear, align_corners=True) of the table, for every grid at once."""
    vt = model.transformer
    g, C = vt.cfg.grid, vt.pos_embed.shape[-1]
    spatial = vt.pos_embed[0, 1:].T.reshape(1, C, g, g)
    grids = [(g, g), (2, 3), (1, 5), (7, 6), (3, 1)]
    R, Cc = max(r for r, _ in grids), max(c for _, c in grids)
    rows, cols = torch.meshgrid(torch.arange(R), torch.arange(Cc), indexing="ij")
    cells = torch.stack([rows, cols], -1).reshape(1, R * Cc, 2).expand(len(grids), -1, -1)
    got = vt.pos_embed_at(cells, torch.tensor(grids))
    for b, (r, c) in enumerate(grids):
        ref = torch.nn.functional.interpolate(spatial, size=(r, c), mode="bilinear", align_corners=True)[0]
        inside = ((cells[b, :, 0] < r) & (cells[b, :, 1] < c))
        assert torch.allclose(got[b, inside], ref.flatten(1).T, atol=1e-6), (r, c)


def test_bad_inputs_have_clear_errors(model):
    text_ids, text_masks, images, pixel_masks = make_batch(B=1)
    with pytest.raises(ValueError, match="patch_keep has shape"):
        model(text_ids, text_masks, images, pixel_masks, patch_keep=torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="exactly one"):
        model(text_ids, text_masks)
    with pytest.raises(ValueError, match="outside its grid"):
        model(text_ids, text_masks, patches=torch.zeros(1, 1, 3, 16, 16), patch_index=torch.tensor([[[5, 0]]]),
              grid_sizes=torch.tensor([[2, 2]]))
    with pytest.raises(ValueError, match="max_text_len"):
        model(torch.zeros(1, 20, dtype=torch.long), torch.ones(1, 20), images, pixel_masks)
    with pytest.raises(ValueError, match="divisible"):
        ViLT(ViLTConfig(hidden_size=30, num_heads=4))


def test_attention_of_chosen_layers_only(model):
    batch = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    every = model(*batch, return_attention=True)
    last = model(*batch, return_attention=[-1])
    assert last.attentions[0] is None
    assert torch.allclose(last.attentions[1], every.attentions[1], atol=1e-5)
    assert torch.allclose(last.pooled, every.pooled, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        model(*batch, return_attention=[2])


def test_prefix_keys_values_in_attention(model):
    batch = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    g = torch.Generator().manual_seed(5)
    prefixes = [None, (torch.randn(3, 4, 32, generator=g), torch.randn(3, 4, 32, generator=g))]
    fused = model(*batch, prefixes=prefixes)
    explicit = model(*batch, prefixes=prefixes, return_attention=True)
    assert torch.allclose(fused.pooled, explicit.pooled, atol=1e-5)
    N = explicit.hidden.shape[1]
    a0, a1 = explicit.attentions
    assert a0.shape[-1] == N and a1.shape[-1] == N + 4
    assert torch.allclose(a1.sum(-1), torch.ones_like(a1[..., 0]), atol=1e-5)
    assert (a1[..., N:] > 0).all()  # prefixes are attended to by every token
    plain = model(*batch)
    assert not torch.allclose(plain.pooled, fused.pooled, atol=1e-4)
    with pytest.raises(ValueError, match="prefixes has 1 entries"):
        model(*batch, prefixes=[None])


def test_extra_tokens_are_appended_and_attended(model):
    batch = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    extra = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(6))
    plain = model(*batch, return_attention=True)
    out = model(*batch, extra_tokens=extra, return_attention=True)
    assert out.num_extra == 5 and out.hidden.shape[1] == plain.hidden.shape[1] + 5
    assert torch.equal(out.image_masks, plain.image_masks) and out.masks[:, -5:].all()
    assert torch.allclose(out.pooled, model(*batch, extra_tokens=extra).pooled, atol=1e-5)
    assert not torch.allclose(out.pooled, plain.pooled, atol=1e-4)


def test_adapter_reads_the_residual_stream_before_norm2(model):
    """PILOT's EASE (backbone/vit_ease.py Block.forward): adapt(x) on the stream after attention, not on norm2(x)."""
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["adapter"] = x.detach()
            return torch.zeros_like(x)

    hook = model.transformer.blocks[1].norm2.register_forward_pre_hook(
        lambda module, args: seen.__setitem__("norm2", args[0].detach()))
    model(*make_batch(), adapters=[None, Probe()])
    hook.remove()
    assert torch.equal(seen["adapter"], seen["norm2"])


def test_parallel_adapters(model):
    batch = make_batch()
    zero = torch.nn.Linear(32, 32)
    torch.nn.init.zeros_(zero.weight)
    torch.nn.init.zeros_(zero.bias)
    plain = model(*batch).pooled
    assert torch.allclose(model(*batch, adapters=[zero, None]).pooled, plain, atol=1e-6)
    adapter = torch.nn.Linear(32, 32)
    for p in model.parameters():
        p.requires_grad_(False)
    out = model(*batch, adapters=[None, adapter]).pooled
    assert not torch.allclose(out, plain, atol=1e-4)
    out.sum().backward()
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0


def test_packed_forward_equals_padded_forward(model):
    """pack=k runs the attended tokens only, k samples a row: the same outputs at every attended slot."""
    text_ids, text_masks, images, pixel_masks = make_batch(B=5, sizes=[(64, 96), (32, 64), (48, 32), (64, 48),
                                                                        (16, 16)])
    text_masks[1, 3:7] = 0  # masked words inside the text, as a masked exemplar
    keep = torch.rand(5, 4, 6, generator=torch.Generator().manual_seed(2)) > 0.4
    extra = torch.randn(5, 2, 32, generator=torch.Generator().manual_seed(4))
    adapter = torch.nn.Linear(32, 32)
    for kwargs in ({}, {"patch_keep": keep}, {"patch_keep": keep, "extra_tokens": extra},
                   {"adapters": [adapter, None]}):
        padded = model(text_ids, text_masks, images, pixel_masks, **kwargs)
        for per_row in (1, 2, 5):
            packed = model(text_ids, text_masks, images, pixel_masks, pack=per_row, **kwargs)
            assert torch.allclose(packed.pooled, padded.pooled, atol=1e-5), (kwargs, per_row)
            attended = padded.masks[..., None]
            assert torch.allclose(packed.hidden, padded.hidden * attended, atol=1e-5), (kwargs, per_row)
            assert torch.equal(packed.masks, padded.masks) and torch.equal(packed.patch_index, padded.patch_index)
    with pytest.raises(ValueError, match="pack="):
        model(text_ids, text_masks, images, pixel_masks, pack=2, return_attention=[-1])


def test_pack_tokens_layout():
    from emmcil.model.vilt import pack_tokens, unpack_tokens
    masks = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    x = torch.arange(12.0).reshape(3, 4, 1)
    packed, attn_mask, slots = pack_tokens(x, masks, per_row=2)
    # row 0: sample 0 (3 tokens) then sample 1 (1 token); row 1: sample 2 (4 tokens)
    assert packed.shape == (2, 4, 1)
    assert packed[..., 0].tolist() == [[0, 1, 3, 4], [8, 9, 10, 11]]
    assert attn_mask[0, 0].tolist() == [[True] * 3 + [False]] * 3 + [[False] * 3 + [True]]
    assert torch.equal(unpack_tokens(packed, slots), x * masks[..., None])


def test_cheapest_pack_trades_padding_against_attention():
    from emmcil.model.vilt import cheapest_pack
    assert cheapest_pack([106, 60, 106, 38], width=768) == 4   # wide model: one row, no padding
    assert cheapest_pack([50] * 32, width=768) < 32             # but not 32 samples' attention in one row
    assert cheapest_pack([100, 100], width=8) == 1              # narrow model: attention dominates


def test_pooled_only_gives_the_pooled_feature_and_every_attention_row(model):
    text_ids, text_masks, images, pixel_masks = make_batch(B=5, sizes=[(64, 96), (32, 64), (48, 32), (64, 48),
                                                                        (16, 16)])
    keep = torch.rand(5, 4, 6, generator=torch.Generator().manual_seed(2)) > 0.4
    full = model(text_ids, text_masks, images, pixel_masks, return_attention=True)
    short = model(text_ids, text_masks, images, pixel_masks, return_attention=True, pooled_only=True)
    assert short.hidden.shape == (5, 1, 32)
    assert torch.allclose(short.pooled, full.pooled, atol=1e-5)
    assert torch.allclose(short.hidden[:, 0], full.hidden[:, 0], atol=1e-5)
    for a, b in zip(full.attentions, short.attentions):
        assert torch.allclose(a, b, atol=1e-6)
    masked = model(text_ids, text_masks, images, pixel_masks, patch_keep=keep)
    for per_row in (1, 2, 3):  # 3: the last row holds fewer samples than the others
        packed = model(text_ids, text_masks, images, pixel_masks, patch_keep=keep, pack=per_row, pooled_only=True)
        assert torch.allclose(packed.pooled, masked.pooled, atol=1e-5), per_row


@pytest.mark.parametrize("key, value, message", [
    ("max_text_len", 1, r"max_text_len=1: at least 2 \(\[CLS\] and \[SEP\]\)"),
    ("num_heads", 3, r"hidden_size=\d+ is not divisible by num_heads=3"),
    ("image_size", 24, r"image_size=24 is not a multiple of patch_size=16"),
    ("drop_rate", 1.0, r"drop_rate=1.0: a probability in \[0, 1\)"),
])
def test_a_backbone_size_no_model_can_have_is_an_error_naming_the_key(tiny_cfg, key, value, message):
    """When the model is built, before any training (max_text_len=1 used to fail in the first forward)."""
    with pytest.raises(ValueError, match=message):
        ViLTConfig.from_dict({**tiny_cfg, key: value})


def test_the_backbone_of_a_runs_settings_takes_each_size_from_its_concern():
    """ViLTConfig.from_settings: the sizes and regularisation from the model settings, the text length from the data
    settings, compile from the hardware settings (every field set to a value of its own, so a crossed one shows)."""
    import dataclasses

    from run_helpers import changed, resolve, settings

    values = dict(vocab_size=77, hidden_size=48, num_layers=3, num_heads=6, mlp_ratio=3.0, patch_size=8,
                  image_size=40, max_image_len=9, drop_rate=0.05, attn_drop_rate=0.02, drop_path_rate=0.01,
                  qkv_bias=False, ssf=False, max_text_len=13, compile=True)
    s = changed(settings(resolve("demo", "emm")), **values)
    assert s.data.max_text_len == 13 and s.hardware.compile is True and s.model.max_image_len == 9
    config = ViLTConfig.from_settings(s)
    assert {f.name for f in dataclasses.fields(ViLTConfig)} == set(values)
    assert config.to_dict() == values


def test_gradients_repeat_bitwise_with_two_threads_and_no_deterministic_mode():
    """The backbone's own backward sums in a fixed order with several CPU threads, without torch's deterministic
    mode: the position embeddings were read by advanced indexing, whose backward (index_put_ with accumulate) sums
    a cell's gradient in thread order, so ``transformer.pos_embed.grad`` differed between repeats of one step."""
    from emmcil.model import TINY
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(False)
    try:
        torch.manual_seed(0)
        model = ViLT(TINY).train()
        g = torch.Generator().manual_seed(1)
        text_ids = torch.randint(0, 30522, (16, 32), generator=g)
        images = torch.randn(16, 3, 96, 128, generator=g)
        seen = {}
        for _ in range(4):
            torch.manual_seed(5)  # the same dropout
            model.zero_grad()
            out = model(text_ids, torch.ones_like(text_ids), images, torch.ones(16, 96, 128, dtype=torch.long))
            out.pooled.pow(2).sum().backward()
            for name, p in model.named_parameters():
                seen.setdefault(name, []).append(p.grad.clone())
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert [n for n, grads in seen.items() if not all(torch.equal(grads[0], g) for g in grads[1:])] == []
