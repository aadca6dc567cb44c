#!/usr/bin/env bash
# Ablation of exemplar masking's thresholds: tau_I (tau_image: which image patches an exemplar keeps, by A_{CLS->I})
# and tau_T (tau_text: which words it keeps, by the attention of the discarded patches to the text), every pair of
# the two grids, for `emm` on MM-ImageNet-R, L = 10. With the default mask_norm=ratio, tau keeps the top 1 - tau of
# the patches (words): the grid 0.64 / 0.74 / 0.84 keeps 36 / 26 / 16 % of the patches around our default 0.74,
# which is calibrated to the paper's Fig. 4 (22-30 %); tau_T 0.3 / 0.5 / 0.7 keeps 70 / 50 / 30 % of the words. The
# paper's values and ablation could not be read (docs/reproduction.md). A higher tau keeps fewer tokens,
# so more (smaller) exemplars fit the same budget: the report's memory columns show how many. For min-max
# thresholds, EXTRA="mask_norm=minmax" TAG=minmax with grids in [0, 1].
#
# Runs are $LOG_DIR/abl_tau_<dataset>_L<L>_emm_tauI<tI>_tauT<tT>_seed<s>, with exp_tag=abl_tau.
#
# Usage:   DATA_ROOT=data/arrow CKPT=checkpoints/vilt_200k_mlm_itm.ckpt GPUS=4 scripts/ablation_thresholds.sh
#          DRY_RUN=1 SEEDS=0 TAU_IMAGE="0.64 0.74" TAU_TEXT=0.5 scripts/ablation_thresholds.sh
# Variables shared by all scripts (DATA_ROOT, CKPT, GPUS, PRECISION, SEEDS, LOG_DIR, EXTRA, TAG, DRY_RUN,
# KEEP_GOING, REPORT, REPORT_DIR, VERBOSE, PYTHON): see scripts/common.sh.
set -euo pipefail

TAU_IMAGE=${TAU_IMAGE:-0.64 0.74 0.84}   # tau_I grid, in [0, 1] (0 keeps every patch)
TAU_TEXT=${TAU_TEXT:-0.3 0.5 0.7}     # tau_T grid, in [0, 1] (0 keeps every word)
METHOD=${METHOD:-emm}                 # a method with tau_image / tau_text (emm, or an ablation of it: emm_no_aug)
DATASET=${DATASET:-mm_imagenet_r}
PHASES=${PHASES:-10}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_data "$DATASET"
for L in $PHASES; do
    for ti in $TAU_IMAGE; do
        for tt in $TAU_TEXT; do
            add_runs "abl_tau_${DATASET}_L${L}_${METHOD}_tauI${ti}_tauT${tt}" "$DATASET" "phases_$L" "$METHOD" \
                "tau_image=$ti" "tau_text=$tt" exp_tag=abl_tau
        done
    done
done
run_all "abl_tau_${DATASET}_*"
