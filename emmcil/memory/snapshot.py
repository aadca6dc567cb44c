"""What the memory browser (``python -m emmcil.report.memory``) shows, saved with each phase as torch-free files.

After phase t, a method with a memory buffer writes ``{run_dir}/memory/phase_{t}/``:

    memory.json               the memory after phase t: its unit and class budget, each class's exemplars in stored
                              order (dataset rows), how they were ranked, and one record per exemplar made in phase t
                              (:func:`exemplar_record`): cost, bytes, kept shares, rank, similarity to the class
                              mean, the caption's tokens with their kept flags, the attention map on the patch grid
    c{label}_{index}.png      each new exemplar's image as stored (:func:`stored_image_file`): kept patches in place
                              and the discarded cells dark; CIM's background as stored (downsampled, shown at full
                              size); MRDC's file itself (the JPEG bytes the memory holds)
    c{label}_{index}_input.jpg  the input image the attention map is drawn over (methods that have a map); it is not
                              part of the memory

Saved with the phase rather than re-computed from the checkpoint: the checkpoint holds the stored exemplars but
none of what chose them (the attention map, the discarded words, the similarity to the class mean, the rank), and
re-computing those needs the phase's model, the training data and a forward pass over every new sample, where
saving them costs one PNG a new exemplar (an image at the model's resolution, fewer bytes than the exemplar takes
in the checkpoint) and a few numbers. Old classes are not written again: ``classes`` lists their rows and the
browser finds their records in the phase that stored them. PNG, JPEG and JSON keep the browser free of torch.
Files are written under their final names and ``memory.json`` last, so a folder without it (a phase killed while
writing) is incomplete and is re-written when the phase runs again.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from emmcil.atomic import atomic_write, write_text
from emmcil.data.device import image_pixels

from .exemplar import JpegExemplar, StoredExemplar

FORMAT = 1                       # memory.json's layout version (the browser refuses a newer one)
FOLDER = "memory"                # under the run directory
MANIFEST = "memory.json"
DISCARDED_RGB = (38, 38, 38)     # the cells of discarded patches in a stored image (nothing is stored there)
BROWSER_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def phase_folder(run_dir: str | Path, phase: int) -> Path:
    return Path(run_dir) / FOLDER / f"phase_{phase}"


def charged_cost(buffer, exemplar: StoredExemplar) -> float:
    """What ``exemplar`` takes of its class's budget in the buffer's unit (``memory_unit``): the one place the
    browser's cost comes from."""
    return float(buffer.size(exemplar))


