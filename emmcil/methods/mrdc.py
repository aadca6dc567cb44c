"""SSF + MRDC (Memory Replay with Data Compression, Wang et al., ICLR'22; code ``lywang3081/MRDC``): full exemplars
stored as JPEG, so that more fit in the same memory.

What MRDC's released code does, and what we follow:
- **compression** (``1_Data_Compression/skimage_save_jpeg.py``, ``imagenet_jpeg.sh``): every training image is read
  as stored and saved again as a JPEG of quality q, at the same resolution. We compress the stored image the same
  way (:class:`~emmcil.memory.exemplar.JpegExemplar`); at replay it is decoded and goes through the evaluation
  transform's resize like any dataset item.
- **cost**: MRDC measures the compression rate as the compressed folder's size over the original's (step 3 of
  ``imagenet_jpeg.sh``) and stores that many more samples per class (``run.sh``: ``--nb_protos 37`` instead of 20 at
  q = 50). In our default unit each exemplar costs (JPEG bytes + token bytes) / (its image's encoded bytes as the
  dataset stores them + token bytes), the same ratio per sample.
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

from PIL import Image

from emmcil.data.missing import IMAGE_MISSING
from emmcil.memory.exemplar import JpegExemplar

from . import register
from .replay import CompressedReplay, ExemplarView


def stored_image(dataset, item: dict) -> tuple[Image.Image, bytes]:
    """(the image of ``item`` as ``dataset`` stores it, decoded; the file as the dataset stores it).

    ``dataset``: an ``ArrowDataset`` or a subset of one (``.dataset``, as the scenario's), which ``item["index"]``
    indexes. Raises TypeError for a dataset without encoded images.
    """
    source = getattr(dataset, "dataset", dataset)
    if not hasattr(source, "image_bytes"):
        raise TypeError(f"mrdc compresses the images as the dataset stores them, but {type(source).__name__} has no "
                        f"image_bytes(index) (an ArrowDataset has)")
    index = int(item["index"])
    return source.load_image(index), source.image_bytes(index)


class JpegView(ExemplarView):
    """``dataset`` items as MRDC stores and replays them (JPEG-compressed, decoded, resized)."""

    def __init__(self, dataset, quality: int, patch_size: int, max_text_len: int):
        super().__init__(dataset, max_text_len)
        self.quality, self.patch_size = quality, patch_size

    def exemplar(self, i: int) -> JpegExemplar:
        item = self.dataset[i]
        image, encoded = stored_image(self.dataset, item)
        original = encoded  # kept instead of a larger JPEG
        if item.get("missing_type", 0) == IMAGE_MISSING:  # the white image the model sees in its place
            image, original = Image.new("RGB", image.size, (255, 255, 255)), None
        return JpegExemplar.from_image(item, image, len(encoded), self.patch_size, self.quality, original=original)


@register
class MRDC(CompressedReplay):
    name = "mrdc"
    config = {
        **CompressedReplay.config,
        "jpeg_quality": 50,  # JPEG quality 1-100 of the stored images (MRDC's released ImageNet runs: 50)
    }

    def check_config(self) -> None:
        super().check_config()
        if not 1 <= int(self.cfg["jpeg_quality"]) <= 100:
            raise ValueError(f"jpeg_quality={self.cfg['jpeg_quality']} must lie in [1, 100]")

    def compressed_view(self, ctx, data) -> JpegView:
        return JpegView(data, int(self.cfg["jpeg_quality"]), ctx.patch_size, ctx.max_text_len)
