"""Exemplar masks from hand-set attention maps, and from the model."""
import pytest
import torch

from conftest import make_batch
from emmcil.memory.masking import (MaskingConfig, compute_masks, masking_step, normalise, reduce_attention,
                                        select)
from emmcil.model import ViLT
from emmcil.model.vilt import ViLTOutput

CLS, SEP = 101, 102


def hand_output(rows: dict[int, list[float]], heads=2, text=(CLS, 2000, 2001, SEP, 0), P=4):
    """One sample, one layer: ``text`` ([CLS w1 w2 SEP PAD] by default; 0 = padding) | image CLS | P patches on a
    2-row grid; ``rows`` sets attention rows (query -> keys), split unevenly over two heads so that only their mean
    is the given row."""
    T = len(text)
    N = T + 1 + P
    attn = torch.full((1, heads, N, N), 1.0 / N)
    for q, row in rows.items():
        row = torch.tensor(row)
        attn[0, 0, q] = row * 1.5
        attn[0, 1, q] = row * 0.5
    text_ids = torch.tensor([list(text)])
    masks = torch.ones(1, N, dtype=torch.bool)
    masks[0, :T] = text_ids[0] != 0  # text padding
    cols = (P + 1) // 2
    out = ViLTOutput(pooled=torch.zeros(1, 8), hidden=torch.zeros(1, N, 8), masks=masks, text_len=T,
                     patch_index=torch.tensor([[[k // cols, k % cols] for k in range(P)]]),
                     grid_sizes=torch.tensor([[2, cols]]), attentions=(attn,))
    return out, text_ids


def cls_row(patch_scores, T=5):
    return [0.0] * (T + 1) + patch_scores


ROWS = {
    0: cls_row([0.4, 0.1, 0.0, 0.3]),                       # CLS -> patches: minmax [1, .25, 0, .75]
    7: [0.0, 0.1, 0.5, 0.0, 0.9] + [0.0] * 5,               # discarded patch 1 -> text (PAD entry is ignored)
    8: [0.0, 0.3, 0.5, 0.0, 0.9] + [0.0] * 5,               # discarded patch 2 -> text
}


MINMAX = dict(norm="minmax", tau_image=0.5, tau_text=0.5)


def test_hand_set_attention_gives_expected_patches_and_words():
    out, ids = hand_output(ROWS)
    m = compute_masks(out, ids, MaskingConfig(**MINMAX))
    assert m.patch_keep.tolist() == [[True, False, False, True]]
    assert torch.allclose(m.image_scores, torch.tensor([[1.0, 0.25, 0.0, 0.75]]))
    # mean over discarded patches: words w1, w2 [.2, .5] -> minmax [0, 1]; [CLS], [SEP] always kept and outside the
    # normalisation (score 0), PAD never
    assert torch.allclose(m.text_scores, torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]]))
    assert m.text_keep.tolist() == [[True, False, True, True, False]]
    assert m.patch_grid(out, (2, 2)).tolist() == [[[True, False], [False, True]]]


def test_an_attention_sink_on_sep_does_not_squash_the_words():
    # the discarded patches look mostly at [SEP] (a ViT attention sink); normalised with [SEP], w2's 0.5 would be
    # 0.5 / 5.0 = 0.1 < tau_T and every word dropped; without it w2 is the top word
    sink = {0: ROWS[0], 7: [0.0, 0.1, 0.5, 5.0, 0.0] + [0.0] * 5, 8: [0.0, 0.3, 0.5, 5.0, 0.0] + [0.0] * 5}
    for norm in ("minmax", "mass", "ratio"):
        m = compute_masks(*hand_output(sink), MaskingConfig(norm=norm, tau_image=0.5, tau_text=0.5))
        assert m.text_keep.tolist() == [[True, False, True, True, False]], norm


def test_thresholds_move_the_masks():
    out, ids = hand_output(ROWS)
    m = compute_masks(out, ids, MaskingConfig(norm="minmax", tau_image=0.8, tau_text=0.3))
    assert m.patch_keep.tolist() == [[True, False, False, False]]
    # discarded now 1, 2, 3 (row 9 uniform 1/N over all keys): words w1 .17, w2 .37 -> minmax 0, 1
    assert m.text_keep[0, :4].tolist() == [True, False, True, True]
    m = compute_masks(out, ids, MaskingConfig(norm="minmax", tau_image=0.8, tau_text=0.0))
    assert m.text_keep[0, :4].tolist() == [True, True, True, True]


def test_ratio_keeps_exactly_the_top_share_plus_cls_and_sep():
    # 10 words between [CLS] and [SEP] and 2 pads; 4 patches, of which tau_I = 0.5 keeps the top 2 (0 and 3)
    text = (CLS, *range(2000, 2010), SEP, 0, 0)
    word_scores = [0.3, 0.9, 0.1, 0.5, 0.8, 0.2, 0.7, 0.4, 0.6, 0.05]  # words 1, 4, 6, 8, 3 are the top five
    discarded = [0.0] + word_scores + [3.0, 0.0, 0.0] + [0.0] * 5  # [SEP] an attention sink; pads ignored
    rows = {0: [0.0] * 15 + [0.4, 0.1, 0.0, 0.3], 16: discarded, 17: discarded}
    m = compute_masks(*hand_output(rows, text=text), MaskingConfig(norm="ratio", tau_image=0.5, tau_text=0.5))
    assert m.patch_keep.tolist() == [[True, False, False, True]]
    kept = m.text_keep[0].nonzero()[:, 0].tolist()
    assert kept == [0, 2, 4, 5, 7, 9, 11]  # [CLS], the five top words (positions 1 + word index), [SEP]
    assert len(kept) == 5 + 2


def test_tau_zero_keeps_everything():
    out, ids = hand_output(ROWS)
    m = compute_masks(out, ids, MaskingConfig(tau_image=0.0, tau_text=0.0))
    assert m.patch_keep.all()
    assert m.text_keep.tolist() == [[True, True, True, True, False]]


def test_no_discarded_patch_keeps_the_whole_text():
    out, ids = hand_output(ROWS)
    m = compute_masks(out, ids, MaskingConfig(tau_image=0.0, tau_text=1.0))
    assert m.text_keep.tolist() == [[True, True, True, True, False]]


def test_special_tokens_kept_even_with_highest_threshold():
    out, ids = hand_output(ROWS)
    m = compute_masks(out, ids, MaskingConfig(norm="minmax", tau_image=1.0, tau_text=1.0))
    assert m.patch_keep.tolist() == [[True, False, False, False]]  # min-max: the maximum always passes
    assert m.text_keep[0].tolist() == [True, False, True, True, False]
    m = compute_masks(out, ids, MaskingConfig(norm="ratio", tau_image=1.0, tau_text=1.0))
    assert not m.patch_keep.any() and m.text_keep[0].tolist() == [True, False, False, True, False]


def test_head_max_and_layer_choice():
    out, ids = hand_output(ROWS)
    mean = reduce_attention(out.attentions, MaskingConfig())
    mx = reduce_attention(out.attentions, MaskingConfig(head_reduce="max"))
    assert torch.allclose(mean[0, 0, 6:], torch.tensor([0.4, 0.1, 0.0, 0.3]))
    assert torch.allclose(mx[0, 0, 6:], torch.tensor([0.6, 0.15, 0.0, 0.45]))
    with pytest.raises(ValueError, match="out of range"):
        reduce_attention(out.attentions, MaskingConfig(layers=(3,)))


def test_rollout_of_one_layer_is_residual_corrected_attention():
    a = torch.softmax(torch.randn(1, 2, 6, 6), -1)
    r = reduce_attention((a,), MaskingConfig(layer_reduce="rollout"))
    expected = 0.5 * a.mean(1) + 0.5 * torch.eye(6)
    assert torch.allclose(r, expected / expected.sum(-1, keepdim=True), atol=1e-6)
    r2 = reduce_attention((a, a), MaskingConfig(layers=(0, 1), layer_reduce="rollout"))
    assert torch.allclose(r2, r @ r, atol=1e-6)


def test_normalisations():
    s = torch.tensor([[0.5, 0.3, 0.2, 9.0]])
    valid = torch.tensor([[True, True, True, False]])
    mm = normalise(s, valid, "minmax")
    assert torch.allclose(mm, torch.tensor([[1.0, 1 / 3, 0.0, 0.0]]))
    mass = normalise(s, valid, "mass")
    assert torch.allclose(mass, torch.tensor([[1.0, 0.5, 0.2, 0.0]]))
    ratio = normalise(s, valid, "ratio")
    assert torch.allclose(ratio, torch.tensor([[1.0, 2 / 3, 1 / 3, 0.0]]))
    assert normalise(torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool), "minmax").eq(1).all()


