#!/usr/bin/env bash
# ImageNet-R -> InstructBLIP captions -> mm_imagenet_r_{train,test}.arrow (MM-ImageNet-R).
#
# Get these yourself (nothing is downloaded here):
#   * ImageNet-R (Hendrycks et al., https://github.com/hendrycks/imagenet-r): imagenet-r.tar (30,000
#     images of 200 classes, imagenet-r/<wnid>/<file>.jpg), put at $TAR (or already unpacked at $IMAGES).
#   * an InstructBLIP checkpoint in Hugging Face save_pretrained layout, at $INSTRUCTBLIP, e.g.
#     Salesforce/instructblip-vicuna-7b (`huggingface-cli download Salesforce/instructblip-vicuna-7b
#     --local-dir "$INSTRUCTBLIP"`). The paper does not name its variant, prompt or decoding; see
#     `python -m emmcil.data.captions --help` for the defaults used here.
#
# Steps (STEPS, comma-separated, default all three):
#   extract   unpack $TAR into $IMAGES (skipped when $IMAGES already holds files)
#   captions  caption every image with InstructBLIP into $CAPTIONS (JSONL, {"path": "<wnid>/<file>", "caption"}).
#             Resumable: re-running continues where it stopped (captioned paths are skipped). Needs a GPU in
#             practice: ~30k images x up to MAX_NEW_TOKENS tokens of a 7B model with NUM_BEAMS beams.
#   arrow     python -m emmcil.data.write_imagenet_r: per class, round(TEST_FRACTION * n) images drawn with SEED
#             go to test (about 24,000 / 6,000). RESIZE=384 stores the images already resized as ViLT-B/32's
#             transform resizes them (a faster loader; emmcil/data/resize.py).
#
# Out: $CAPTIONS, and in $OUT mm_imagenet_r_train.arrow, mm_imagenet_r_test.arrow, mm_imagenet_r_classes.json
# (the 200 class names in label order), mm_imagenet_r_write.json (the write the files belong to), with SKIP_BAD=1
# also mm_imagenet_r_skipped.json.
# Exit status 75: a step was stopped by SIGTERM / SIGINT (captions written so far are kept, the arrow folder is as it
# was); running the script again continues.
#
# Usage:   TAR=~/Downloads/imagenet-r.tar INSTRUCTBLIP=/models/instructblip-vicuna-7b scripts/prepare_mm_imagenet_r.sh
#          STEPS=arrow SEED=1 scripts/prepare_mm_imagenet_r.sh    # re-split existing captions with another seed
#          DRY_RUN=1 scripts/prepare_mm_imagenet_r.sh             # print the commands, run nothing
set -euo pipefail

TAR=${TAR:-data/raw/imagenet-r.tar}                              # the ImageNet-R archive
IMAGES=${IMAGES:-data/raw/imagenet-r}                            # unpacked: one folder per wnid
CAPTIONS=${CAPTIONS:-data/raw/mm_imagenet_r_captions.jsonl}      # InstructBLIP captions (appended to, resumable)
INSTRUCTBLIP=${INSTRUCTBLIP:-data/models/instructblip-vicuna-7b} # local InstructBLIP directory (download it yourself)
OUT=${OUT:-data/arrow}                                           # where the .arrow files go
SEED=${SEED:-0}                                                  # seed of the per-class train/test split
TEST_FRACTION=${TEST_FRACTION:-0.2}                              # share of each class that goes to test
DEVICE=${DEVICE:-}                                               # captioning device (empty: cuda if available)
DTYPE=${DTYPE-float16}                                           # captioning dtype (empty: the checkpoint's, e.g. on CPU)
BATCH_SIZE=${BATCH_SIZE:-8}                                      # captioning batch
NUM_BEAMS=${NUM_BEAMS:-5}                                        # captioning beams
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-256}                            # captioning length cap
PROMPT=${PROMPT:-}                                               # captioning prompt (empty: the module's default)
SKIP_BAD=${SKIP_BAD:-0}                                          # 1: skip (count, list) bad images instead of stopping
RESIZE=${RESIZE:-}                                               # e.g. 384: store images resized for the transform
STEPS=${STEPS:-extract,captions,arrow}                           # which steps to run
PYTHON=${PYTHON:-python}                                         # the interpreter that has emmcil's requirements
DRY_RUN=${DRY_RUN:-0}                                            # 1: print the commands instead of running them

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # emmcil importable without `pip install -e .`

