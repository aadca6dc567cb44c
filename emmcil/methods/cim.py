"""SSF + CIM, Class-Incremental Masking (Luo et al., "Class-Incremental Exemplar Compression for Class-Incremental
Learning", CVPR'23; code ``xfflzl/CIM-CIL`` at ae113e9; ``method=cim``): exemplars whose background is stored
downsampled, as CIM-CIL runs it.

How it is built, with its sources and defaults: docs/method.md#cim.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader

from emmcil.data.collate import collate
from emmcil.data.device import model_images
from emmcil.memory.exemplar import CimExemplar
from emmcil.memory.masking import mask_canvas, normalise, score_grid
from emmcil.settings import setting

from . import register
from .replay import CompressedReplay, ExemplarView, ReplaySettings

CAM_MODES = ("token", "tscam")
FOREGROUNDS = ("box", "patches")


def bounding_box(keep: torch.Tensor) -> torch.Tensor:
    """(B, R, C) bool -> the tight bounding box of each sample's True cells, (B, R, C) bool (empty stays empty)."""
    rows, cols = keep.any(2), keep.any(1)
    between = lambda m: (m.cumsum(1) > 0) & (m.flip(1).cumsum(1).flip(1) > 0)  # noqa: E731 (first..last True)
    return between(rows)[:, :, None] & between(cols)[:, None, :]


