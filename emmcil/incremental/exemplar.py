"""What a memory buffer stores per exemplar, counted in bytes (DESIGN §2 "storage unit").

An :class:`Exemplar` keeps exactly what is needed to replay a (possibly masked) image-text pair:

    pixels     uint8 (K, 3, p, p)   the kept image patches, raw pixel values
    coords     uint8 (K, 2)         (row, col) of each kept patch on the image's patch grid
    grid       int16 (2,)           (rows, cols) of the full image's grid
    token_ids  uint16 (M,)          the kept token ids ([CLS], words, [SEP])
    token_pos  uint16 (M,)          their positions in the original token sequence
    label, orig_label, index, image_id   bookkeeping (remapped class, dataset class, dataset row, name)

``nbytes`` counts pixels + coordinates + ids + positions, i.e. ``K * (3p² + 2) + 4M``. A full exemplar (every patch,
every valid token) is an Exemplar like any other and is counted the same way; the constant grid/label overhead is
not counted. A masked exemplar differs only in K and M, which is how exemplar masking fits more samples into the
same byte budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from emmcil.data.images import decode_image, image_size
from emmcil.data.tokenizer import PAD_ID
from emmcil.data.transforms import denormalize_to_uint8, normalize_uint8

COORD_DTYPE, TOKEN_DTYPE = torch.uint8, torch.uint16


def full_exemplar_nbytes(rows: int, cols: int, num_tokens: int, patch_size: int) -> int:
    """Bytes of a full exemplar of a ``rows x cols`` patch grid with ``num_tokens`` valid tokens."""
    patch = 3 * patch_size * patch_size + 2 * COORD_DTYPE.itemsize
    token = TOKEN_DTYPE.itemsize * 2  # id + position
    return rows * cols * patch + num_tokens * token


def place_tokens(token_ids: torch.Tensor, token_pos: torch.Tensor, max_text_len: int, image_id: str = ""):
    """Stored tokens back at their positions: text_ids (T,) with [PAD] elsewhere, text_masks (T,) 1 on them."""
    pos = token_pos.long()
    if len(pos) and int(pos.max()) >= max_text_len:
        raise ValueError(f"exemplar '{image_id}' keeps a token at position {int(pos.max())}, "
                         f"beyond max_text_len={max_text_len}")
    text_ids = torch.full((max_text_len,), PAD_ID, dtype=torch.long)
    text_masks = torch.zeros(max_text_len, dtype=torch.long)
    text_ids[pos] = token_ids.long()
    text_masks[pos] = 1
    return text_ids, text_masks


def patchify(image: torch.Tensor, p: int) -> torch.Tensor:
    """(C, rows*p, cols*p) -> (rows*cols, C, p, p), row-major like ViLT's patch order."""
    C, H, W = image.shape
    rows, cols = H // p, W // p
    return image.reshape(C, rows, p, cols, p).permute(1, 3, 0, 2, 4).reshape(rows * cols, C, p, p)