run() {  # print a command (shell-quoted) and, unless DRY_RUN=1, run it
    if [[ $DRY_RUN == 1 ]]; then
        printf '%q ' "$@" | sed 's/ $//'; echo
    else
        printf '+ %s\n' "$(printf '%q ' "$@")" >&2
        "$@"
    fi
}
fail() {  # an error, or in a dry run only a note
    if [[ $DRY_RUN == 1 ]]; then echo "# note: $*" >&2; else echo "error: $*" >&2; exit 1; fi
}
step() { [[ ,$STEPS, == *,$1,* ]]; }

for s in ${STEPS//,/ }; do
    case $s in extract|captions|arrow) ;; *) echo "error: unknown step '$s' in STEPS=$STEPS" >&2; exit 2 ;; esac
done
skip=()
if [[ $SKIP_BAD == 1 ]]; then skip=(--skip-bad); fi
resize=()
if [[ -n $RESIZE ]]; then resize=(--resize "$RESIZE"); fi

if step extract; then
    if [[ -d $IMAGES ]] && [[ -n $(ls -A "$IMAGES") ]]; then
        echo "# $IMAGES already holds files: not extracting $TAR" >&2
    else
        [[ -f $TAR ]] || fail "TAR=$TAR not found: get imagenet-r.tar from https://github.com/hendrycks/imagenet-r"
        run mkdir -p "$IMAGES"
        run tar -xf "$TAR" -C "$IMAGES" --strip-components=1   # the archive holds imagenet-r/<wnid>/...
    fi
fi

if step captions; then
    [[ -d $INSTRUCTBLIP ]] || fail "INSTRUCTBLIP=$INSTRUCTBLIP is not a directory: download an InstructBLIP" \
        "checkpoint yourself, e.g. Salesforce/instructblip-vicuna-7b (see the top of $0)"
    args=(--images "$IMAGES" --model "$INSTRUCTBLIP" --out "$CAPTIONS" --batch-size "$BATCH_SIZE"
          --num-beams "$NUM_BEAMS" --max-new-tokens "$MAX_NEW_TOKENS")
    if [[ -n $DEVICE ]]; then args+=(--device "$DEVICE"); fi
    if [[ -n $DTYPE ]]; then args+=(--dtype "$DTYPE"); fi
    if [[ -n $PROMPT ]]; then args+=(--prompt "$PROMPT"); fi
    run "$PYTHON" -m emmcil.data.captions "${args[@]}" "${skip[@]}"
fi

if step arrow; then
    status=0
    run "$PYTHON" -m emmcil.data.write_imagenet_r --root "$IMAGES" --captions "$CAPTIONS" --out "$OUT" \
        --seed "$SEED" --test-fraction "$TEST_FRACTION" "${skip[@]}" "${resize[@]}" || status=$?
    if (( status == 75 )); then exit 75; fi  # stopped by a signal (nothing written): run the script again
    if (( status != 0 )); then
        [[ $SKIP_BAD == 1 ]] || echo "hint: SKIP_BAD=1 skips bad samples and lists them in" \
            "$OUT/mm_imagenet_r_skipped.json" >&2
        exit 1
    fi
    if [[ $DRY_RUN != 1 ]]; then
        ls -l "$OUT"/mm_imagenet_r_*.arrow "$OUT/mm_imagenet_r_classes.json"
    fi
fi