def _kept(scores, norm, tau, valid=None):
    scores = torch.as_tensor(scores, dtype=torch.float)[None]
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else torch.tensor([valid])
    keep, _ = select(scores, valid, norm, tau)
    return keep[0].tolist()


def test_ratio_and_mass_keep_the_fewest_top_entries_that_reach_the_share():
    ten = torch.randperm(10, generator=torch.Generator().manual_seed(0)).float()
    for tau, count in ((0.5, 5), (0.7, 3), (0.9, 1), (0.1, 9), (0.0, 10), (1.0, 0)):
        keep = _kept(ten, "ratio", tau)
        assert sum(keep) == count, tau
        assert all(ten[i] > ten[j] for i in range(10) for j in range(10) if keep[i] and not keep[j])
    assert sum(_kept(torch.rand(144), "ratio", 0.74)) == 38  # ceil(0.26 * 144): the default keeps 26.4 %
    assert _kept([0.25, 0.25, 0.25, 0.25], "mass", 0.5) == [True, True, False, False]  # exactly half the mass
    assert _kept([0.5, 0.3, 0.2], "mass", 0.5) == [True, False, False]
    assert _kept([0.2, 0.5, 0.3], "mass", 0.3) == [False, True, True]  # .5 + .3 reach .7
    assert _kept([0.2, 0.5, 0.3], "mass", 0.1) == [True, True, True]  # .9 needs the third
    assert _kept([0.6, 0.4, 0.0], "mass", 0.0) == [True, True, True]  # tau = 0 keeps even a zero-attention entry
    assert _kept([0.3, 0.9, 0.1, 0.5], "ratio", 0.5, valid=[True, False, True, True]) == [True, False, False, True]


