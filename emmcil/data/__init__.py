"""Data layer: arrow files, datasets and batches, transforms, tokenizer, incremental scenarios, demo set, the one
image decoder (``images``), the one text-file reader (``textfiles``), images stored resized (``resize``) and what
a batch becomes on the model's device (``device``: JPEG decoding, normalisation).

Writers and the captioner are commands: ``python -m emmcil.data.write_food101 | write_imagenet_r | write_folder |
captions --help``.

The names below are imported from their modules when first used (most import torch; the config needs only the
torch-free ``arrow`` and ``catalogue``; the phases of a protocol are the settings',
:mod:`emmcil.settings.protocol`).
"""
import importlib
import sys
import types

_WHERE = {
    **dict.fromkeys(['REQUIRED_COLUMNS', 'ArrowFormatError', 'arrow_path', 'dataset_classes', 'read_arrow',
                     'write_arrow'], 'arrow'),
    **dict.fromkeys(['collate', 'pad_images'], 'collate'),
    **dict.fromkeys(['ArrowDataset', 'CorruptImageError'], 'dataset'),
    **dict.fromkeys(['DECODE_ON', 'EncodedImage', 'image_pixels', 'model_images'], 'device'),
    **dict.fromkeys(['DEMO_CLASSES', 'DEMO_NUM_CLASSES', 'ensure_demo'], 'demo'),
    **dict.fromkeys(['ImageDecodeError', 'decode_image', 'image_size', 'to_rgb'], 'images'),
    **dict.fromkeys(['IMAGE_MISSING', 'NONE', 'TEXT_MISSING', 'MissingTable'], 'missing'),
    **dict.fromkeys(['StoredResize', 'stored_resize'], 'resize'),
    **dict.fromkeys(['DEFAULT_CLASS_ORDER_SEED', 'IncrementalScenario', 'class_order', 'split_phases'], 'scenario'),
    **dict.fromkeys(['TextDecodeError', 'read_text'], 'textfiles'),
    **dict.fromkeys(['CLS_ID', 'MASK_ID', 'PAD_ID', 'SEP_ID', 'SPECIAL_IDS', 'UNK_ID', 'VOCAB_SIZE', 'get_tokenizer'],
                    'tokenizer'),
    **dict.fromkeys(['PixelbertPixels', 'denormalize_to_uint8', 'normalize_uint8', 'pixelbert_resize',
                     'pixelbert_transform', 'resize_uint8'], 'transforms'),
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps ``emmcil.data.collate`` the function: importing the submodule of the same name would set the package's
    attribute to the module."""

    def __setattr__(self, name, value):
        if not (name in _WHERE and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "REQUIRED_COLUMNS", "ArrowFormatError", "arrow_path", "dataset_classes", "read_arrow", "write_arrow", "collate",
    "pad_images", "ArrowDataset", "CorruptImageError", "DEMO_CLASSES", "DEMO_NUM_CLASSES", "ensure_demo",
    "ImageDecodeError", "decode_image", "image_size", "to_rgb", "IMAGE_MISSING", "NONE",
    "TEXT_MISSING", "MissingTable", "DEFAULT_CLASS_ORDER_SEED", "IncrementalScenario", "class_order", "split_phases",
    "CLS_ID", "MASK_ID", "PAD_ID", "SEP_ID", "SPECIAL_IDS", "UNK_ID", "VOCAB_SIZE", "get_tokenizer",
    "denormalize_to_uint8", "normalize_uint8", "pixelbert_resize", "pixelbert_transform", "TextDecodeError",
    "read_text", "StoredResize", "stored_resize", "DECODE_ON", "EncodedImage", "image_pixels", "model_images",
    "PixelbertPixels", "resize_uint8",
]
