"""SSF + exemplar masking, the paper's method (``method=emm``; named config ``emm``).

After phase t, for the new classes' training samples (eval transform, the phase's final model in eval mode):
1. **masking** (:func:`~emmcil.incremental.masking.masking_step`): A_{CLS->I} with tau_I gives the kept patches,
   the attention of the discarded patches to the text with tau_T the kept words; [CLS]/[SEP] always kept;
2. **selection**: the masked sample's feature f(x~) is compared with the class mean mu_c by cosine similarity
   (``exemplar_selection``: ``class_mean`` as the paper, or ``herding`` / ``random``), mu_c being the mean of the
   un-masked features f(x) (``class_mean_from="full"``, DESIGN §2) or of the masked ones (``"masked"``);
3. **storage**: masked exemplars (kept patches as uint8 pixels + grid cells, kept token ids + positions) enter the
   class's list in rank order while its byte budget lasts, so ~1/(kept fraction) more fit than full exemplars.
At replay, exemplars go through the explicit keep masks (never zero pixels) with the multimodal augmentation of
:mod:`~emmcil.incremental.augment`. A Figure-4 PNG of a few new exemplars is written to the run directory after
every phase (``mask_figure`` exemplars; 0 turns it off).
"""
from __future__ import annotations

from functools import partial

import torch

from emmcil.incremental.exemplar import Exemplar
from emmcil.incremental.masking import MaskingConfig, mask_canvas, masking_step
from emmcil.incremental.selection import selection_order

from . import register
from .replay import Replay


@register
class ExemplarMasking(Replay):
    name = "emm"
    config = {
        **Replay.config,
        "tau_image": 0.5,             # tau_I on min-max normalised A_{CLS->I}
        "tau_text": 0.5,              # tau_T on min-max normalised A_{I->T} from the discarded patches
        "mask_layers": [-1],          # attention layers to use (empty: all)
        "mask_layer_reduce": "mean",  # "mean" over mask_layers or "rollout"
        "mask_head_reduce": "mean",   # "mean" or "max" over heads
        "mask_norm": "minmax",        # "minmax", "mass" or "ratio"
        "exemplar_selection": "class_mean",  # "class_mean" (paper), "herding", "random"
        "class_mean_from": "full",    # mu_c from un-masked ("full") or masked ("masked") features
        "mask_figure": 4,             # exemplars drawn in fig4_phase{t}.png (0: none)
        "aug_text_swap": 0.5,         # P(swap the masked text with a same-class exemplar's) per replayed exemplar
        "aug_patch_merge": 0.5,       # P(add a same-class exemplar's kept patches) per replayed exemplar
    }

    def augmentation(self) -> tuple[float, float]:
        return float(self.cfg["aug_text_swap"]), float(self.cfg["aug_patch_merge"])

    def masking_config(self) -> MaskingConfig:
        c = self.cfg
        return MaskingConfig(tau_image=c["tau_image"], tau_text=c["tau_text"], layers=tuple(c["mask_layers"]),
                             layer_reduce=c["mask_layer_reduce"], head_reduce=c["mask_head_reduce"],
                             norm=c["mask_norm"])

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.masking_config()  # fail on a bad key before the first phase trains
        if self.cfg["class_mean_from"] not in ("full", "masked"):
            raise ValueError(f"class_mean_from={self.cfg['class_mean_from']!r}: expected 'full' or 'masked'")

    def after_phase(self, ctx) -> None:
        budget = self.make_room(ctx)
        data = ctx.eval_scenario.train_dataset(ctx.phase)
        canvas = mask_canvas(int(ctx.cfg["image_size"]), ctx.patch_size)
        out = ctx.predict(data, step=partial(masking_step, cfg=self.masking_config(), grid_shape=canvas))
        generator = torch.Generator().manual_seed(int(ctx.cfg["seed"]) * 1000 + ctx.phase)
        key = "features" if self.cfg["class_mean_from"] == "full" else "masked_features"
        for c in ctx.new_classes:
            members = (out["labels"] == c).nonzero()[:, 0]
            if len(members) == 0:
                continue
            mean = out[key][members].mean(0)
            order = selection_order(self.cfg["exemplar_selection"], out["masked_features"][members], mean, generator)
            ranked = (int(members[k]) for k in order)
            self.memory.fill(c, self.masked_exemplars(ctx, data, out, ranked), budget)
        if self.cfg["mask_figure"] > 0:
            self.draw_figure(ctx, data, out)

    def masked_exemplars(self, ctx, data, out: dict, positions):
        """Masked exemplars of ``data`` items at ``positions`` (lazily, in rank order)."""
        p = ctx.patch_size
        for i in positions:
            item = data[i]
            rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
            yield Exemplar.from_item(item, p, patch_keep=out["patch_keep"][i, :rows, :cols],
                                     token_keep=out["text_keep"][i])

    def draw_figure(self, ctx, data, out: dict) -> None:
        """fig4_phase{t}.png: the top-ranked stored exemplar of up to ``mask_figure`` new classes."""
        from emmcil.visualisation import plot_masked_exemplars

        chosen = [ex for c in ctx.new_classes for ex in self.memory.classes.get(c, [])[:1]][:self.cfg["mask_figure"]]
        if not chosen or not ctx.is_main:
            return
        positions = {int(i): k for k, i in enumerate(data.indices)} if hasattr(data, "indices") else None
        tok = ctx.tokenizer
        images, scores, keeps, tokens, token_keeps, titles = [], [], [], [], [], []
        p = ctx.patch_size
        for ex in chosen:
            i = positions[ex.index] if positions is not None else ex.index
            item = data[i]
            rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
            valid = item["text_masks"].bool()
            images.append(item["image"])
            scores.append(out["image_scores"][i, :rows, :cols])
            keeps.append(out["patch_keep"][i, :rows, :cols])
            tokens.append(tok.convert_ids_to_tokens(item["text_ids"][valid].tolist()))
            token_keeps.append(out["text_keep"][i][valid].tolist())
            titles.append(str(item.get("image_id", "")))
        plot_masked_exemplars(images, scores, keeps, tokens, token_keeps,
                              ctx.run_dir / f"fig4_phase{ctx.phase}.png", titles)
