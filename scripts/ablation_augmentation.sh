#!/usr/bin/env bash
# Ablation of the multimodal data augmentation: exemplar masking with it (`emm`: per replayed exemplar, with
# p = 0.5 its masked text is swapped with a same-class exemplar's, with p = 0.5 a same-class exemplar's kept
# patches are merged into it) and without it (`emm_no_aug`), on MM-ImageNet-R, L = 10. The paper's recipe and
# numbers for this ablation could not be read: the augmentation is our reconstruction (docs/method.md, its first table).
#
# Runs are $LOG_DIR/abl_aug_<dataset>_L<L>_<variant>_seed<s>, with exp_tag=abl_aug (both variants: the report
# tells them apart by aug_text_swap / aug_patch_merge).
#
# Usage:   DATA_ROOT=data/arrow CKPT=checkpoints/vilt_200k_mlm_itm.ckpt GPUS=4 scripts/ablation_augmentation.sh
#          DRY_RUN=1 SEEDS=0 scripts/ablation_augmentation.sh
# Variables shared by all scripts (DATA_ROOT, CKPT, GPUS, PRECISION, SEEDS, LOG_DIR, EXTRA, TAG, DRY_RUN,
# KEEP_GOING, REPORT, REPORT_DIR, VERBOSE, PYTHON): see scripts/common.sh.
set -euo pipefail

VARIANTS=${VARIANTS:-emm emm_no_aug}   # named configs compared (config.py)
DATASET=${DATASET:-mm_imagenet_r}
PHASES=${PHASES:-10}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_data "$DATASET"
for L in $PHASES; do
    for variant in $VARIANTS; do
        add_runs "abl_aug_${DATASET}_L${L}_${variant}" "$DATASET" "phases_$L" "$variant" exp_tag=abl_aug
    done
done
run_all "abl_aug_${DATASET}_*"