def nearest_down_up(n: int, compress_ratio: float, device=None) -> torch.Tensor:
    """(n,) long: the source pixel of each of ``n`` pixels after Pillow's ``Image.NEAREST`` resize to
    int(n / sqrt(ratio)) and back to n (CIM-CIL's ``BbxBlur``): source floor((i + 0.5) * from / to) each way."""
    small = max(1, int(n / math.sqrt(compress_ratio)))
    i = torch.arange(n, device=device, dtype=torch.long)
    down = ((2 * i + 1) * small) // (2 * n)                             # pixel of the small image (exact integers)
    return (((2 * down + 1) * n) // (2 * small)).clamp_(max=n - 1)


def bbx_blur(image: torch.Tensor, box: tuple[int, int, int, int] | None, compress_ratio: float) -> torch.Tensor:
    """CIM-CIL's ``BbxBlur`` of one image (C, H, W), any dtype: the whole image resized with nearest neighbours to
    1/sqrt(ratio) of each side and back, then the box (y0, y1, x0, x1), pixels, pasted back at full resolution
    (None or an empty box: all of it blurred, as ``toBbox`` of an empty mask)."""
    H, W = image.shape[-2:]
    out = image[:, nearest_down_up(H, compress_ratio, image.device)][:, :, nearest_down_up(W, compress_ratio,
                                                                                            image.device)]
    if box is not None:
        y0, y1, x0, x1 = box
        out[:, y0:y1, x0:x1] = image[:, y0:y1, x0:x1]
    return out


def box_bounds(keep: torch.Tensor, patch_size: int) -> list[tuple[int, int, int, int] | None]:
    """(B, R, C) bool foregrounds -> each one's tight bounding box in pixels (y0, y1, x0, x1), None when empty."""
    out = []
    for k in keep:
        rows, cols = k.any(1).nonzero()[:, 0], k.any(0).nonzero()[:, 0]
        out.append(None if len(rows) == 0 else (int(rows[0]) * patch_size, (int(rows[-1]) + 1) * patch_size,
                                                 int(cols[0]) * patch_size, (int(cols[-1]) + 1) * patch_size))
    return out


@torch.no_grad()
def cam_step(backbone, batch: dict, classifier, threshold: float, grid_shape: tuple[int, int],
             mode: str = "token", foreground: str = "box") -> dict[str, torch.Tensor]:
    """Predict step: the CAM of each sample's label and its foreground, on a fixed ``grid_shape`` canvas.

    Returns ``patch_keep`` (B, R, C') bool (the foreground: the bounding box of the patches whose normalised CAM
    exceeds ``threshold``, or those patches with ``foreground="patches"``) and ``cam`` (B, R, C') float in [0, 1].
    Float32 whatever the surrounding autocast, so masks do not depend on the training precision.
    """
    with torch.autocast(device_type=batch["images"].device.type, enabled=False):
        images = batch["images"].float()
        out = backbone(batch["text_ids"], batch["text_masks"], images, batch["pixel_masks"],
                       patch_keep=batch.get("patch_keep"), return_attention=[-1] if mode == "tscam" else False)
        T, P = out.text_len, out.num_patches
        patches = slice(T + 1, T + 1 + P)
        valid = out.image_masks
        tokens = backbone.pooler.activation(backbone.pooler.dense(out.hidden[:, patches]))   # (B, P, C)
        labels = batch["labels"].long()
        logits = classifier(tokens.float())                                                 # (B, P, classes)
        semantic = logits.gather(2, labels[:, None, None].expand(-1, logits.shape[1], 1))[..., 0]
        cam = normalise(semantic, valid, "minmax")
        if mode == "tscam":
            attention = out.attentions[-1].float().mean(1)[:, 0, patches]                    # text [CLS] -> patches
            cam = normalise(cam * attention, valid, "minmax")
        keep = valid & (cam > threshold)  # cv2.threshold(cam, threshold, 1, THRESH_BINARY): strictly above
        p = backbone.cfg.patch_size
        if images.shape[-2] // p > grid_shape[0] or images.shape[-1] // p > grid_shape[1]:
            raise ValueError(f"images of {tuple(images.shape[-2:])} px do not fit the {grid_shape} mask canvas")
        keep = score_grid(out, keep.float(), grid_shape) > 0.5
        return {"patch_keep": bounding_box(keep) if foreground == "box" else keep,
                "cam": score_grid(out, cam, grid_shape)}


class CompressedView(ExemplarView):
    """``dataset`` items as CIM stores and replays them (compressed, then restored); patch_keep: (N, R, C') the
    foreground of each item."""

    def __init__(self, dataset, patch_keep: torch.Tensor, patch_size: int, compress_ratio: float, max_text_len: int,
                 cam: torch.Tensor | None = None):
        super().__init__(dataset, max_text_len)
        self.patch_keep, self.patch_size, self.compress_ratio = patch_keep, patch_size, compress_ratio
        self.cam = cam  # (N, R, C') the CAM each foreground was cut from (the memory browser shows it)

    def exemplar(self, i: int) -> CimExemplar:
        item = self.dataset[i]
        p = self.patch_size
        rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
        return CimExemplar.from_item(item, p, self.patch_keep[i, :rows, :cols], self.compress_ratio)


@dataclass(frozen=True)
class CimSettings(ReplaySettings):
    cim_cam: str = setting("token", '"token": the label\'s logit on every pooled patch token (CIM-CIL\'s weights x '
                           'feature map); "tscam": that x the text [CLS]\'s attention (TS-CAM)')
    cim_threshold: float = setting(0.6, 'foreground: normalised CAM > this (CIM-CIL "mask_threshold")')
    cim_foreground: str = setting("box", '"box": bounding box of the thresholded CAM (CIM-CIL); "patches": those '
                                  'patches')
    cim_compress_ratio: float = setting(4.0, 'background area ratio: each side / sqrt(ratio) (CIM-CIL '
                                        '"compress_ratio")')
    cim_bbxblur_prob_incre: float = setting(0.1, "BbxBlur new-class training images with probability k x this after "
                                            "the k-th box update (CIM-CIL \"randombbxblur_prob_incre\"); 0: off")
    cim_bbxblur_interval: float = setting(0.2, "box updates every this share of the phase's epochs, but at its first "
                                          "and last epoch (CIM-CIL \"cam_update_interval\": 40 of 200 epochs)")

    def check(self, settings) -> list[str]:
        problems = super().check(settings)
        if problems:
            return problems
        cams, foregrounds = ("token", "tscam"), ("box", "patches")
        if self.cim_cam not in cams:
            return [f"cim_cam={self.cim_cam!r}: expected one of {cams}"]
        if self.cim_foreground not in foregrounds:
            return [f"cim_foreground={self.cim_foreground!r}: expected one of {foregrounds}"]
        if not 0.0 <= float(self.cim_threshold) <= 1.0:
            return [f"cim_threshold={self.cim_threshold} must lie in [0, 1]"]
        if not float(self.cim_compress_ratio) >= 1.0:
            return [f"cim_compress_ratio={self.cim_compress_ratio} must be >= 1 (an area ratio)"]
        if not 0.0 <= float(self.cim_bbxblur_prob_incre) <= 1.0:
            return [f"cim_bbxblur_prob_incre={self.cim_bbxblur_prob_incre} must lie in [0, 1]"]
        if not 0.0 < float(self.cim_bbxblur_interval) <= 1.0:
            return [f"cim_bbxblur_interval={self.cim_bbxblur_interval} must lie in (0, 1] (a share of the phase's "
                    f"epochs)"]
        return []


@register
class CIM(CompressedReplay):
    name = "cim"
    named_config = {"memory_fill": "stop"}  # CIM-CIL's loop ends at the first exemplar that does not fit
    settings = CimSettings

    def __init__(self, settings):
        super().__init__(settings)
        self._ctx = None
        self._boxes: dict[int, tuple | None] = {}    # dataset row -> box (pixels) of this phase's new samples
        self._blurred: set[int] = set()              # dataset rows blurred this epoch
        self._prob = 0.0                             # the blur probability now (CIM-CIL's randombbxblur_prob)

    # -- CIM-CIL's random BbxBlur of the new classes' training images
    def before_phase(self, ctx) -> None:
        super().before_phase(ctx)
        self._ctx, self._boxes, self._blurred, self._prob = ctx, {}, set(), 0.0

    def blur_schedule(self, epoch: int, epochs: int) -> float | None:
        """The blur probability from ``epoch`` (0-based) of a phase of ``epochs`` on, when the boxes are recomputed
        at its start; None when they are not (CIM-CIL: every interval but the first and the last epoch)."""
        step = float(self.own.cim_bbxblur_prob_incre)
        interval = max(1, round(float(self.own.cim_bbxblur_interval) * epochs))
        if step <= 0 or epoch == 0 or epoch == epochs - 1 or epoch % interval:
            return None
        return min(1.0, (epoch // interval) * step)

    def on_train_epoch_start(self, module, epoch: int) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        prob = self.blur_schedule(epoch, int(ctx.settings.optimisation.max_epoch))
        if prob is not None:
            self._boxes = self.new_class_boxes(module, ctx)
            self._prob = prob
        if not self._boxes:
            return
        seed = np.random.SeedSequence([int(ctx.settings.experiment.seed), ctx.phase, epoch, 0xB1]).generate_state(1)[0]
        rows = sorted(self._boxes)
        draws = torch.rand(len(rows), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
        self._blurred = {r for r, u in zip(rows, draws.tolist()) if u + 1e-6 < self._prob}

    @torch.no_grad()
    def new_class_boxes(self, module, ctx) -> dict[int, tuple | None]:
        """The CAM box (pixels) of every new-class training sample (eval transform) under the current model, by
        dataset row; the model's train/eval modes are restored afterwards."""
        data = ctx.eval_scenario.train_dataset(ctx.phase)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(int(ctx.settings.hardware.num_workers), cores)
        loader = DataLoader(data, batch_size=int(ctx.settings.optimisation.per_gpu_batchsize), shuffle=False,
                            collate_fn=collate, num_workers=workers)
        canvas = mask_canvas(int(ctx.settings.model.image_size), ctx.patch_size)
        modes = {m: m.training for m in module.modules()}
        module.eval()
        boxes = {}
        try:
            for batch in loader:
                batch = model_images({k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()})
                out = cam_step(module.backbone, batch, module.classifier, float(self.own.cim_threshold), canvas,
                               mode=self.own.cim_cam, foreground="box")
                for row, box in zip(batch["indices"].tolist(), box_bounds(out["patch_keep"].cpu(), ctx.patch_size)):
                    boxes[int(row)] = box
        finally:
            for m, training in modes.items():
                m.train(training)
        return boxes

    def encode(self, module, batch: dict, return_attention=False):
        """In training, the new-class images drawn this epoch ``BbxBlur``-ed around their boxes first."""
        if module.training and self._blurred:
            batch = self.blur_batch(batch)
        return super().encode(module, batch, return_attention)

    def blur_batch(self, batch: dict) -> dict:
        """``batch`` with the images of the samples drawn this epoch blurred outside their box (within each
        image's own pixels, ``pixel_masks``); replayed exemplars (old classes) are never drawn."""
        rows = batch["indices"].tolist()
        new = set(self._ctx.new_classes)
        chosen = [b for b, (r, y) in enumerate(zip(rows, batch["labels"].tolist())) if r in self._blurred and y in new]
        if not chosen:
            return batch
        images = batch["images"].clone()
        ratio = float(self.own.cim_compress_ratio)
        for b in chosen:
            H, W = int(batch["pixel_masks"][b].any(1).sum()), int(batch["pixel_masks"][b].any(0).sum())
            images[b, :, :H, :W] = bbx_blur(images[b, :, :H, :W], self._boxes[rows[b]], ratio)
        return {**batch, "images": images}

    def compressed_view(self, ctx, data) -> CompressedView:
        """The foreground of every sample (a CAM pass), and each sample compressed around it."""
        canvas = mask_canvas(int(ctx.settings.model.image_size), ctx.patch_size)
        cams = ctx.predict(data, step=partial(cam_step, classifier=ctx.module.classifier,
                                              threshold=float(self.own.cim_threshold), grid_shape=canvas,
                                              mode=self.own.cim_cam, foreground=self.own.cim_foreground))
        return CompressedView(data, cams["patch_keep"], ctx.patch_size, float(self.own.cim_compress_ratio),
                              ctx.max_text_len, cam=cams["cam"])

    def view_maps(self, out: dict, position: int, rows: int, cols: int):
        """The normalised CAM the foreground was cut from; the whole text is stored."""
        return out["view"].cam[position, :rows, :cols], None

    def view_notes(self) -> dict[str, str | None]:
        c = self.own
        return {**super().view_notes(),
                "ranking": "herding (iCaRL) on the features of the compressed samples",
                "similarity": "cosine similarity of the compressed sample's f(x) to the mean of the class's "
                              "L2-normalised compressed features (herding's target)",
                "attention": f"the class activation map (cim_cam={c.cim_cam!r}), min-max normalised; the patches "
                             f"above cim_threshold={c.cim_threshold} ({c.cim_foreground}) stay at full "
                             f"resolution, the background is stored at 1/{c.cim_compress_ratio:g} of its area"}
