"""SSF + exemplar masking, the paper's method (``method=emm``; named config ``emm``).

How it is built, with its sources and defaults: docs/method.md#emm-exemplar-masking.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from emmcil.memory.exemplar import Exemplar
from emmcil.memory.masking import MaskingConfig, mask_canvas, masking_step
from emmcil.memory.selection import cosine_to_mean, selection_order
from emmcil.settings import check_augmentation, check_masking, setting

from . import register
from .replay import Replay, ReplaySettings


@dataclass(frozen=True)
class EmmSettings(ReplaySettings):
    tau_image: float = setting(0.74, 'tau_I: with mask_norm "ratio", keep the top 1 - 0.74 = 26 % of the patches')
    tau_text: float = setting(0.5, "tau_T: ... and the top half of the words, by A_{I->T} from the discarded patches")
    mask_layers: list[int] = setting([-1], "attention layers to use (empty: all; -1 the last)", unique=True)
    mask_layer_reduce: str = setting("mean", '"mean" over mask_layers or "rollout"')
    mask_head_reduce: str = setting("mean", '"mean" or "max" over heads')
    mask_norm: str = setting("ratio", '"ratio" (top share, calibrated to Fig. 4), "minmax" or "mass"')
    exemplar_selection: str = setting("class_mean", '"class_mean" (paper), "herding", "random"')
    class_mean_from: str = setting("full", 'mu_c from un-masked ("full") or masked ("masked") features')
    mask_figure: int = setting(4, "exemplars drawn in fig4_phase{t}.png (0: none)", low=0, result=False)
    aug_text_swap: float = setting(0.5, "P(swap the masked text with a same-class exemplar's) per replayed exemplar")
    aug_patch_merge: float = setting(0.5, "P(add a same-class exemplar's kept patches) per replayed exemplar")
    aug_mode: str = setting("in_place", "in_place: each exemplar replayed augmented as drawn | beside: as stored and "
                            "an augmented copy beside it (Fig. 2's other reading; twice the replay items)")
    masked_replay: str = setting("patches", "patches: the kept patches only (explicit keep mask) | black: the whole "
                                 "grid, discarded patches black, as ViLT feeds a black-filled image (Fig. 4)")
    mask_cls_token: str = setting("text", "A_{CLS->I} from the text [CLS] (pooled, classified) | image: the image "
                                  "[CLS]")

    def check(self, settings) -> list[str]:
        problems = super().check(settings)
        if problems:
            return problems
        try:  # fail on a bad key when the config is made (and at setup), not at the first masking pass
            check_augmentation(float(self.aug_text_swap), float(self.aug_patch_merge), self.aug_mode,
                               self.masked_replay)
            check_masking(self.tau_image, self.tau_text, self.mask_layer_reduce, self.mask_head_reduce,
                          self.mask_norm, self.mask_cls_token)
        except ValueError as err:
            return [str(err)]
        layers, n = list(self.mask_layers), int(settings.model.num_layers)
        if any(not -n <= i < n for i in layers):
            return [f"mask_layers={layers}: out of range for the model's {n} layers (num_layers)"]
        if len({i % n for i in layers}) < len(layers):
            return [f"mask_layers={layers}: names a layer twice in a {n}-layer model (-1 is layer {n - 1})"]
        selections = ("class_mean", "herding", "random")
        if self.exemplar_selection not in selections:
            return [f"exemplar_selection={self.exemplar_selection!r}: expected one of {selections}"]
        if self.class_mean_from not in ("full", "masked"):
            return [f"class_mean_from={self.class_mean_from!r}: expected 'full' or 'masked'"]
        return []


@register
class ExemplarMasking(Replay):
    name = "emm"
    settings = EmmSettings

    def augmentation(self) -> tuple[float, float]:
        return float(self.own.aug_text_swap), float(self.own.aug_patch_merge)

    def replay_options(self) -> dict:
        return {"mode": self.own.aug_mode, "masked_replay": self.own.masked_replay}

    def masking_config(self) -> MaskingConfig:
        c = self.own
        return MaskingConfig(tau_image=c.tau_image, tau_text=c.tau_text, layers=tuple(c.mask_layers),
                             layer_reduce=c.mask_layer_reduce, head_reduce=c.mask_head_reduce,
                             norm=c.mask_norm, cls_token=c.mask_cls_token)

    def candidates(self, ctx, data) -> dict:
        """The masking pass: f(x), f(x~), the kept patches and tokens of every sample (masking_step)."""
        canvas = mask_canvas(int(ctx.settings.model.image_size), ctx.patch_size)
        return ctx.predict(data, step=partial(masking_step, cfg=self.masking_config(), grid_shape=canvas,
                                              masked_replay=self.own.masked_replay))

    def rank(self, ctx, out: dict, members: torch.Tensor):
        """Masked samples by cosine similarity of f(x~) to mu_c (``exemplar_selection``); ``random`` is seeded by
        (seed, phase, class)."""
        key = "features" if self.own.class_mean_from == "full" else "masked_features"
        c = int(out["labels"][members[0]])
        seed = np.random.SeedSequence([int(ctx.settings.experiment.seed), ctx.phase, c]).generate_state(1)[0]
        return selection_order(self.own.exemplar_selection, out["masked_features"][members],
                               out[key][members].mean(0), torch.Generator().manual_seed(int(seed)))

    def similarity(self, ctx, out: dict, members: torch.Tensor) -> torch.Tensor:
        """cos(f(x~), mu_c) of each of one class's masked samples (Fig. 3), whatever ``exemplar_selection``."""
        key = "features" if self.own.class_mean_from == "full" else "masked_features"
        return cosine_to_mean(out["masked_features"][members], out[key][members].mean(0))

    def view_maps(self, out: dict, position: int, rows: int, cols: int):
        """A_{CLS->I} normalised as ``mask_norm`` (Fig. 4's map) and the kept tokens."""
        return out["image_scores"][position, :rows, :cols], out["text_keep"][position]

    def view_notes(self) -> dict[str, str | None]:
        c = self.own
        mean = "un-masked features f(x)" if c.class_mean_from == "full" else "masked features f(x~)"
        similarity = f"cosine similarity of the masked feature f(x~) to the class mean mu_c (of the {mean})"
        ranking = {"class_mean": similarity, "herding": "herding on the masked features f(x~)",
                   "random": "random order (seeded by seed, phase and class)"}[c.exemplar_selection]
        layers = "all layers" if not c.mask_layers else f"layer(s) {list(c.mask_layers)}"
        return {"ranking": ranking, "similarity": similarity,
                "attention": f"A_CLS->I: the text [CLS] token's attention to the image patches ({layers}, "
                             f"{c.mask_layer_reduce} over layers, {c.mask_head_reduce} over heads), normalised "
                             f"as mask_norm={c.mask_norm!r}; tau_I={c.tau_image} keeps the patches, "
                             f"tau_T={c.tau_text} the words"}

    def make_exemplars(self, ctx, data, out: dict, positions):
        """Masked exemplars of ``data`` items at ``positions`` (lazily, in rank order)."""
        p = ctx.patch_size
        for i in positions:
            item = data[i]
            rows, cols = item["image"].shape[-2] // p, item["image"].shape[-1] // p
            yield Exemplar.from_item(item, p, patch_keep=out["patch_keep"][i, :rows, :cols],
                                     token_keep=out["text_keep"][i])

    def after_fill(self, ctx, data, out: dict) -> None:
        if self.own.mask_figure > 0:
            self.draw_figure(ctx, data, out)

    def draw_figure(self, ctx, data, out: dict) -> None:
        """fig4_phase{t}.png: the top-ranked stored exemplar of up to ``mask_figure`` new classes."""
        from emmcil.memory.figure import plot_masked_exemplars

        chosen = [ex for c in ctx.new_classes for ex in self.memory.classes.get(c, [])[:1]][:self.own.mask_figure]
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
