"""What a memory buffer stores per exemplar, and what each exemplar costs in every memory unit (docs/method.md,
"what we chose where the paper is silent": storage, memory unit).

Three kinds of exemplar, one per way of storing a sample, on one base (:class:`StoredExemplar`: the text as kept
token ids and positions, the label and ids, their state); each exposes its cost in every unit of ``memory_unit``
(:data:`UNITS`), relative to the same sample stored in full, so that a full exemplar costs exactly 1.0 and a class
budget of m holds m of them, as the paper's memory plot counts its x-axis in samples per class:

    token_share  float  ``tokens`` (the default): the tokens stored at full resolution over the sample's tokens
                        (image patches + valid text tokens, [CLS] and [SEP] included: they are stored as any token;
                        the image [CLS] is a parameter, not stored); a token stored compressed counts at its
                        compression rate (see the kinds below)
    byte_share   float  ``byte_share``: stored bytes over the bytes of the same sample stored in full in this kind's
                        own representation (text is about 0.07 % of them at ViLT-B/32 sizes)
    nbytes       int    ``bytes``: bytes of what is stored (against m x the training set's mean full-exemplar bytes)
    costs        dict   {unit: cost} of all three, ``cost(unit)`` one of them
    patch_share  float  share of the image's patches stored at full resolution
    word_share   float | None   share of the words (text tokens other than [CLS]/[SEP]) stored; None without words
    to_item(max_text_len, masked_replay)   the replay item (dataset item format, uint8 pixels, plus ``patch_keep``)
    state_dict()            what a checkpoint keeps, its kind included (:func:`exemplar_from_state`
                            rebuilds any kind)

- :class:`Exemplar` (``replay``, ``emm``): kept patches as raw uint8 pixels with their grid cells, kept tokens as
  uint16 ids with their positions, so ``nbytes = K (3p^2 + 2) + 4M``; ``token_share`` = (K + M) / (all patches + all
  valid tokens), ``byte_share`` its share of the same bytes. A masked exemplar differs from a full one only in K and
  M.
- :class:`JpegExemplar` (``mrdc``): the sample's image JPEG-compressed; its image's rate is MRDC's measure, the
  JPEG's bytes over the original file's (before any ``--resize`` of the writers), at most 1.
- :class:`CimExemplar` (``cim``): full-resolution box patches + the background downsampled (CIM-CIL's
  ``BbxBlur``); its image's rate is CIM-CIL's ``compress_rate`` (box patches + background patches / compress ratio,
  over all patches).
A compressed-image exemplar (MRDC, CIM) costs its image's rate in ``tokens``: its references charge a stored sample
that rate (CIM-CIL's memory loop adds up ``compress_rate``; MRDC counts compressed over original files), with the
text riding along at the same rate, which is how the paper's memory plot holds about twice as many CIM exemplars
as SSF ones (charging their whole text at full rate would cap CIM at about 0.49 of a sample, 10 a class at m = 5,
whatever its box). The constant bookkeeping (grid size, label, ids) is not counted.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from emmcil.data.device import image_pixels
from emmcil.data.images import decode_image
from emmcil.data.tokenizer import CLS_ID, PAD_ID, SEP_ID
from emmcil.data.transforms import normalize_uint8, resize_uint8

COORD_DTYPE, TOKEN_DTYPE = torch.uint8, torch.uint16
UNITS = ("tokens", "byte_share", "bytes")  # memory_unit: the default first
MASKED_REPLAY = ("patches", "black")        # how a masked image is fed to the model (emm's masked_replay)
TOKEN_NBYTES = 2 * TOKEN_DTYPE.itemsize  # a token's id + its position


def patch_nbytes(patch_size: int) -> int:
    """Bytes of one stored patch: its uint8 pixels and its grid cell."""
    return 3 * patch_size * patch_size + 2 * COORD_DTYPE.itemsize


def full_exemplar_nbytes(rows: int, cols: int, num_tokens: int, patch_size: int) -> int:
    """Bytes of a full exemplar of a ``rows x cols`` patch grid with ``num_tokens`` valid tokens."""
    return rows * cols * patch_nbytes(patch_size) + num_tokens * TOKEN_NBYTES


def patchify(image: torch.Tensor, p: int) -> torch.Tensor:
    """(C, rows*p, cols*p) -> (rows*cols, C, p, p), row-major like ViLT's patch order."""
    return rearrange(image, "c (r p) (w q) -> (r w) c p q", p=p, q=p)


