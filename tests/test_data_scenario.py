"""Class orders, phase splits and remapped per-phase datasets."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import Dataset

from emmcil.data import (ArrowDataset, IncrementalScenario, class_order, collate, ensure_demo, get_tokenizer,
                         pixelbert_transform, split_phases, write_arrow)
from emmcil.data.scenario import DEFAULT_CLASS_ORDER_SEED


def test_class_order_is_a_seeded_permutation():
    a = class_order(100, 1993)
    assert sorted(a) == list(range(100)) and a != list(range(100))
    assert class_order(100, 1993) == a and class_order(100, 1994) != a
    assert class_order(7, None) == list(range(7))
    # PyCIL's recipe, computed independently: global seed, then permutation
    state = np.random.get_state()
    np.random.seed(1993)
    expected = np.random.permutation(100).tolist()
    np.random.set_state(state)
    assert a == expected and DEFAULT_CLASS_ORDER_SEED == 1993


def test_class_order_leaves_global_numpy_state_alone():
    np.random.seed(5)
    x = np.random.rand()
    np.random.seed(5)
    class_order(50, 1)
    assert np.random.rand() == x


@given(num_classes=st.integers(1, 300), data=st.data())
def test_phases_cover_every_class_once(num_classes, data):
    num_phases = data.draw(st.integers(1, num_classes))
    phases = split_phases(num_classes, num_phases)
    assert len(phases) == num_phases
    assert [c for p in phases for c in p] == list(range(num_classes))  # each once, contiguous, in order
    sizes = [len(p) for p in phases]
    extra = num_classes % num_phases
    assert sizes == [num_classes // num_phases + 1] * extra + [num_classes // num_phases] * (num_phases - extra)


def test_phase_split_errors():
    with pytest.raises(ValueError):
        split_phases(5, 6)
    with pytest.raises(ValueError):
        split_phases(5, 0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = ensure_demo(tmp_path_factory.mktemp("demo"))
    tok, tr = get_tokenizer(), pixelbert_transform(96, 16)
    return [ArrowDataset(root / f"demo_{s}.arrow", tok, tr, 40) for s in ("train", "test")]


def test_scenario_remaps_labels_by_phase(demo):
    train, test = demo
    order = class_order(10, 7)
    sc = IncrementalScenario(train, test, order, num_phases=3)
    assert sc.num_phases == 3 and [sc.phase_classes(t) for t in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert sc.classes_upto(1) == list(range(7))
    seen_train = set()
    for t in range(3):
        d = sc.train_dataset(t)
        # exactly the new classes' samples, labels remapped, the original kept
        expected = np.flatnonzero(np.isin(train.labels, [order[c] for c in sc.phase_classes(t)]))
        assert sorted(d.indices.tolist()) == expected.tolist()
        assert set(d.labels.tolist()) == set(sc.phase_classes(t))
        for i in (0, len(d) - 1):
            item = d[i]
            assert item["label"] in sc.phase_classes(t) and order[item["label"]] == item["orig_label"]
            assert train.labels[item["index"]] == item["orig_label"]
        seen_train |= set(d.indices.tolist())
        te = sc.test_dataset(t)
        assert set(te.labels.tolist()) == set(sc.classes_upto(t))
        assert len(te) == int(np.isin(test.labels, order[: len(sc.classes_upto(t))]).sum())
    assert seen_train == set(range(len(train)))  # every training sample in exactly one phase
    batch = collate([sc.train_dataset(1)[i] for i in range(3)])
    assert batch["labels"].tolist() == [order.index(x) for x in batch["orig_labels"].tolist()]
    assert np.array_equal(sc.position[train.labels], np.array([order.index(x) for x in train.labels]))


def test_extra_memory_is_concatenated(demo):
    sc = IncrementalScenario(*demo, class_order(10, 0), num_phases=5)

    class Memory(Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    old = sc.train_dataset(0)
    memory = Memory([old[i] for i in range(4)])
    d = sc.train_dataset(1, extra=memory)
    assert len(d) == len(sc.train_dataset(1)) + 4
    labels = collate([d[i] for i in range(len(d) - 6, len(d))])["labels"].tolist()
    assert set(labels[-4:]) <= set(sc.phase_classes(0)) and set(labels[:2]) <= set(sc.phase_classes(1))


def test_unknown_label_names_label_and_file(tmp_path, demo):
    train, test = demo
    row = read_row(train)
    path = write_arrow([dict(row, label=42, image_id="stray.jpg")], tmp_path / "odd_test.arrow")
    odd = ArrowDataset(path, get_tokenizer(), pixelbert_transform(96, 16), 40)
    with pytest.raises(ValueError, match=r"label 42 of sample 'stray\.jpg'.*odd_test\.arrow"):
        IncrementalScenario(train, odd, class_order(10, 0), 2)
    with pytest.raises(ValueError, match=r"label 9 .*demo_train\.arrow"):
        IncrementalScenario(train, test, class_order(9, 0), 3)  # the order lacks class 9


def read_row(ds):
    return {"image": ds.image_bytes(0), "text": ds.texts[0], "label": int(ds.labels[0]),
            "image_id": ds.image_ids[0], "split": "test"}


def test_classes_without_training_or_test_samples_are_listed():
    """check_complete: every class of a phase needs a training and a test sample; all the others are named."""
    from emmcil.data.scenario import IncompleteClassesError

    class Labels:
        def __init__(self, labels):
            self.labels = np.array(labels)

    train, test = Labels([0, 0, 1, 2, 3]), Labels([0, 1, 3, 3])  # class 2: no test, class 4: neither
    scenario = IncrementalScenario(train, test, [0, 1, 2, 3, 4], 2)
    with pytest.raises(IncompleteClassesError) as err:
        scenario.check_complete(["a", "b", "c", "d", "e"])
    assert str(err.value).splitlines()[:3] == [
        "2 classes cannot be trained and scored:",
        "  class 'c' (label 2) of phase 0: no test sample (1 training, 0 test)",
        "  class 'e' (label 4) of phase 1: no training and no test sample (0 training, 0 test)"]
    IncrementalScenario(Labels([0, 1]), Labels([1, 0]), [1, 0], 2).check_complete()