def unpatchify(patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(rows*cols, C, q, q) row-major -> (C, rows*q, cols*q), the inverse of :func:`patchify`."""
    C, q = patches.shape[1], patches.shape[-1]
    return patches.reshape(rows, cols, C, q, q).permute(2, 0, 3, 1, 4).reshape(C, rows * q, cols * q)


def tensor_nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def replay_item(exemplar, image: torch.Tensor, patch_keep: torch.Tensor, max_text_len: int) -> dict:
    """The dataset item format (plus ``patch_keep``) of any exemplar kind, from its replayed (normalised) image and
    its stored tokens (``token_ids``/``token_pos``) put back at their positions."""
    text_ids, text_masks = place_tokens(exemplar.token_ids, exemplar.token_pos, max_text_len, exemplar.image_id)
    return {"image": image, "patch_keep": patch_keep, "text_ids": text_ids, "text_masks": text_masks,
            "label": exemplar.label, "orig_label": exemplar.orig_label, "index": exemplar.index,
            "image_id": exemplar.image_id, "raw_text": "", "missing_type": 0}


@dataclass
class Exemplar:
    pixels: torch.Tensor
    coords: torch.Tensor
    grid: torch.Tensor
    token_ids: torch.Tensor
    token_pos: torch.Tensor
    label: int
    orig_label: int = -1
    index: int = -1
    image_id: str = ""

    @property
    def patch_size(self) -> int:
        return self.pixels.shape[-1]

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.pixels, self.coords, self.token_ids, self.token_pos)

    @property
    def num_patches(self) -> int:
        return self.pixels.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.token_ids.shape[0]

    @classmethod
    def from_item(cls, item: dict, patch_size: int, patch_keep: torch.Tensor | None = None,
                  token_keep: torch.Tensor | None = None) -> "Exemplar":
        """Store a dataset item (``image`` normalised (3, H, W), ``text_ids``/``text_masks`` (T,), ``label``, ...).

        patch_keep: (H//p, W//p) bool, the patches to keep (None: all); token_keep: (T,) bool, the tokens to keep
        among the valid ones (None: all valid tokens).
        """
        image = item["image"]
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
        patches = patchify(denormalize_to_uint8(image.detach().cpu().float()), p)
        coords = keep.nonzero()  # (K, 2) row-major
        flat = coords[:, 0] * cols + coords[:, 1]

        valid = item["text_masks"].bool().cpu()
        if token_keep is not None:
            valid = valid & token_keep.bool().cpu()
        pos = valid.nonzero()[:, 0]
        ids = item["text_ids"].cpu()[pos]
        return cls(pixels=patches[flat].contiguous(), coords=coords.to(COORD_DTYPE),
                   grid=torch.tensor([rows, cols], dtype=torch.int16),
                   token_ids=ids.to(TOKEN_DTYPE), token_pos=pos.to(TOKEN_DTYPE), label=int(item["label"]),
                   orig_label=int(item.get("orig_label", item["label"])), index=int(item.get("index", -1)),
                   image_id=str(item.get("image_id", "")))

    def to_item(self, max_text_len: int) -> dict:
        """A model input in the dataset's item format, plus ``patch_keep``.

        image (3, rows*p, cols*p): the kept patches in place on a canvas (the other pixels are 0 and are dropped by
        patch_keep, never by their value); patch_keep (rows, cols) bool; text_ids / text_masks (max_text_len,):
        kept tokens at their original positions, [PAD] and mask 0 elsewhere.
        """
        p = self.patch_size
        rows, cols = (int(v) for v in self.grid)
        coords = self.coords.long()
        keep = torch.zeros(rows, cols, dtype=torch.bool)
        keep[coords[:, 0], coords[:, 1]] = True
        canvas = torch.zeros(rows * cols, 3, p, p)
        canvas[keep.flatten()] = normalize_uint8(self.pixels)  # coords are row-major, as keep.flatten()
        return replay_item(self, unpatchify(canvas, rows, cols), keep, max_text_len)

    def state_dict(self) -> dict:
        return {"pixels": self.pixels, "coords": self.coords, "grid": self.grid, "token_ids": self.token_ids,
                "token_pos": self.token_pos, "label": self.label, "orig_label": self.orig_label,
                "index": self.index, "image_id": self.image_id}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Exemplar":
        return cls(**state)


@dataclass
class JpegExemplar:
    """A full exemplar whose image is stored JPEG-compressed (MRDC, Wang et al. ICLR'22).

    jpeg: uint8 (L,) the JPEG file of the image as the model sees it (after the pixelbert resize); its bytes count
    in ``nbytes`` with the token ids and positions, against the same byte budget as :class:`Exemplar`.
    """

    jpeg: torch.Tensor
    token_ids: torch.Tensor
    token_pos: torch.Tensor
    label: int
    orig_label: int = -1
    index: int = -1
    image_id: str = ""
    patch_size: int = 32

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.jpeg, self.token_ids, self.token_pos)

    @property
    def num_tokens(self) -> int:
        return self.token_ids.shape[0]

    @property
    def num_patches(self) -> int:
        W, H = image_size(self.jpeg.numpy().tobytes(), self.image_id)  # the header only: no decoding
        return (H // self.patch_size) * (W // self.patch_size)

    @classmethod
    def from_item(cls, item: dict, patch_size: int, quality: int) -> "JpegExemplar":
        import io

        from PIL import Image

        if not 1 <= quality <= 100:
            raise ValueError(f"jpeg_quality={quality} must lie in [1, 100]")
        full = Exemplar.from_item(item, patch_size)  # the tokens, stored as for any exemplar
        pixels = denormalize_to_uint8(item["image"].detach().cpu().float()).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=int(quality))
        jpeg = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        return cls(jpeg=jpeg, token_ids=full.token_ids, token_pos=full.token_pos, label=full.label,
                   orig_label=full.orig_label, index=full.index, image_id=full.image_id, patch_size=patch_size)

    def _decode(self) -> torch.Tensor:
        import numpy as np

        image = decode_image(self.jpeg.numpy().tobytes(), self.image_id)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)

    def to_item(self, max_text_len: int) -> dict:
        """The decoded image (all patches kept) and the stored text, in the replay item format."""
        image = normalize_uint8(self._decode())
        rows, cols = image.shape[-2] // self.patch_size, image.shape[-1] // self.patch_size
        return replay_item(self, image, torch.ones(rows, cols, dtype=torch.bool), max_text_len)

    def state_dict(self) -> dict:
        return {"kind": "jpeg", "jpeg": self.jpeg, "token_ids": self.token_ids, "token_pos": self.token_pos,
                "label": self.label, "orig_label": self.orig_label, "index": self.index, "image_id": self.image_id,
                "patch_size": self.patch_size}


EXEMPLAR_KINDS = {"patches": Exemplar, "jpeg": JpegExemplar}


def exemplar_from_state(state: dict):
    """Rebuild an exemplar of any kind from its ``state_dict()`` (the kind defaults to patches)."""
    state = dict(state)
    kind = state.pop("kind", "patches")
    if kind not in EXEMPLAR_KINDS:
        raise ValueError(f"unknown exemplar kind {kind!r} in a memory checkpoint; known: {sorted(EXEMPLAR_KINDS)}")
    return EXEMPLAR_KINDS[kind](**state)


@dataclass
class CimExemplar:
    """A full exemplar whose non-discriminative patches are stored downsampled (CIM, Luo et al. CVPR'23).

    fg_pixels  uint8 (K, 3, p, p)      the discriminative patches at full resolution
    fg_coords  uint8 (K, 2)            their (row, col) on the patch grid
    bg_pixels  uint8 (R*C - K, 3, q, q) every other patch, area-downsampled by ``downsample`` per side
                                       (q = p / downsample), in row-major order of the cells not in fg_coords
    grid       int16 (2,)              (rows, cols) of the image's patch grid
    token_ids, token_pos  uint16 (M,)  the whole text, as :class:`Exemplar` stores it

    ``nbytes`` = ``K (3p² + 2) + (R*C - K) 3q² + 4M``: full-resolution foreground patches with their coordinates,
    the downsampled background (its cells follow from the foreground's, so no coordinates) and the tokens, in the
    same bytes as :class:`Exemplar`, against the same budget. At replay (:meth:`to_item`) the low-resolution image
    (background patches plus the downsampled foreground) is upsampled bilinearly to full size and the full-resolution
    foreground patches are pasted back; every patch is then fed to the model.
    """

    fg_pixels: torch.Tensor
    fg_coords: torch.Tensor
    bg_pixels: torch.Tensor
    grid: torch.Tensor
    token_ids: torch.Tensor
    token_pos: torch.Tensor
    label: int
    orig_label: int = -1
    index: int = -1
    image_id: str = ""
    downsample: int = 4

    @property
    def patch_size(self) -> int:
        return self.fg_pixels.shape[-1]

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.fg_pixels, self.fg_coords, self.bg_pixels, self.token_ids, self.token_pos)

    @property
    def num_patches(self) -> int:
        """Image tokens at replay: every cell of the grid (the background upsampled)."""
        return int(self.grid[0]) * int(self.grid[1])

    @property
    def num_full_res_patches(self) -> int:
        return self.fg_pixels.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.token_ids.shape[0]

    @classmethod
    def from_item(cls, item: dict, patch_size: int, fg_keep: torch.Tensor, downsample: int = 4) -> "CimExemplar":
        """Compress a dataset item; ``fg_keep`` (H//p, W//p) bool marks the discriminative patches."""
        import torch.nn.functional as F

        p, r = patch_size, int(downsample)
        if r < 1 or p % r:
            raise ValueError(f"cim downsample={r} must be a positive divisor of the patch size {p}")
        full = Exemplar.from_item(item, p)  # all patches (row-major) and all valid tokens
        rows, cols = (int(v) for v in full.grid)
        keep = fg_keep.bool().cpu()
        if keep.shape != (rows, cols):
            raise ValueError(f"fg_keep has shape {tuple(keep.shape)}, expected the grid {(rows, cols)}")
        flat = keep.flatten()
        low = F.avg_pool2d(full.pixels[~flat].float(), r).round().clamp(0, 255).to(torch.uint8)
        return cls(fg_pixels=full.pixels[flat].contiguous(), fg_coords=full.coords[flat].contiguous(),
                   bg_pixels=low.contiguous(), grid=full.grid, token_ids=full.token_ids, token_pos=full.token_pos,
                   label=full.label, orig_label=full.orig_label, index=full.index, image_id=full.image_id,
                   downsample=r)

    def image_uint8(self) -> torch.Tensor:
        """The replayed image, float (3, rows*p, cols*p) on the uint8 scale: the upsampled low-resolution image with
        the foreground patches pasted back at full resolution."""
        import torch.nn.functional as F

        p, r = self.patch_size, self.downsample
        q = p // r
        rows, cols = (int(v) for v in self.grid)
        fg = torch.zeros(rows * cols, dtype=torch.bool)
        coords = self.fg_coords.long()
        fg[coords[:, 0] * cols + coords[:, 1]] = True
        low = torch.zeros(rows * cols, 3, q, q)
        low[~fg] = self.bg_pixels.float()
        if len(coords):
            low[fg] = F.avg_pool2d(self.fg_pixels.float(), r)
        image = F.interpolate(unpatchify(low, rows, cols)[None], scale_factor=r, mode="bilinear",
                              align_corners=False)[0]
        patches = patchify(image, p).clone()
        patches[fg] = self.fg_pixels.float()
        return unpatchify(patches, rows, cols)

    def to_item(self, max_text_len: int) -> dict:
        """The restored image (every patch kept) and the stored text, in the replay item format."""
        image = normalize_uint8(self.image_uint8().round().clamp(0, 255))
        rows, cols = (int(v) for v in self.grid)
        return replay_item(self, image, torch.ones(rows, cols, dtype=torch.bool), max_text_len)

    def state_dict(self) -> dict:
        return {"kind": "cim", "fg_pixels": self.fg_pixels, "fg_coords": self.fg_coords, "bg_pixels": self.bg_pixels,
                "grid": self.grid, "token_ids": self.token_ids, "token_pos": self.token_pos, "label": self.label,
                "orig_label": self.orig_label, "index": self.index, "image_id": self.image_id,
                "downsample": self.downsample}


EXEMPLAR_KINDS["cim"] = CimExemplar
