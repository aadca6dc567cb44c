"""SSF + MRDC (Memory Replay with Data Compression, Wang et al., ICLR'22): full exemplars stored as JPEG.

As ``replay`` (herding order, class-balanced byte budget), but each exemplar's image is kept as a JPEG of quality
``jpeg_quality`` and the budget counts the JPEG's bytes (plus the token ids and positions), so more exemplars fit
in the same memory, at some loss of image quality. MRDC picks the quality per dataset with a determinantal point
process; we expose it as a config key instead (default 50, our choice).
"""
from __future__ import annotations

from typing import Iterable, Iterator

from emmcil.incremental.exemplar import JpegExemplar

from . import register
from .replay import Replay


@register
class MRDC(Replay):
    name = "mrdc"
    config = {
        **Replay.config,
        "jpeg_quality": 50,  # JPEG quality 1-100 of the stored images (MRDC tunes it per dataset; 50 is our choice)
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        if not 1 <= int(self.cfg["jpeg_quality"]) <= 100:
            raise ValueError(f"jpeg_quality={self.cfg['jpeg_quality']} must lie in [1, 100]")

    def make_exemplars(self, ctx, dataset, positions: Iterable[int]) -> Iterator[JpegExemplar]:
        for i in positions:
            yield JpegExemplar.from_item(dataset[int(i)], ctx.patch_size, int(self.cfg["jpeg_quality"]))
