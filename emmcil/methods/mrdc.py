"""SSF + MRDC (Memory Replay with Data Compression, Wang et al., ICLR'22; code ``lywang3081/MRDC``): full exemplars
stored as JPEG, so that more fit in the same memory.

How it is built, with its sources and defaults: docs/method.md#mrdc.
"""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from emmcil.data.images import decode_image
from emmcil.data.missing import IMAGE_MISSING
from emmcil.data.resize import DEFAULT_QUALITY, StoredResize, stored_resize
from emmcil.memory.exemplar import JpegExemplar
from emmcil.settings import setting

from . import register
from .replay import CompressedReplay, ExemplarView, ReplaySettings


def model_picture(dataset, item: dict, image_size: int, patch_size: int) -> tuple[Image.Image, bytes, int]:
    """(the picture of ``item`` at the size the model sees it, its file in the writers' ``--resize`` form, the
    bytes of the image's original file).

    The form is ``StoredResize(image_size, patch_size)`` (quality 95, or the quality a resized file records) of the
    image as the dataset stores it: a file written with ``--resize`` at these sizes is already in it (the resize is
    idempotent and keeps the file's bytes), so the result does not depend on how the set was written.
    ``dataset``: an ``ArrowDataset`` or a subset of one (``.dataset``, as the scenario's), which ``item["index"]``
    indexes. Raises TypeError for a dataset without encoded images.
    """
    source = getattr(dataset, "dataset", dataset)
    if not hasattr(source, "image_bytes"):
        raise TypeError(f"mrdc compresses the images as the dataset stores them, but {type(source).__name__} has no "
                        f"image_bytes(index) (an ArrowDataset has)")
    index = int(item["index"])
    record = stored_resize(source.file_of(index))
    form = StoredResize(image_size, patch_size, record["quality"] if record else DEFAULT_QUALITY)
    image, data = source.load_image(index), source.image_bytes(index)
    encoded = form.encode(image, data)
    picture = image if encoded is data else decode_image(encoded, source.image_ids[index])
    return picture, encoded, source.original_nbytes(index)


class JpegView(ExemplarView):
    """``dataset`` items as MRDC stores and replays them (JPEG-compressed at the model's size, decoded)."""

    def __init__(self, dataset, quality: int, image_size: int, patch_size: int, max_text_len: int):
        super().__init__(dataset, max_text_len)
        self.quality, self.image_size, self.patch_size = quality, image_size, patch_size

    def exemplar(self, i: int) -> JpegExemplar:
        item = self.dataset[i]
        picture, form, original_nbytes = model_picture(self.dataset, item, self.image_size, self.patch_size)
        if item.get("missing_type", 0) == IMAGE_MISSING:  # the white image the model sees in its place
            picture, form = Image.new("RGB", picture.size, (255, 255, 255)), None
        return JpegExemplar.from_image(item, picture, original_nbytes, self.patch_size, self.quality, smaller=form)


@dataclass(frozen=True)
class MrdcSettings(ReplaySettings):
    jpeg_quality: int = setting(50, "JPEG quality 1-100 of the stored images (MRDC's released ImageNet runs: 50)")

    def check(self, settings) -> list[str]:
        problems = super().check(settings)
        if not problems and not 1 <= int(self.jpeg_quality) <= 100:
            problems.append(f"jpeg_quality={self.jpeg_quality} must lie in [1, 100]")
        return problems


@register
class MRDC(CompressedReplay):
    name = "mrdc"
    settings = MrdcSettings

    def compressed_view(self, ctx, data) -> JpegView:
        return JpegView(data, int(self.own.jpeg_quality), int(ctx.settings.model.image_size), ctx.patch_size,
                        ctx.max_text_len)

    def view_notes(self) -> dict[str, str | None]:
        return {**super().view_notes(), "ranking": "herding (iCaRL) on the features of the JPEG-compressed samples",
                "similarity": "cosine similarity of the compressed sample's f(x) to the mean of the class's "
                              "L2-normalised compressed features (herding's target)"}
