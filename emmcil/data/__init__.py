"""Data layer: arrow files, datasets and batches, transforms, tokenizer, incremental scenarios, demo set, the one
image decoder (``images``), the one text-file reader (``textfiles``), images stored resized (``resize``) and what
a batch becomes on the model's device (``device``: JPEG decoding, normalisation).

Writers and the captioner are commands: ``python -m emmcil.data.write_food101 | write_imagenet_r | write_folder |
captions --help``.
"""
from .arrow import REQUIRED_COLUMNS, ArrowFormatError, arrow_path, dataset_classes, read_arrow, write_arrow
from .collate import collate, pad_images
from .dataset import ArrowDataset, CorruptImageError
from .device import DECODE_ON, EncodedImage, image_pixels, model_images
from .demo import DEMO_CLASSES, DEMO_NUM_CLASSES, ensure_demo
from .images import ImageDecodeError, decode_image, image_size, to_rgb
from .missing import IMAGE_MISSING, NONE, TEXT_MISSING, MissingTable
from .resize import StoredResize, stored_resize
from .scenario import (DEFAULT_CLASS_ORDER_SEED, IncrementalScenario, class_order, phase_sizes, protocol_label,
                       protocol_of, split_phases)
from .textfiles import TextDecodeError, read_text
from .tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_IDS, UNK_ID, VOCAB_SIZE, get_tokenizer
from .transforms import (PixelbertPixels, denormalize_to_uint8, normalize_uint8, pixelbert_resize, pixelbert_transform,
                         resize_uint8)

__all__ = [
    "REQUIRED_COLUMNS", "ArrowFormatError", "arrow_path", "dataset_classes", "read_arrow", "write_arrow", "collate",
    "pad_images", "ArrowDataset", "CorruptImageError", "DEMO_CLASSES", "DEMO_NUM_CLASSES", "ensure_demo",
    "ImageDecodeError", "decode_image", "image_size", "to_rgb", "IMAGE_MISSING", "NONE",
    "TEXT_MISSING", "MissingTable", "DEFAULT_CLASS_ORDER_SEED", "IncrementalScenario", "class_order", "split_phases",
    "phase_sizes", "protocol_label", "protocol_of",
    "CLS_ID", "MASK_ID", "PAD_ID", "SEP_ID", "SPECIAL_IDS", "UNK_ID", "VOCAB_SIZE", "get_tokenizer",
    "denormalize_to_uint8", "normalize_uint8", "pixelbert_resize", "pixelbert_transform", "TextDecodeError",
    "read_text", "StoredResize", "stored_resize", "DECODE_ON", "EncodedImage", "image_pixels", "model_images",
    "PixelbertPixels", "resize_uint8",
]