def test_config_errors():
    with pytest.raises(ValueError, match="tau_image"):
        MaskingConfig(tau_image=1.5)
    with pytest.raises(ValueError, match="norm"):
        MaskingConfig(norm="softmax")


def test_masks_from_the_model_feed_back_through_patch_keep(tiny_cfg):
    torch.manual_seed(0)
    model = ViLT(tiny_cfg).eval()
    text_ids, text_masks, images, pixel_masks = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    text_ids[:, 0] = CLS
    out = model(text_ids, text_masks, images, pixel_masks, return_attention=True)
    m = compute_masks(out, text_ids, MaskingConfig())
    assert (m.patch_keep <= out.image_masks).all() and (m.text_keep <= text_masks.bool()).all()
    assert m.patch_keep.any(1).all()  # the maximum always passes minmax >= tau
    keep = m.patch_grid(out, (4, 6))
    masked = model(text_ids, m.text_keep.long(), images, pixel_masks, patch_keep=keep)
    assert (masked.image_masks.sum(1) == m.patch_keep.sum(1)).all()
    full = compute_masks(out, text_ids, MaskingConfig(tau_image=0.0, tau_text=0.0))
    same = model(text_ids, full.text_keep.long(), images, pixel_masks, patch_keep=full.patch_grid(out, (4, 6)))
    assert torch.allclose(same.pooled, out.pooled, atol=1e-5)  # tau = 0: the masked exemplar is the full one


def test_masks_need_the_configured_layers(tiny_cfg):
    model = ViLT(tiny_cfg).eval()
    text_ids, text_masks, images, pixel_masks = make_batch()
    out = model(text_ids, text_masks, images, pixel_masks, return_attention=[0])
    with pytest.raises(ValueError, match="return_attention"):
        compute_masks(out, text_ids, MaskingConfig(layers=(-1,)))
    assert compute_masks(out, text_ids, MaskingConfig(layers=(0,))).patch_keep.shape == (3, 24)


def test_masks_ignore_prompt_tokens_and_prefixes(tiny_cfg):
    torch.manual_seed(0)
    model = ViLT(tiny_cfg).eval()
    text_ids, text_masks, images, pixel_masks = make_batch()
    text_ids[:, 0] = CLS
    g = torch.Generator().manual_seed(1)
    prefixes = [None, (torch.randn(3, 3, 32, generator=g), torch.randn(3, 3, 32, generator=g))]
    out = model(text_ids, text_masks, images, pixel_masks, return_attention=True,
                extra_tokens=torch.randn(3, 2, 32, generator=g), prefixes=prefixes)
    for cfg in (MaskingConfig(), MaskingConfig(layers=(0, 1), layer_reduce="rollout")):
        m = compute_masks(out, text_ids, cfg)
        assert m.patch_keep.shape == (3, 24) and m.text_keep.shape == (3, 12)
        assert (m.patch_keep <= out.image_masks).all()


def test_masking_step_encodes_the_masked_sample_as_a_plain_forward(tiny_cfg):
    """The pass's second forward (kept tokens only, packed) gives the features of the masked sample."""
    torch.manual_seed(0)
    model = ViLT(tiny_cfg).eval()
    text_ids, text_masks, images, pixel_masks = make_batch(sizes=[(64, 96), (32, 64), (48, 32)])
    text_ids[:, 0] = CLS
    batch = {"text_ids": text_ids, "text_masks": text_masks, "images": images, "pixel_masks": pixel_masks}
    out = masking_step(model, batch, MaskingConfig(), grid_shape=(5, 7))
    full = model(text_ids, text_masks, images, pixel_masks)
    masked = model(text_ids, out["text_keep"].long(), images, pixel_masks, patch_keep=out["patch_keep"][:, :4, :6])
    assert torch.allclose(out["features"], full.pooled, atol=1e-5)
    assert torch.allclose(out["masked_features"], masked.pooled, atol=1e-5)
    assert not torch.allclose(out["masked_features"], full.pooled, atol=1e-4)
    assert out["patch_keep"][:, 4:].sum() == 0 and out["patch_keep"][:, :, 6:].sum() == 0
