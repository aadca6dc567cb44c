"""SSF + CIM, Class-Incremental Masking (Luo et al., "Class-Incremental Exemplar Compression for Class-Incremental
Learning", CVPR'23; ``method=cim``): exemplars whose non-discriminative pixels are stored downsampled.

After phase t, for the new classes' training samples (eval transform, the phase's final model in eval mode):
1. **class activation map** of the sample's own class (:func:`cam_step`). ViLT classifies the pooled text [CLS],
   so the CNN CAM (classifier weights on a globally pooled feature map) has no exact counterpart; ``cim_cam``
   chooses the approximation, both gradient-free (the predict pass runs in inference mode):
   - ``"tscam"`` (default; TS-CAM, Gao et al. ICCV'21): the *semantic map* -- the classifier's score for the
     label on every image-patch token of the last layer, each token passed through ViLT's pooler like the [CLS] --
     min-max normalised and multiplied by the last layer's text-[CLS]->patch attention (mean over heads), which
     says where the classified token actually looks;
   - ``"token"``: the semantic map alone (classifier-weighted patch tokens);
2. **0-1 mask**: the map min-max normalised over the image's patches and thresholded at ``cim_threshold``
   (CIM's ``mask_threshold`` 0.6), at patch granularity; patches at or above it are discriminative;
3. **compression** (:class:`~emmcil.incremental.exemplar.CimExemplar`): discriminative patches at full resolution,
   every other patch area-downsampled ``cim_downsample`` times per side (CIM's ``compress_ratio`` 4), the text
   whole; its bytes count against the same per-class byte budget as every exemplar here;
4. **selection**: herding (as CIM's ``_construct_exemplar``) on the features of the *compressed* samples (the
   restored images, as CIM extracts them from its compressed dataset), exemplars entering in that order while the
   class's byte budget holds (``MemoryBuffer.fill``), so the stored bytes never exceed it.
At replay the background is upsampled back (bilinear) and the full-resolution patches pasted in.

Simplified from CIM: its masks come from a CAM threshold *adapted per class by a conditional mask-generation
model trained with bilevel optimisation*; ours is the fixed threshold, which is also CIM's initial mask. CIM's
FOSTER backbone training is replaced by this project's SSF training with replay (the paper's "SSF + CIM").
"""
from __future__ import annotations

from functools import partial

import torch

from emmcil.incremental.exemplar import CimExemplar
from emmcil.incremental.masking import mask_canvas, normalise, score_grid

from . import register
from .replay import Replay

CAM_MODES = ("tscam", "token")


@torch.no_grad()
def cam_step(backbone, batch: dict, classifier, threshold: float, grid_shape: tuple[int, int],
             mode: str = "tscam") -> dict[str, torch.Tensor]:
    """Predict step: the CAM of each sample's label and its 0-1 patch mask, on a fixed ``grid_shape`` canvas.

    Returns ``patch_keep`` (B, R, C') bool (the discriminative patches) and ``cam`` (B, R, C') float in [0, 1].
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
        keep = valid & (cam >= threshold)
        p = backbone.cfg.patch_size
        if images.shape[-2] // p > grid_shape[0] or images.shape[-1] // p > grid_shape[1]:
            raise ValueError(f"images of {tuple(images.shape[-2:])} px do not fit the {grid_shape} mask canvas")
        return {"patch_keep": score_grid(out, keep.float(), grid_shape) > 0.5, "cam": score_grid(out, cam, grid_shape)}


class CompressedView(torch.utils.data.Dataset):
    """``dataset`` items as CIM would replay them (compressed, then restored), for features of compressed samples."""

    def __init__(self, dataset, patch_keep: torch.Tensor, patch_size: int, downsample: int, max_text_len: int):
        self.dataset, self.patch_keep = dataset, patch_keep
        self.patch_size, self.downsample, self.max_text_len = patch_size, downsample, max_text_len

    def __len__(self) -> int:
        return len(self.dataset)

    def exemplar(self, i: int) -> CimExemplar:
        item = self.dataset[i]
        p = self.patch_size
        rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
        return CimExemplar.from_item(item, p, self.patch_keep[i, :rows, :cols], self.downsample)

    def __getitem__(self, i: int) -> dict:
        return self.exemplar(i).to_item(self.max_text_len)


@register
class CIM(Replay):
    name = "cim"
    config = {
        **Replay.config,
        "cim_cam": "tscam",       # "tscam": classifier-weighted patch tokens x [CLS] attention; "token": the former
        "cim_threshold": 0.6,     # discriminative patches: normalised CAM >= this (CIM "mask_threshold")
        "cim_downsample": 4,      # background downsampling per side (CIM "compress_ratio")
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        if self.cfg["cim_cam"] not in CAM_MODES:
            raise ValueError(f"cim_cam={self.cfg['cim_cam']!r}: expected one of {CAM_MODES}")
        if not 0.0 <= float(self.cfg["cim_threshold"]) <= 1.0:
            raise ValueError(f"cim_threshold={self.cfg['cim_threshold']} must lie in [0, 1]")
        r = int(self.cfg["cim_downsample"])
        if r < 1 or ctx.patch_size % r:
            raise ValueError(f"cim_downsample={r} must be a positive divisor of patch_size={ctx.patch_size}")

    def after_phase(self, ctx) -> None:
        budget = self.make_room(ctx)
        data = ctx.eval_scenario.train_dataset(ctx.phase)
        canvas = mask_canvas(int(ctx.cfg["image_size"]), ctx.patch_size)
        cams = ctx.predict(data, step=partial(cam_step, classifier=ctx.module.classifier,
                                              threshold=float(self.cfg["cim_threshold"]), grid_shape=canvas,
                                              mode=self.cfg["cim_cam"]))
        view = CompressedView(data, cams["patch_keep"], ctx.patch_size, int(self.cfg["cim_downsample"]),
                              ctx.max_text_len)
        features = ctx.predict(view, features=True)["features"]
        for c in ctx.new_classes:
            members = (cams["labels"] == c).nonzero()[:, 0]
            if len(members) == 0:
                continue
            ranked = (int(members[k]) for k in self.rank(features[members]))
            self.memory.fill(c, (view.exemplar(i) for i in ranked), budget)
