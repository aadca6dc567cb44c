"""MM-ImageNet-R (ImageNet-R images + InstructBLIP captions) -> ``mm_imagenet_r_{train,test}.arrow``.

    python -m emmcil.data.write_imagenet_r --root IMAGENET_R --captions captions.jsonl --out DIR --seed 0
        [--test-fraction 0.2] [--skip-bad] [--resize [384]] [--allow-incomplete-classes]

``IMAGENET_R/<wnid>/<file>.jpg`` (the 200 wnids of ``imagenet_r_classes``; label = position of the wnid in that
sorted table, whichever subset of folders is present). Captions: JSONL keyed by relative path,
``{"path": "n01443537/art_0.jpg", "caption": "..."}``, as written by ``python -m emmcil.data.captions``.
Split: per class, ``round(0.2 n)`` images drawn with ``--seed`` go to test (about 24,000 / 6,000 on the full set);
a class left without a train or test sample is an error (``--allow-incomplete-classes``: listed, written anyway).
"""
from __future__ import annotations

from pathlib import Path

from .imagenet_r_classes import IMAGENET_R_CLASSES, WNID_TO_LABEL
from .write_folder import folder_samples
from .resize import StoredResize
from .writing import base_parser, check_fractions, cli_errors, read_captions, resize_option, write_splits

NAME = "mm_imagenet_r"


def write_imagenet_r(root, captions, out, *, seed: int = 0, test_fraction: float = 0.2, name: str = NAME,
                     skip_bad: bool = False, resize: StoredResize | None = None,
                     allow_incomplete_classes: bool = False) -> dict[str, Path]:
    """Write ``{name}_train.arrow`` and ``{name}_test.arrow``; returns {split: path}. A folder that is not one of
    the 200 ImageNet-R wnids is a bad sample (unknown_class) for each of its images. ``resize``: store the images
    resized for the pixelbert transform (``emmcil.data.resize``). ValueError for a ``test_fraction`` outside [0, 1)
    and for classes left without a train or test sample (unless ``allow_incomplete_classes``)."""
    check_fractions({"--test-fraction": test_fraction})
    root = Path(root)
    splits = folder_samples(root, read_captions(captions), WNID_TO_LABEL, captions_file=str(captions),
                            fractions={"test": test_fraction}, seed=seed)
    print(f"{len({s.class_name for v in splits.values() for s in v})} class folders, "
          + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return write_splits(splits, out, name, IMAGENET_R_CLASSES, skip_bad, resize,
                        required=("train", "test") if test_fraction > 0 else ("train",),
                        allow_incomplete_classes=allow_incomplete_classes, empty_classes="note")


def main(argv=None, prog="python -m emmcil.data.write_imagenet_r"):
    p = base_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--root", required=True, help="the imagenet-r folder (one sub-folder per wnid)")
    p.add_argument("--captions", required=True, help="JSONL of captions keyed by relative image path")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-class train/test split")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--name", default=NAME)
    args = p.parse_args(argv)
    cli_errors(lambda a: write_imagenet_r(a.root, a.captions, a.out, seed=a.seed, test_fraction=a.test_fraction,
                                          name=a.name, skip_bad=a.skip_bad, resize=resize_option(a),
                                          allow_incomplete_classes=a.allow_incomplete_classes), args)


if __name__ == "__main__":
    main()
