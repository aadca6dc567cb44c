"""SSF + CIM, Class-Incremental Masking (Luo et al., "Class-Incremental Exemplar Compression for Class-Incremental
Learning", CVPR'23; code ``xfflzl/CIM-CIL``; ``method=cim``): exemplars whose background is stored downsampled.

After phase t, for the new classes' training samples (eval transform, the phase's final model in eval mode):
1. **class activation map** of the sample's own class (:func:`cam_step`). ViLT classifies the pooled text [CLS],
   so the CNN CAM (classifier weights on a globally pooled feature map) has no exact counterpart; ``cim_cam``
   chooses the approximation, both gradient-free (the predict pass runs in inference mode):
   - ``"tscam"`` (default; TS-CAM, Gao et al. ICCV'21): the *semantic map* -- the classifier's score for the
     label on every image-patch token of the last layer, each token passed through ViLT's pooler like the [CLS] --
     min-max normalised and multiplied by the last layer's text-[CLS]->patch attention (mean over heads), which
     says where the classified token actually looks;
   - ``"token"``: the semantic map alone (classifier-weighted patch tokens);
2. **foreground**: the map min-max normalised over the image's patches and thresholded, keeping the patches
   strictly above ``cim_threshold`` (CIM-CIL's ``mask_threshold`` 0.6, applied with ``cv2.threshold(...,
   THRESH_BINARY)``); ``cim_foreground="box"`` (default) takes their tight bounding box, as CIM-CIL's ``_gen_bbx``
   (``pycocotools.mask.toBbox`` of the thresholded map), at patch granularity; ``"patches"`` keeps the scattered
   thresholded patches themselves;
3. **compression** (:class:`~emmcil.memory.exemplar.CimExemplar`, CIM-CIL's ``utils/transform.py::BbxBlur``):
   the background resized with nearest neighbours by 1/sqrt(``cim_compress_ratio``) per side -- an *area* ratio,
   4.0 in CIM-CIL's ImageNet-100 and Food-101 configs -- and the foreground kept at full resolution; an exemplar
   costs CIM-CIL's ``compress_rate`` = foreground share + (1 - foreground share) / ratio (a 25 % box: 0.4375),
   its whole text added by bytes;
4. **selection**: herding (CIM-CIL's ``_construct_exemplar``) on the features of the *compressed* samples (the
   restored images, as CIM-CIL extracts them from its ``BbxBlur``-ed class dataset), exemplars entering in that
   order while the class's budget holds (``MemoryBuffer.fill``; CIM-CIL's own loop stops at the first misfit, our
   ``memory_fill=stop``).
At replay the background is resized back with nearest neighbours and the foreground pasted in, as ``BbxBlur``.

Simplified from CIM: its masks come from a CAM threshold *adapted per class by a conditional mask-generation
model trained with bilevel optimisation*; ours is the fixed threshold, which is also CIM's initial mask. CIM's
FOSTER backbone training is replaced by this project's SSF training with replay (the paper's "SSF + CIM").
"""
from __future__ import annotations

from functools import partial

import torch

from emmcil.memory.exemplar import CimExemplar
from emmcil.memory.masking import mask_canvas, normalise, score_grid

from . import register
from .replay import CompressedReplay, ExemplarView

CAM_MODES = ("tscam", "token")
FOREGROUNDS = ("box", "patches")


def bounding_box(keep: torch.Tensor) -> torch.Tensor:
    """(B, R, C) bool -> the tight bounding box of each sample's True cells, (B, R, C) bool (empty stays empty)."""
    rows, cols = keep.any(2), keep.any(1)
    between = lambda m: (m.cumsum(1) > 0) & (m.flip(1).cumsum(1).flip(1) > 0)  # noqa: E731 (first..last True)
    return between(rows)[:, :, None] & between(cols)[:, None, :]


@torch.no_grad()
def cam_step(backbone, batch: dict, classifier, threshold: float, grid_shape: tuple[int, int],
             mode: str = "tscam", foreground: str = "box") -> dict[str, torch.Tensor]:
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
        weight = classifier.weight[labels].float()                                          # (B, C)
        semantic = (tokens.float() * weight[:, None]).sum(-1) + classifier.bias[labels].float()[:, None]
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

    def __init__(self, dataset, patch_keep: torch.Tensor, patch_size: int, compress_ratio: float, max_text_len: int):
        super().__init__(dataset, max_text_len)
        self.patch_keep, self.patch_size, self.compress_ratio = patch_keep, patch_size, compress_ratio

    def exemplar(self, i: int) -> CimExemplar:
        item = self.dataset[i]
        p = self.patch_size
        rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
        return CimExemplar.from_item(item, p, self.patch_keep[i, :rows, :cols], self.compress_ratio)


@register
class CIM(CompressedReplay):
    name = "cim"
    config = {
        **CompressedReplay.config,
        "cim_cam": "tscam",          # "tscam": classifier-weighted patch tokens x [CLS] attention; "token": the former
        "cim_threshold": 0.6,        # foreground: normalised CAM > this (CIM-CIL "mask_threshold")
        "cim_foreground": "box",     # "box": bounding box of the thresholded CAM (CIM-CIL); "patches": those patches
        "cim_compress_ratio": 4.0,   # background area ratio: each side / sqrt(ratio) (CIM-CIL "compress_ratio")
    }

    def check_config(self) -> None:
        super().check_config()
        cfg = self.cfg
        if cfg["cim_cam"] not in CAM_MODES:
            raise ValueError(f"cim_cam={cfg['cim_cam']!r}: expected one of {CAM_MODES}")
        if cfg["cim_foreground"] not in FOREGROUNDS:
            raise ValueError(f"cim_foreground={cfg['cim_foreground']!r}: expected one of {FOREGROUNDS}")
        if not 0.0 <= float(cfg["cim_threshold"]) <= 1.0:
            raise ValueError(f"cim_threshold={cfg['cim_threshold']} must lie in [0, 1]")
        if not float(cfg["cim_compress_ratio"]) >= 1.0:
            raise ValueError(f"cim_compress_ratio={cfg['cim_compress_ratio']} must be >= 1 (an area ratio)")

    def compressed_view(self, ctx, data) -> CompressedView:
        """The foreground of every sample (a CAM pass), and each sample compressed around it."""
        canvas = mask_canvas(int(ctx.cfg["image_size"]), ctx.patch_size)
        cams = ctx.predict(data, step=partial(cam_step, classifier=ctx.module.classifier,
                                              threshold=float(self.cfg["cim_threshold"]), grid_shape=canvas,
                                              mode=self.cfg["cim_cam"], foreground=self.cfg["cim_foreground"]))
        return CompressedView(data, cams["patch_keep"], ctx.patch_size, float(self.cfg["cim_compress_ratio"]),
                              ctx.max_text_len)
