#!/usr/bin/env bash
# Raw UPMC Food-101 -> food101_{train,val,test}.arrow (python -m emmcil.data.write_food101).
#
# Get the data yourself (nothing is downloaded here):
#   * UPMC Food-101 (images + web-page titles), from the authors' page http://visiir.isir.upmc.fr/ (Kaggle mirror:
#     gianmarco96/upmcfood101). Unpacked, it gives
#         $RAW/images/{train,test}/<class>/<class>_<k>.jpg   and   $RAW/texts/{train,test}_titles.csv
#   * for the paper's split (61,142 / 6,846 / 22,716), the json files of missing_aware_prompts
#     (https://github.com/YiLunLee/missing_aware_prompts, datasets/Food101/ and DATA.md): class_idx.json,
#     text.json, split.json, put next to images/ in $RAW. Without them the CSV titles are used and val is carved
#     from train (10 % per class, seeded with SEED), which is NOT the paper's val set.
#
# Out, in $OUT: food101_train.arrow, food101_val.arrow, food101_test.arrow (columns image, text, label, image_id,
# split), food101_classes.json (class names in label order), food101_write.json (the write the files belong to:
# readers refuse a folder a stopped write left mixed), and with SKIP_BAD=1 food101_skipped.json (every
# skipped sample and why). The arrow files hold the JPEG bytes as found on disk (about the size of images/), or
# with RESIZE=384 the images already resized as ViLT-B/32's transform resizes them (a faster loader; see
# emmcil/data/resize.py); the writer decodes every image once, so expect minutes to an hour for the ~90k images.
#
# Usage:   RAW=/data/food101 OUT=data/arrow scripts/prepare_food101.sh
#          DRY_RUN=1 scripts/prepare_food101.sh          # print the commands, run nothing
set -euo pipefail

RAW=${RAW:-data/raw/food101}        # the unpacked UPMC Food-101 folder (images/, texts/, optional json files)
OUT=${OUT:-data/arrow}              # where the .arrow files go
LAYOUT=${LAYOUT:-auto}              # auto | json | csv (auto: json when split.json + text.json are in $RAW)
SEED=${SEED:-0}                     # csv layout only: seed of the val split carved from train
VAL_FRACTION=${VAL_FRACTION:-0.1}   # csv layout only: share of each class that goes to val
SKIP_BAD=${SKIP_BAD:-0}             # 1: skip (count, list) bad samples instead of stopping at the first one
RESIZE=${RESIZE:-}                  # e.g. 384: store images resized for pixelbert_transform(384, 32) (--resize)
NAME=${NAME:-food101}               # file prefix: $OUT/${NAME}_{split}.arrow
PYTHON=${PYTHON:-python}            # the interpreter that has emmcil's requirements
DRY_RUN=${DRY_RUN:-0}               # 1: print the commands instead of running them

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

if [[ ! -d $RAW ]]; then
    msg="raw UPMC Food-101 not found at RAW=$RAW (see the top of $0 for where to get it)"
    if [[ $DRY_RUN == 1 ]]; then echo "# note: $msg" >&2; else echo "error: $msg" >&2; exit 1; fi
fi

args=(--root "$RAW" --out "$OUT" --name "$NAME" --layout "$LAYOUT" --seed "$SEED" --val-fraction "$VAL_FRACTION")
if [[ $SKIP_BAD == 1 ]]; then args+=(--skip-bad); fi
if [[ -n $RESIZE ]]; then args+=(--resize "$RESIZE"); fi

status=0
run "$PYTHON" -m emmcil.data.write_food101 "${args[@]}" || status=$?
if (( status == 75 )); then exit 75; fi  # stopped by a signal (nothing written): run the script again
if (( status != 0 )); then
    [[ $SKIP_BAD == 1 ]] || echo "hint: SKIP_BAD=1 skips bad samples and lists them in $OUT/${NAME}_skipped.json" >&2
    exit 1
fi
if [[ $DRY_RUN != 1 ]]; then
    ls -l "$OUT/${NAME}"_*.arrow "$OUT/${NAME}_classes.json"
fi