def unpatchify(patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(rows*cols, C, q, q) row-major -> (C, rows*q, cols*q), the inverse of :func:`patchify`."""
    return rearrange(patches, "(r w) c p q -> c (r p) (w q)", r=rows, w=cols)


def tensor_nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def count_words(token_ids: torch.Tensor) -> int:
    """Tokens other than [CLS] and [SEP] (the always-kept ones): the words a text mask chooses among."""
    return int(((token_ids.long() != CLS_ID) & (token_ids.long() != SEP_ID)).sum())


def black_value(image: torch.Tensor) -> torch.Tensor:
    """A black pixel (3, 1) in ``image``'s form: 0 for uint8 pixels, -1 after ViLT's normalisation (mean = std =
    0.5), so never the 0 that padding is filled with (padding is marked by ``pixel_masks`` anyway)."""
    if image.dtype == torch.uint8:
        return torch.zeros(3, 1, dtype=torch.uint8)
    return normalize_uint8(torch.zeros(3, 1, 1, dtype=torch.uint8)).reshape(3, 1).to(image.dtype)


def fill_black(item: dict, patch_size: int) -> dict:
    """``item`` (a replay item: ``image`` (3, H, W), ``patch_keep`` (H/p, W/p) bool) as a black-filled image: every
    pixel of a cell that ``patch_keep`` does not keep is black (:func:`black_value`), and every cell of the grid is
    fed to the model (``patch_keep`` all True), as ViLT feeds any image (``masked_replay="black"``; Fig. 4 draws
    masked regions black). Black is a valid pixel value to the model, never taken for padding."""
    keep = item["patch_keep"]
    cells = keep.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    image = item["image"].clone()
    image[:, ~cells] = black_value(image)
    return {**item, "image": image, "patch_keep": torch.ones_like(keep)}


def nearest_patches(patches: torch.Tensor, size_out: int) -> torch.Tensor:
    """(N, C, q, q) -> (N, C, size_out, size_out), each patch resized with nearest neighbours as Pillow's
    ``Image.NEAREST`` samples (source pixel floor((i + 0.5) * q / size_out): torch's ``nearest-exact``)."""
    return F.interpolate(patches, size=(size_out, size_out), mode="nearest-exact")


@dataclass(kw_only=True)
class StoredExemplar:
    """What every exemplar kind stores besides its image, and what follows from it:

    token_ids  uint16 (M,)   the stored token ids ([CLS], words, [SEP]: all of the text, or the kept ones)
    token_pos  uint16 (M,)   their positions in the original token sequence
    full_nbytes  int         bytes of the same sample stored in full in this kind's own representation
    label, orig_label, index, image_id   bookkeeping (remapped class, dataset class, dataset row, name)

    A kind adds its image fields, ``kind`` (its name in a checkpoint), ``image_nbytes``, ``num_patches``,
    ``patch_share``, ``token_share`` and :meth:`replay_image`; ``nbytes``, ``byte_share``, ``costs``, ``cost``,
    ``word_share``, :meth:`to_item` and :meth:`state_dict` come from here.
    """

    kind: ClassVar[str]
    token_ids: torch.Tensor
    token_pos: torch.Tensor
    full_nbytes: int
    label: int
    orig_label: int = -1
    index: int = -1
    image_id: str = ""

    @staticmethod
    def text_fields(item: dict, token_keep: torch.Tensor | None = None) -> dict:
        """The shared fields of a dataset item (``text_ids``/``text_masks`` (T,), ``label``, ...) but
        ``full_nbytes``: its valid tokens, or those of them ``token_keep`` (T,) bool keeps."""
        valid = item["text_masks"].bool().cpu()
        if token_keep is not None:
            valid = valid & token_keep.bool().cpu()
        pos = valid.nonzero()[:, 0]
        return {"token_ids": item["text_ids"].cpu()[pos].to(TOKEN_DTYPE), "token_pos": pos.to(TOKEN_DTYPE),
                "label": int(item["label"]), "orig_label": int(item.get("orig_label", item["label"])),
                "index": int(item.get("index", -1)), "image_id": str(item.get("image_id", ""))}

    @property
    def image_nbytes(self) -> int:
        raise NotImplementedError

    @property
    def text_nbytes(self) -> int:
        """Bytes of the stored tokens: uint16 ids + uint16 positions."""
        return tensor_nbytes(self.token_ids, self.token_pos)

    @property
    def nbytes(self) -> int:
        """Bytes of what is stored (``memory_unit="bytes"``)."""
        return self.image_nbytes + self.text_nbytes

    @property
    def byte_share(self) -> float:
        """nbytes / full_nbytes (``memory_unit="byte_share"``): 1.0 for a full exemplar, the kept byte share
        otherwise."""
        return self.nbytes / self.full_nbytes

    @property
    def token_share(self) -> float:
        """``memory_unit="tokens"``: tokens stored at full resolution over the sample's tokens (see the module
        docstring)."""
        raise NotImplementedError

    @property
    def costs(self) -> dict[str, float]:
        """{unit: cost} in every unit of :data:`UNITS` (``bytes`` as an int)."""
        return {"tokens": self.token_share, "byte_share": self.byte_share, "bytes": self.nbytes}

    def cost(self, unit: str) -> float:
        """The cost in ``unit`` (one of :data:`UNITS`); ValueError for another."""
        if unit not in UNITS:
            raise ValueError(f"memory_unit={unit!r}: expected one of {UNITS}")
        return self.costs[unit]

    @property
    def num_tokens(self) -> int:
        return self.token_ids.shape[0]

    @property
    def word_share(self) -> float | None:
        """Share of the text's words stored: 1.0 for a kind that stores the whole text, None without words."""
        return 1.0 if count_words(self.token_ids) else None

    def replay_image(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(image uint8 (3, rows*p, cols*p), patch_keep (rows, cols) bool): what the model is fed (normalised on
        its device with the batch, ``emmcil.data.model_images``)."""
        raise NotImplementedError

    def to_item(self, max_text_len: int, masked_replay: str = "patches") -> dict:
        """A model input in the dataset's item format, plus ``patch_keep``: :meth:`replay_image`, and the stored
        tokens at their original positions in text_ids / text_masks (max_text_len,), [PAD] and mask 0 elsewhere.
        ``masked_replay``: "patches" feeds the kept patches only (``patch_keep`` marks them), "black" the whole grid
        with the cells not kept black (:func:`fill_black`); the same for an exemplar that keeps every patch.
        Raises ValueError for a stored position beyond ``max_text_len`` or an unknown ``masked_replay``."""
        if masked_replay not in MASKED_REPLAY:
            raise ValueError(f"masked_replay={masked_replay!r}: expected one of {MASKED_REPLAY}")
        pos = self.token_pos.long()
        if len(pos) and int(pos.max()) >= max_text_len:
            raise ValueError(f"exemplar '{self.image_id}' keeps a token at position {int(pos.max())}, "
                             f"beyond max_text_len={max_text_len}")
        text_ids = torch.full((max_text_len,), PAD_ID, dtype=torch.long)
        text_masks = torch.zeros(max_text_len, dtype=torch.long)
        text_ids[pos] = self.token_ids.long()
        text_masks[pos] = 1
        image, patch_keep = self.replay_image()
        item = {"image": image, "patch_keep": patch_keep, "text_ids": text_ids, "text_masks": text_masks,
                "label": self.label, "orig_label": self.orig_label, "index": self.index, "image_id": self.image_id,
                "raw_text": "", "missing_type": 0}
        return fill_black(item, self.patch_size) if masked_replay == "black" else item

    def state_dict(self) -> dict:
        """Every field and the kind: what :func:`exemplar_from_state` rebuilds the exemplar from."""
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(kw_only=True)
class Exemplar(StoredExemplar):
    """Kept patches and tokens of a (possibly masked) sample:

    pixels     uint8 (K, 3, p, p)   the kept image patches, raw pixel values
    coords     uint8 (K, 2)         (row, col) of each kept patch on the image's patch grid
    grid       int16 (2,)           (rows, cols) of the full image's grid
    text_words   int                words (tokens other than [CLS]/[SEP]) of the full sample's text
    full_nbytes  int                bytes of the same sample with every patch and every valid token
    """

    kind: ClassVar[str] = "patches"
    pixels: torch.Tensor
    coords: torch.Tensor
    grid: torch.Tensor
    text_words: int

    @property
    def patch_size(self) -> int:
        return self.pixels.shape[-1]

    @property
    def image_nbytes(self) -> int:
        return tensor_nbytes(self.pixels, self.coords)

    @property
    def num_patches(self) -> int:
        return self.pixels.shape[0]

    @property
    def grid_patches(self) -> int:
        """Patches of the sample's whole image grid."""
        return int(self.grid[0]) * int(self.grid[1])

    @property
    def patch_share(self) -> float:
        return self.num_patches / self.grid_patches

    @property
    def full_text_tokens(self) -> int:
        """Valid text tokens of the sample in full ([CLS], [SEP] included), from ``full_nbytes``."""
        return (self.full_nbytes - self.grid_patches * patch_nbytes(self.patch_size)) // TOKEN_NBYTES

    @property
    def token_share(self) -> float:
        """(kept patches + kept text tokens) / (all patches + all valid text tokens): 1.0 for a full exemplar."""
        return (self.num_patches + self.num_tokens) / (self.grid_patches + self.full_text_tokens)

    @property
    def word_share(self) -> float | None:
        return count_words(self.token_ids) / self.text_words if self.text_words else None

    @classmethod
    def from_item(cls, item: dict, patch_size: int, patch_keep: torch.Tensor | None = None,
                  token_keep: torch.Tensor | None = None) -> "Exemplar":
        """Store a dataset item (``image`` (3, H, W) uint8 pixels, normalised floats or a file to decode, as
        :func:`~emmcil.data.image_pixels` reads it; ``text_ids``/``text_masks`` (T,), ``label``, ...).

        patch_keep: (H//p, W//p) bool, the patches to keep (None: all); token_keep: (T,) bool, the tokens to keep
        among the valid ones (None: all valid tokens). Raises ValueError for an image that is not a multiple of the
        patch size, a grid too large for uint8 coordinates, or a patch_keep of another shape.
        """
        image = image_pixels(item["image"])
        p = patch_size
        _, H, W = image.shape
        if H % p or W % p:
            raise ValueError(f"image of size {H}x{W} is not a multiple of the patch size {p}")
        rows, cols = H // p, W // p
        if max(rows, cols) > torch.iinfo(COORD_DTYPE).max:
            raise ValueError(f"patch grid {rows}x{cols} does not fit {COORD_DTYPE} coordinates")
        keep = torch.ones(rows, cols, dtype=torch.bool) if patch_keep is None else patch_keep.bool().cpu()
        if keep.shape != (rows, cols):
            raise ValueError(f"patch_keep has shape {tuple(keep.shape)}, expected the grid {(rows, cols)}")
        patches = patchify(image, p)
        coords = keep.nonzero()  # (K, 2) row-major
        flat = coords[:, 0] * cols + coords[:, 1]
        valid = item["text_masks"].bool().cpu()
        full_tokens = int(valid.sum())
        return cls(pixels=patches[flat].contiguous(), coords=coords.to(COORD_DTYPE),
                   grid=torch.tensor([rows, cols], dtype=torch.int16),
                   text_words=count_words(item["text_ids"].cpu()[valid]),
                   full_nbytes=full_exemplar_nbytes(rows, cols, full_tokens, p), **cls.text_fields(item, token_keep))

    def replay_image(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept patches in place on a canvas (the other pixels are 0 and are dropped by patch_keep, never by
        their value; normalised to 0 with the batch), and the kept cells."""
        p = self.patch_size
        rows, cols = (int(v) for v in self.grid)
        coords = self.coords.long()
        keep = torch.zeros(rows, cols, dtype=torch.bool)
        keep[coords[:, 0], coords[:, 1]] = True
        canvas = torch.zeros(rows * cols, 3, p, p, dtype=torch.uint8)
        canvas[keep.flatten()] = self.pixels  # coords are row-major, as keep.flatten()
        return unpatchify(canvas, rows, cols), keep


@dataclass(kw_only=True)
class JpegExemplar(StoredExemplar):
    """A full exemplar whose image is stored JPEG-compressed (MRDC, Wang et al. ICLR'22).

    jpeg       uint8 (L,)   a JPEG file (quality ``quality``) of the sample's image as the model sees it, as MRDC
                            compresses its training images (``1_Data_Compression/skimage_save_jpeg.py``: read the
                            image, save it again at quality q); or, where that JPEG would be larger, the smaller
                            file the caller offers instead (``mrdc``: the image in the writers' ``--resize`` form)
    size       int16 (2,)   (H, W) the model sees the image at (the evaluation transform's resize): at replay the file
                            is decoded and resized to it when needed (``resize_uint8``, as ``PixelbertPixels``), so a
                            replayed exemplar goes through the same steps as a dataset item, from the compressed file
    full_nbytes  int        the image's *original* file's bytes (as found, before any ``--resize`` of the writers)
                            + the token bytes; the whole text is stored

    ``image_rate`` = JPEG bytes / original bytes, at most 1, is MRDC's compression rate (its ``imagenet_jpeg.sh``
    step 3 compares the compressed folder's size with the original's): ``token_share`` (the whole sample at that
    rate), ``byte_share`` the same with the text's bytes added on both sides. An exemplar never costs more than the
    sample in full: compressing is meant to save memory (MRDC's folders are JPEGs of the originals, where it cannot
    cost more).
    """

    kind: ClassVar[str] = "jpeg"
    jpeg: torch.Tensor
    size: torch.Tensor
    quality: int = 50
    patch_size: int = 32

    patch_share: ClassVar[float] = 1.0  # every patch, at full resolution (JPEG-degraded)

    @property
    def image_nbytes(self) -> int:
        return tensor_nbytes(self.jpeg)

    @property
    def num_patches(self) -> int:
        return (int(self.size[0]) // self.patch_size) * (int(self.size[1]) // self.patch_size)

    @property
    def original_nbytes(self) -> int:
        """Bytes of the image's original file (the reference of the rate)."""
        return self.full_nbytes - self.text_nbytes

    @property
    def image_rate(self) -> float:
        """MRDC's rate: the stored file's bytes over the original file's, at most 1."""
        return min(1.0, self.image_nbytes / self.original_nbytes)

    @property
    def token_share(self) -> float:
        """The sample at its image's rate (every token stored, the image's at MRDC's rate)."""
        return self.image_rate

    @property
    def byte_share(self) -> float:
        """(stored file + token bytes) / (original file + token bytes), at most 1."""
        return min(1.0, self.nbytes / self.full_nbytes)

    @classmethod
    def from_image(cls, item: dict, image: Image.Image, original_nbytes: int, patch_size: int,
                   quality: int, smaller: bytes | None = None) -> "JpegExemplar":
        """Compress ``image`` (the sample's image as the model sees it, any PIL mode) to a JPEG of ``quality``;
        ``item`` gives the tokens, the label and the size the model sees; ``original_nbytes``: the bytes of the
        image's original file (the reference of the rate); ``smaller``: a file of the same picture kept instead of a
        JPEG that would be larger. Raises ValueError for a quality outside [1, 100] or original_nbytes < 1."""
        if not 1 <= quality <= 100:
            raise ValueError(f"jpeg_quality={quality} must lie in [1, 100]")
        if original_nbytes < 1:
            raise ValueError(f"original_nbytes={original_nbytes}: the original image's size in bytes must be "
                             f"positive")
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=int(quality))
        stored = buf.getvalue()
        if smaller is not None and len(smaller) < len(stored):
            stored = smaller
        text = cls.text_fields(item)
        text_nbytes = tensor_nbytes(text["token_ids"], text["token_pos"])
        return cls(jpeg=torch.frombuffer(bytearray(stored), dtype=torch.uint8),
                   size=torch.tensor(item["image"].shape[-2:], dtype=torch.int16),
                   full_nbytes=int(original_nbytes) + text_nbytes, quality=int(quality), patch_size=patch_size,
                   **text)

    def image_uint8(self) -> torch.Tensor:
        """The decoded file (the JPEG, or the original kept) resized to ``size``: uint8 (3, H, W)."""
        H, W = (int(v) for v in self.size)
        pixels = pil_to_tensor(decode_image(self.jpeg.numpy().tobytes(), self.image_id))
        return pixels if tuple(pixels.shape[-2:]) == (H, W) else resize_uint8(pixels, (H, W))

    def replay_image(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded image, every patch kept."""
        H, W = (int(v) for v in self.size)
        return self.image_uint8(), torch.ones(H // self.patch_size, W // self.patch_size, dtype=torch.bool)


def cim_rate(foreground_share: float, compress_ratio: float) -> float:
    """CIM-CIL's ``compress_rate`` (``utils/transform.py::BbxBlur``): the foreground (its bounding box there) at full
    resolution, the rest at 1 / ``compress_ratio`` of its area: ``share + (1 - share) / compress_ratio``."""
    return foreground_share + (1.0 - foreground_share) / compress_ratio


@dataclass(kw_only=True)
class CimExemplar(StoredExemplar):
    """A full exemplar whose background is stored downsampled (CIM, Luo et al. CVPR'23; CIM-CIL's ``BbxBlur``).

    fg_pixels  uint8 (K, 3, p, p)       the foreground patches at full resolution (the patch-aligned bounding box of
                                        the thresholded CAM, or the thresholded patches themselves)
    fg_coords  uint8 (K, 2)             their (row, col) on the patch grid
    bg_pixels  uint8 (R*C - K, 3, q, q) every other patch resized with nearest neighbours to q = int(p / sqrt(r)) per
                                        side, r = ``compress_ratio`` an *area* ratio as in CIM-CIL, in row-major
                                        order of the cells not in fg_coords (no coordinates needed)
    grid       int16 (2,)               (rows, cols) of the image's patch grid
    full_nbytes  int                    bytes of the same sample as a full :class:`Exemplar`; the whole text is
                                        stored

    ``image_rate`` is CIM-CIL's ``compress_rate`` = foreground share + (1 - foreground share) / r (box patches +
    background patches / r, over all patches): a 25 % box at r = 4 gives 0.4375. ``token_share`` = image_rate (the
    sample at its image's rate, as CIM-CIL charges an exemplar); ``byte_share`` = (image_rate x the full image's
    bytes + token bytes) / full_nbytes.
    At replay (:meth:`replay_image`) the background patches are resized back with nearest neighbours and the
    foreground patches put in place; every patch is then fed to the model. When sqrt(r) divides p (r = 4: 32 -> 16
    px), the replayed image is exactly CIM-CIL's ``BbxBlur`` (the whole image resized down and up with
    ``Image.NEAREST``, the box pasted back) and ``nbytes`` is exactly the formula's share of the pixels (plus grid
    cells and tokens); for other ratios q truncates as CIM-CIL's sizes do, and the background is resized patch by
    patch.
    """

    kind: ClassVar[str] = "cim"
    fg_pixels: torch.Tensor
    fg_coords: torch.Tensor
    bg_pixels: torch.Tensor
    grid: torch.Tensor
    compress_ratio: float = 4.0

    @property
    def patch_size(self) -> int:
        return self.fg_pixels.shape[-1]

    @property
    def image_nbytes(self) -> int:
        return tensor_nbytes(self.fg_pixels, self.fg_coords, self.bg_pixels)

    @property
    def num_patches(self) -> int:
        """Image tokens at replay: every cell of the grid (the background restored)."""
        return int(self.grid[0]) * int(self.grid[1])

    @property
    def num_full_res_patches(self) -> int:
        return self.fg_pixels.shape[0]

    @property
    def patch_share(self) -> float:
        return self.num_full_res_patches / self.num_patches

    @property
    def image_rate(self) -> float:
        """CIM-CIL's compress_rate of the stored image (:func:`cim_rate`)."""
        return cim_rate(self.patch_share, self.compress_ratio)

    @property
    def token_share(self) -> float:
        """The sample at its image's rate (CIM-CIL's ``compress_rate``)."""
        return self.image_rate

    @property
    def byte_share(self) -> float:
        text = self.text_nbytes
        return (self.image_rate * (self.full_nbytes - text) + text) / self.full_nbytes

    @classmethod
    def from_item(cls, item: dict, patch_size: int, fg_keep: torch.Tensor, compress_ratio: float = 4.0
                  ) -> "CimExemplar":
        """Compress a dataset item; ``fg_keep`` (H//p, W//p) bool marks the foreground patches. Raises ValueError
        for a compress_ratio below 1 or a fg_keep of another shape."""
        if not compress_ratio >= 1.0:
            raise ValueError(f"cim_compress_ratio={compress_ratio} must be >= 1 (an area ratio)")
        p = patch_size
        full = Exemplar.from_item(item, p)  # all patches (row-major) and all valid tokens
        rows, cols = (int(v) for v in full.grid)
        keep = fg_keep.bool().cpu()
        if keep.shape != (rows, cols):
            raise ValueError(f"fg_keep has shape {tuple(keep.shape)}, expected the grid {(rows, cols)}")
        flat = keep.flatten()
        q = max(1, int(p / math.sqrt(compress_ratio)))
        shared = {f.name: getattr(full, f.name) for f in fields(StoredExemplar)}
        return cls(fg_pixels=full.pixels[flat].contiguous(), fg_coords=full.coords[flat].contiguous(),
                   bg_pixels=nearest_patches(full.pixels[~flat], q).contiguous(), grid=full.grid,
                   compress_ratio=float(compress_ratio), **shared)

    def image_uint8(self) -> torch.Tensor:
        """The replayed image, uint8 (3, rows*p, cols*p): the background patches resized back with nearest
        neighbours, the foreground patches at full resolution."""
        p = self.patch_size
        rows, cols = (int(v) for v in self.grid)
        fg = torch.zeros(rows * cols, dtype=torch.bool)
        coords = self.fg_coords.long()
        fg[coords[:, 0] * cols + coords[:, 1]] = True
        patches = torch.empty(rows * cols, 3, p, p, dtype=torch.uint8)
        patches[fg] = self.fg_pixels
        patches[~fg] = nearest_patches(self.bg_pixels, p)
        return unpatchify(patches, rows, cols)

    def replay_image(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The restored image, every patch kept."""
        rows, cols = (int(v) for v in self.grid)
        return self.image_uint8(), torch.ones(rows, cols, dtype=torch.bool)


EXEMPLAR_KINDS = {cls.kind: cls for cls in (Exemplar, JpegExemplar, CimExemplar)}


def exemplar_from_state(state: dict) -> StoredExemplar:
    """Rebuild an exemplar of any kind from its ``state_dict()`` (a state without ``kind``, as full and masked
    exemplars were saved before the kinds shared a base, is a patches exemplar). Raises ValueError for an unknown
    kind."""
    state = dict(state)
    kind = state.pop("kind", "patches")
    if kind not in EXEMPLAR_KINDS:
        raise ValueError(f"unknown exemplar kind {kind!r} in a memory checkpoint; known: {sorted(EXEMPLAR_KINDS)}")
    return EXEMPLAR_KINDS[kind](**state)
