"""Exemplar selection by class mean, augmentation of replayed exemplars, the Figure-4 drawing."""
import pytest
import torch

from conftest import assert_print_figure

from emmcil.memory.augment import AugmentedReplay, merge_patches, replay_length
from emmcil.memory.exemplar import Exemplar
from emmcil.memory.selection import class_mean_order, selection_order


def test_selection_picks_the_nearest_to_mean_samples():
    mean = torch.tensor([1.0, 0.0, 0.0])
    feats = torch.tensor([[0.0, 1.0, 0.0],    # orthogonal
                          [2.0, 0.1, 0.0],    # nearly aligned (cosine ignores the norm)
                          [-1.0, 0.0, 0.0],   # opposite
                          [1.0, 1.0, 0.0],    # 45 degrees
                          [0.5, 0.0, 0.0]])   # aligned
    assert class_mean_order(feats, mean) == [4, 1, 3, 0, 2]
    assert selection_order("class_mean", feats, mean) == [4, 1, 3, 0, 2]


def test_herding_and_random_orders_are_permutations():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 5, generator=g)
    mean = feats.mean(0)
    for strategy in ("herding", "random"):
        order = list(selection_order(strategy, feats, mean, torch.Generator().manual_seed(1)))
        assert sorted(order) == list(range(12))
    r1 = selection_order("random", feats, mean, torch.Generator().manual_seed(1))
    r2 = selection_order("random", feats, mean, torch.Generator().manual_seed(2))
    assert r1 != r2
    with pytest.raises(ValueError, match="exemplar_selection"):
        selection_order("kmeans", feats, mean)


def make_exemplar(label, rows, cols, keep_cells, value, tokens, p=4, T=10):
    image = torch.full((3, rows * p, cols * p), value)
    keep = torch.zeros(rows, cols, dtype=torch.bool)
    for r, c in keep_cells:
        keep[r, c] = True
    text_ids = torch.zeros(T, dtype=torch.long)
    text_masks = torch.zeros(T, dtype=torch.long)
    text_ids[:len(tokens)] = torch.tensor(tokens)
    text_masks[:len(tokens)] = 1
    item = {"image": image, "text_ids": text_ids, "text_masks": text_masks, "label": label}
    return Exemplar.from_item(item, p, patch_keep=keep)


def test_merge_adds_partner_patches_only_where_missing():
    a = make_exemplar(0, 2, 3, [(0, 0)], 0.5, [101, 7, 102]).to_item(10)
    b = make_exemplar(0, 3, 2, [(0, 0), (1, 1), (2, 0)], -0.5, [101, 8, 102]).to_item(10)
    merged = merge_patches(a, b, 4)
    # (0, 0) stays a's, (1, 1) comes from b, (2, 0) lies outside a's 2x3 grid
    assert merged["patch_keep"].tolist() == [[True, False, False], [False, True, False]]
    assert torch.allclose(merged["image"][:, :4, :4], a["image"][:, :4, :4])
    assert torch.allclose(merged["image"][:, 4:8, 4:8], b["image"][:, 4:8, 4:8])
    assert merged["image"].shape == a["image"].shape


def test_augmentation_keeps_labels_and_stays_within_the_class():
    torch.manual_seed(0)
    exemplars = [make_exemplar(0, 2, 2, [(0, 0)], 0.1 * k, [101, 10 + k, 102]) for k in range(3)]
    exemplars += [make_exemplar(1, 2, 2, [(1, 1)], -0.1 * k, [101, 50 + k, 102]) for k in range(3)]
    ds = AugmentedReplay(exemplars, 10, p_text_swap=1.0, p_patch_merge=1.0)
    for _ in range(5):
        for i in range(len(ds)):
            item = ds[i]
            assert item["label"] == exemplars[i].label
            word = int(item["text_ids"][1])
            own = {0: range(10, 13), 1: range(50, 53)}[item["label"]]
            assert word in own and word != 10 + i % 3 + (40 if i >= 3 else 0)  # always swapped, same class
            # merged patches come from the same class: class 0 keeps (0, 0) only, class 1 (1, 1) only
            expected = [[True, False], [False, False]] if item["label"] == 0 else [[False, False], [False, True]]
            assert item["patch_keep"].tolist() == expected


def test_no_augmentation_replays_exemplars_as_stored():
    exemplars = [make_exemplar(0, 2, 2, [(0, 0)], 0.1 * k, [101, 10 + k, 102]) for k in range(3)]
    ds = AugmentedReplay(exemplars, 10)
    for i in range(3):
        stored = exemplars[i].to_item(10)
        item = ds[i]
        assert torch.equal(item["text_ids"], stored["text_ids"]) and torch.equal(item["image"], stored["image"])


def test_lone_exemplar_of_a_class_is_not_augmented():
    ex = [make_exemplar(3, 2, 2, [(0, 0)], 0.2, [101, 9, 102])]
    item = AugmentedReplay(ex, 10, 1.0, 1.0)[0]
    assert torch.equal(item["text_ids"], ex[0].to_item(10)["text_ids"])


def test_replay_ratio_sets_the_replayed_share():
    assert replay_length(20, 300, 0.0) == 20
    n = replay_length(20, 300, 0.25)
    assert n == 100 and n / (n + 300) == pytest.approx(0.25)
    assert replay_length(200, 30, 0.25) == 200  # never fewer than the exemplars
    ds = AugmentedReplay([make_exemplar(k % 2, 2, 2, [(0, 0)], 0.1, [101, 102]) for k in range(4)], 10, length=10)
    assert len(ds) == 10 and ds.labels.tolist() == [0, 1] * 5
    with pytest.raises(ValueError, match="replay_ratio"):
        replay_length(5, 5, 1.0)
    with pytest.raises(ValueError, match="aug_text_swap"):
        AugmentedReplay(ds.exemplars, 10, p_text_swap=2.0)


def test_figure_four_png(tmp_path):
    from emmcil.memory.figure import plot_masked_exemplars

    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 96, generator=g) * 2 - 1, torch.rand(3, 96, 64, generator=g) * 2 - 1]
    scores = [torch.rand(4, 6, generator=g), torch.rand(6, 4, generator=g)]
    keeps = [s > 0.5 for s in scores]
    tokens = [["[CLS]", "a", "red", "triangle", "on", "a", "green", "field", "[SEP]"], ["[CLS]", "a", "ring", "[SEP]"]]
    token_keeps = [[True, False, True, True, False, False, True, True, True], [True, True, True, True]]
    path = plot_masked_exemplars(images, scores, keeps, tokens, token_keeps, tmp_path / "fig4.png", ["x", "y"])
    assert len(path.read_bytes()) > 10_000
    assert_print_figure(path)  # 300 dpi, and fig4.pdf beside it
