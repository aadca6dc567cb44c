"""Caption an image folder with InstructBLIP (MM-ImageNet-R's text modality).

    python -m emmcil.data.captions --images IMAGENET_R --model /path/to/instructblip --out captions.jsonl
        [--prompt "Write a detailed description."] [--max-new-tokens 256] [--num-beams 5] [--batch-size 8]
        [--device cuda] [--dtype float16] [--skip-bad]

Writes one JSON line per image, ``{"path": "<wnid>/<file>", "caption": "..."}`` (paths relative to ``--images``;
UTF-8, see ``textfiles.json_line``), which is the captions file ``write_imagenet_r`` reads. Images are decoded by
``images.decode_image``, as the arrow dataset decodes them (EXIF orientation applied, transparency on white).
Resumable: paths already in the output are skipped and new lines are appended (flushed after every batch; a line
cut short by a kill is removed on the next start), whatever characters the captions hold. SIGTERM / SIGINT stop it
cleanly (every caption written so far is kept) with exit status ``emmcil.stops.STOPPED_EXIT_CODE``.
The model is loaded from a local directory (``InstructBlipForConditionalGeneration`` + ``InstructBlipProcessor``),
never downloaded. The paper does not state its prompt, model variant or decoding; the defaults here are a
"detailed description" prompt, which matches the style of the captions shown in the paper's Fig. 4.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from emmcil import stops

from .images import ImageDecodeError, decode_image
from .textfiles import cut_partial_last_line, json_line, open_append, read_jsonl
from .writing import is_image_file

DEFAULT_PROMPT = "Write a detailed description."


def list_images(root: str | Path) -> list[str]:
    """Relative posix paths of all images under ``root``, sorted (hidden entries skipped)."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        out += [(rel / f).as_posix() for f in filenames if not f.startswith(".") and is_image_file(Path(f))]
    return sorted(out)


def done_paths(out_file: str | Path) -> set[str]:
    """Paths already captioned in ``out_file`` (a JSONL this command wrote; strict UTF-8, lines split at "\\n" only,
    so captions may hold any character). A last line cut short by a kill is removed first
    (``textfiles.cut_partial_last_line``). ValueError names a line that is not a caption record."""
    path = Path(out_file)
    if not path.is_file():
        return set()
    note = cut_partial_last_line(path)
    if note:
        print(note)
    records, _ = read_jsonl(path)
    done = set()
    for lineno, obj in records:
        if not isinstance(obj, dict) or not isinstance(obj.get("path"), str) or not isinstance(obj.get("caption"), str):
            raise ValueError(f"{path}:{lineno}: not a caption line (expected {{\"path\": ..., \"caption\": ...}})")
        done.add(obj["path"])
    return done


def load_model(model_path: str | Path, device: str = "cpu", dtype: str | None = None):
    """(model, processor) from a local InstructBLIP directory; nothing is downloaded."""
    import torch
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"InstructBLIP model directory not found: {model_path}")
    import transformers
    from packaging.version import Version

    processor = InstructBlipProcessor.from_pretrained(model_path, local_files_only=True)
    kwargs = {}
    if dtype:  # load straight into the dtype (a 7B LM in float32 would need ~28 GB of RAM first)
        key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        kwargs[key] = getattr(torch, dtype)
    model = InstructBlipForConditionalGeneration.from_pretrained(model_path, local_files_only=True, **kwargs)
    return model.to(device).eval(), processor


def generate_captions(model, processor, images: list[Image.Image], prompt: str, max_new_tokens: int,
                      num_beams: int) -> list[str]:
    """Captions of a batch of PIL images (greedy or beam search, no sampling)."""
    import torch

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    decoder_only = not model.config.text_config.is_encoder_decoder
    if decoder_only:  # batched generation with a decoder-only LM needs the prompt padded on the left
        processor.tokenizer.padding_side = "left"
    inputs = processor(images=images, text=[prompt] * len(images), return_tensors="pt", padding=True)
    inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    if decoder_only and out.shape[1] >= prompt_len and torch.equal(out[:, :prompt_len].cpu(),
                                                                 inputs["input_ids"].cpu()):
        out = out[:, prompt_len:]  # decoder-only generate returns prompt + continuation
    return [c.strip() for c in processor.batch_decode(out, skip_special_tokens=True)]