def _png(rgb: torch.Tensor) -> bytes:
    """uint8 (3, H, W) -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def stored_image_file(exemplar: StoredExemplar) -> tuple[bytes, str, tuple[int, int]]:
    """The exemplar's image as the memory holds it: (file bytes, suffix, (H, W) in pixels).

    A JPEG exemplar (MRDC) is its stored file itself (a format no browser shows is converted to PNG); any other
    kind is drawn from what it replays (``replay_image``): its pixels in place, the cells it does not keep filled
    with :data:`DISCARDED_RGB` (a masked exemplar's discarded patches), as a PNG, so nothing is re-compressed."""
    if isinstance(exemplar, JpegExemplar):
        data = exemplar.jpeg.numpy().tobytes()
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
            if fmt in BROWSER_FORMATS:
                return data, BROWSER_FORMATS[fmt], (h, w)
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG")
            return buf.getvalue(), ".png", (h, w)
    image, keep = exemplar.replay_image()
    rgb = image_pixels(image)
    H, W = rgb.shape[-2:]
    p = H // keep.shape[0]
    cells = keep.repeat_interleave(p, 0).repeat_interleave(p, 1)
    fill = torch.tensor(DISCARDED_RGB, dtype=torch.uint8).view(3, 1, 1).expand_as(rgb)
    return _png(torch.where(cells, rgb, fill)), ".png", (int(H), int(W))


def input_image_file(image, quality: int = 90) -> bytes:
    """An item's input image (uint8 or normalised (3, H, W), or a JPEG for the device:
    :func:`~emmcil.data.device.image_pixels`) as a JPEG, to draw the attention map over."""
    buf = io.BytesIO()
    rgb = image_pixels(image)
    Image.fromarray(rgb.permute(1, 2, 0).contiguous().numpy()).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def exemplar_record(exemplar: StoredExemplar, buffer, *, tokens: Sequence[str], token_kept: Sequence[bool],
                    rank: int, candidates: int, similarity: float | None,
                    attention: torch.Tensor | None = None) -> dict:
    """One stored exemplar as ``memory.json`` lists it (JSON types only).

    tokens / token_kept: the sample's whole caption (wordpieces, [CLS] ... [SEP]) and which of them are stored;
    rank: 1-based place in its class's ranking, of ``candidates`` samples; similarity: cosine similarity to the
    class mean the ranking uses (None where there is none); attention: (rows, cols) map in [0, 1] on the patch grid,
    rounded to 3 decimals, or None. ``cost`` is in the buffer's unit (:func:`charged_cost`); ``costs`` its
    cost in every unit ({unit: cost}, ``emmcil.memory.exemplar.UNITS``), whatever unit the budget used."""
    grid = getattr(exemplar, "grid", None)
    return {
        "label": int(exemplar.label), "orig_label": int(exemplar.orig_label), "index": int(exemplar.index),
        "image_id": exemplar.image_id, "kind": exemplar.kind, "rank": int(rank), "candidates": int(candidates),
        "similarity": None if similarity is None else float(similarity),
        "cost": charged_cost(buffer, exemplar), "unit": buffer.unit,
        "costs": {unit: float(cost) for unit, cost in exemplar.costs.items()},
        "nbytes": int(exemplar.nbytes), "full_nbytes": int(exemplar.full_nbytes),
        "patch_share": float(exemplar.patch_share), "word_share": exemplar.word_share,
        "num_patches": int(exemplar.num_patches), "num_tokens": int(exemplar.num_tokens),
        "grid": None if grid is None else [int(v) for v in grid],
        "tokens": list(tokens), "token_kept": [bool(k) for k in token_kept],
        "attention": None if attention is None else [[round(float(v), 3) for v in row] for row in attention.tolist()],
    }


def write_phase(run_dir: str | Path, phase: int, buffer, *, method: str, notes: dict, new_classes: Sequence[int],
                new: Sequence[tuple[StoredExemplar, dict, torch.Tensor | None]]) -> Path:
    """Write ``memory/phase_{phase}/`` (see the module docstring); returns its ``memory.json``.

    buffer: the :class:`~emmcil.memory.buffer.MemoryBuffer` after the phase; notes: what ``ranking``, ``similarity``
    and ``attention`` mean for this method (shown by the browser); new: for each exemplar made this phase, (the
    exemplar, its :func:`exemplar_record`, its input image (an item's ``image``), or None without a map). A folder
    left by an earlier attempt at the phase is replaced."""
    folder = phase_folder(run_dir, phase)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    records = []
    for exemplar, record, image in new:
        stem = f"c{record['label']}_{record['index']}"
        data, suffix, (h, w) = stored_image_file(exemplar)
        atomic_write(folder / f"{stem}{suffix}", lambda f, d=data: f.write(d))
        record = {**record, "stored_image": f"{stem}{suffix}", "stored_size": [h, w], "input_image": None}
        if image is not None:
            atomic_write(folder / f"{stem}_input.jpg", lambda f, d=input_image_file(image): f.write(d))
            record["input_image"] = f"{stem}_input.jpg"
        records.append(record)
    report = buffer.report()
    manifest = {
        "format": FORMAT, "phase": int(phase), "method": method, "unit": buffer.unit,
        "class_budget": report["class_budget"], "notes": dict(notes), "new_classes": [int(c) for c in new_classes],
        "classes": {str(c): [int(e.index) for e in v] for c, v in sorted(buffer.classes.items())},
        "exemplars": records,
    }
    return write_text(folder / MANIFEST, json.dumps(manifest, indent=None, separators=(",", ":")) + "\n")
