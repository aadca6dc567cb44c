"""Figure 4 of the paper: masked exemplars with their attention maps.

One row per exemplar: input image x_I | attention map A_{CLS->I} | masked image x~_I | masked text x~_T, the kept
words in red, the discarded ones in gray and [CLS]/[SEP] in black, as in the paper's figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emmcil.data.device import image_pixels
from emmcil.figures import save_figure

KEPT, DISCARDED, SPECIAL = "#d62728", "#9a9a9a", "black"


def _image(x: torch.Tensor) -> np.ndarray:
    """An item's image (uint8 or normalised (3, H, W), or a file: ``image_pixels``) -> uint8 (H, W, 3)."""
    return image_pixels(x).permute(1, 2, 0).numpy()


def _words(ax, tokens: Sequence[str], colours: Sequence[str], fontsize: float = 8.0) -> None:
    """Write ``tokens`` left to right with line wrapping, each in its colour."""
    ax.axis("off")
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    x, y, line = 0.0, 1.0, None
    for token, colour in zip(tokens, colours):
        t = ax.text(x, y, token + " ", color=colour, fontsize=fontsize, transform=ax.transAxes, va="top",
                    ha="left", family="monospace")
        box = t.get_window_extent(renderer).transformed(ax.transAxes.inverted())
        line = line or box.height * 1.25
        if x > 0 and x + box.width > 1.0:
            x, y = 0.0, y - line
            t.set_position((x, y))
        x += box.width


def plot_masked_exemplars(images: Sequence[torch.Tensor], scores: Sequence[torch.Tensor],
                          keeps: Sequence[torch.Tensor], tokens: Sequence[Sequence[str]],
                          token_keeps: Sequence[Sequence[bool]], path: str | Path,
                          titles: Sequence[str] | None = None) -> Path:
    """Draw Figure 4 for a few exemplars and save it as PNG at print resolution, and as PDF beside it
    (:func:`emmcil.figures.save_figure`); returns the PNG's path.

    images: (3, H, W) items' images (uint8 pixels, normalised floats or files: ``image_pixels``); scores: (rows,
    cols) A_{CLS->I} on the patch grid; keeps: (rows, cols) bool kept patches; tokens: the valid tokens of each text
    (wordpieces, [CLS] ... [SEP]); token_keeps: kept flags.
    """
    n = len(images)
    # a Figure on its own Agg canvas, not pyplot: no global backend to set, no figure registry to close; at the
    # width of a page's text (7 in), with print-size fonts, so that the 300 dpi PNG and the PDF print as they are
    fig = Figure(figsize=(7.0, 1.6 * n))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 4, squeeze=False, gridspec_kw={"width_ratios": [1, 1, 1, 2.2]})
    for r in range(n):
        img = _image(images[r])
        H, W = img.shape[:2]
        rows, cols = keeps[r].shape
        p = H // rows
        cell = np.ones((p, p), dtype=bool)
        keep_px = np.kron(keeps[r].cpu().numpy(), cell).astype(bool)
        score_px = np.kron(scores[r].cpu().float().numpy(), np.ones((p, p)))
        masked = img * keep_px[..., None]
        ax0, ax1, ax2, ax3 = axes[r]
        # interpolation "none": pixels and patches stay sharp squares, and the PDF embeds the images as they are
        ax0.imshow(img, interpolation="none")
        ax1.imshow(img, interpolation="none")
        ax1.imshow(score_px, cmap="jet", alpha=0.55, extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="none")
        ax2.imshow(masked, interpolation="none")
        for ax in (ax0, ax1, ax2):
            ax.set_xticks([])
            ax.set_yticks([])
        ax3.axis("off")
        label = f" ({titles[r]})" if titles else ""
        ax0.set_ylabel(f"({chr(97 + r)}){label}", fontsize=6.5)
        if r == 0:
            for ax, title in zip(axes[0], ["Input Image $x_I$", r"Attention Map $A_{CLS\to I}$",
                                           r"Masked Image $\tilde{x}_I$", r"Masked Text $\tilde{x}_T$"]):
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    for r in range(n):  # the words wrap at the text panel's width, so they are placed once the panels have theirs
        colours = [SPECIAL if t in ("[CLS]", "[SEP]") else KEPT if k else DISCARDED
                   for t, k in zip(tokens[r], token_keeps[r])]
        _words(axes[r][3], tokens[r], colours, fontsize=6.0)
    path = Path(path)
    save_figure(fig, path)
    return path