def caption_folder(images_root: str | Path, out_file: str | Path, model_path: str | Path | None = None, *,
                   model=None, processor=None, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 256,
                   num_beams: int = 5, batch_size: int = 8, device: str = "cpu", dtype: str | None = None,
                   skip_bad: bool = False, limit: int | None = None) -> int:
    """Caption every image under ``images_root`` not yet in ``out_file``; returns the number of lines added.

    Give ``model_path`` or an already built (``model``, ``processor``) pair. An unreadable image raises an
    error naming it, or with ``skip_bad`` is counted, reported and left uncaptioned (a later run retries it).
    """
    images_root, out_file = Path(images_root), Path(out_file)
    todo_all = list_images(images_root)
    done = done_paths(out_file)
    todo = [p for p in todo_all if p not in done]
    if limit is not None:
        todo = todo[:limit]
    print(f"{len(todo_all)} images under {images_root}, {len(done)} already in {out_file}, {len(todo)} to caption")
    if not todo:
        return 0
    if model is None or processor is None:
        if model_path is None:
            raise ValueError("give model_path or both model and processor")
        model, processor = load_model(model_path, device, dtype)

    out_file.parent.mkdir(parents=True, exist_ok=True)
    written, bad = 0, []
    with open_append(out_file) as f, tqdm(total=len(todo), unit="img", desc="captions") as bar:
        for start in range(0, len(todo), batch_size):
            paths, images = [], []
            for rel in todo[start:start + batch_size]:
                try:
                    images.append(decode_image(images_root / rel))  # as the arrow dataset will decode it
                    paths.append(rel)
                except (ImageDecodeError, OSError) as e:
                    if not skip_bad:
                        raise ValueError(f"cannot read image '{rel}': {e}") from None
                    bad.append(rel)
            if images:
                for rel, cap in zip(paths, generate_captions(model, processor, images, prompt, max_new_tokens,
                                                             num_beams)):
                    f.write(json_line({"path": rel, "caption": cap}))
                f.flush()
                written += len(paths)
            bar.update(len(todo[start:start + batch_size]))
    if bad:
        print(f"skipped {len(bad)} unreadable images, e.g. {', '.join(bad[:3])}")
    print(f"wrote {written} captions to {out_file}")
    return written


def main(argv=None, prog="python -m emmcil.data.captions"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="image root (e.g. the imagenet-r folder)")
    p.add_argument("--model", required=True, help="local InstructBLIP directory (save_pretrained layout)")
    p.add_argument("--out", required=True, help="captions JSONL (appended to; resumable)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--num-beams", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--dtype", default=None, help="e.g. float16 or bfloat16 (default: the checkpoint's)")
    p.add_argument("--limit", type=int, default=None, help="caption at most this many new images")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (reported) instead of failing")
    a = p.parse_args(argv)
    with stops.stoppable():
        try:
            caption_folder(a.images, a.out, a.model, prompt=a.prompt, max_new_tokens=a.max_new_tokens,
                           num_beams=a.num_beams, batch_size=a.batch_size, device=a.device, dtype=a.dtype,
                           skip_bad=a.skip_bad, limit=a.limit)
        except BaseException as e:
            stop = stops.stop_of(e)
            if stop is None:
                raise
            done = len(done_paths(a.out))
            print(f"{stop}: {done} captions are in {a.out}; re-run the same command to caption the rest",
                  file=sys.stderr)
            raise SystemExit(stops.STOPPED_EXIT_CODE) from None


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
