"""SSF + MRDC (Memory Replay with Data Compression, Wang et al., ICLR'22; code ``lywang3081/MRDC``): full exemplars
stored as JPEG, so that more fit in the same memory.

What MRDC's released code does, and what we follow:
- **compression** (``1_Data_Compression/skimage_save_jpeg.py``, ``imagenet_jpeg.sh``): every training image is read
  and saved again as a JPEG of quality q. We compress the picture the model sees (the pixelbert size), in the form
  the writers' ``--resize`` stores it (:func:`model_picture`: a 4:4:4 JPEG of quality 95 at that size, or the file
  itself when it already has it), so that a set written with or without ``--resize`` gives the very same JPEG and
  the same exemplars (:class:`~emmcil.memory.exemplar.JpegExemplar`); at replay it is decoded like any dataset item.
- **cost**: MRDC measures the compression rate as the compressed folder's size over the original's (step 3 of
  ``imagenet_jpeg.sh``) and stores that many more samples per class (``run.sh``: ``--nb_protos 37`` instead of 20 at
  q = 50). Each exemplar's rate is its JPEG's bytes over its image's *original* file's bytes, as found before any
  ``--resize`` (the writers record them: ``ArrowDataset.original_nbytes``), at most 1; the sample costs that rate in
  ``memory_unit=tokens`` and in ``byte_share`` (the text's bytes added on both sides). For a photo larger than the
  model's input the rate includes the resize: MRDC's exemplar holds what the model reads.
- **quality** (``jpeg_quality``): MRDC chooses q per dataset with its determinantal-point-process criterion
  (``class_incremental_cosine_imagenet_Rq.py``, paper Sec. 4.2); the released ImageNet-sub and ImageNet-full runs
  use q = 50 (``2_LUCIR_+DC/run.sh``, ``run_all.sh``). We use 50 for every dataset: MM-ImageNet-R's images are
  ImageNet-R's, and we have no DPP run of our own; set ``jpeg_quality`` to change it.
- **ranking**: herding on the features of the *compressed* samples. MRDC builds its herding candidates from the
  compressed training folder (``class_incremental_cosine_imagenet.py``: ``prototypes`` from
  ``X_train_total_compression``, features by ``compute_features`` on them, then the herding loop), so the order is
  that of what will actually be replayed. Our herding is the replay baseline's (PyCIL's), where MRDC's code uses
  LUCIR's iCaRL iteration; the difference is the same for every method here.
A sample whose image is missing (CMML) is stored as the JPEG of the white image the model sees in its place.
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
        return JpegView(data, int(self.own.jpeg_quality), int(ctx.cfg["image_size"]), ctx.patch_size,
                        ctx.max_text_len)

    def view_notes(self) -> dict[str, str | None]:
        return {**super().view_notes(), "ranking": "herding (iCaRL) on the features of the JPEG-compressed samples",
                "similarity": "cosine similarity of the compressed sample's f(x) to the mean of the class's "
                              "L2-normalised compressed features (herding's target)"}
