"""Figures for papers: every figure the project draws (the report's, the Fig. 4 drawings) is saved as a PNG at
print resolution and, beside it, as a vector PDF with TrueType fonts, which LaTeX includes as it is (many venues
refuse Type 3 fonts, matplotlib's default in PDF)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

PRINT_DPI = 300  # journals ask for 300 dpi for halftones and line art in colour


def save_figure(fig, path: str | Path, dpi: int = PRINT_DPI, vector: bool = True, **savefig_kwargs) -> list[Path]:
    """Save the matplotlib ``Figure`` as ``path`` (PNG, at ``dpi``) and, with ``vector``, as the same name with
    ``.pdf`` (lines and text as vectors, images embedded at ``dpi`` too, TrueType fonts, no creation date,
    so a figure drawn twice gives the same file). ``savefig_kwargs`` go to both (e.g. ``bbox_inches="tight"``).
    Returns the paths written, PNG first."""
    from matplotlib import rc_context

    path = Path(path)
    written = [path]
    fig.savefig(path, dpi=dpi, **savefig_kwargs)
    if vector:
        pdf = path.with_suffix(".pdf")
        with rc_context({"pdf.fonttype": 42}), quiet_font_subsetting():  # TrueType (Type 42), not Type 3
            fig.savefig(pdf, format="pdf", dpi=dpi, metadata={"CreationDate": None}, **savefig_kwargs)
        written.append(pdf)
    return written


@contextlib.contextmanager
def quiet_font_subsetting():
    """fontTools logs every glyph table it subsets into a PDF at INFO (about 400 lines a figure), which a run's INFO
    log (sacred's) would show; warnings stay."""
    logger = logging.getLogger("fontTools")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)
