#!/usr/bin/env bash
# Continual missing-modality learning (CMML, RebQ's protocol): fine-tuning, replay, exemplar masking and RebQ with
# modalities missing in training and test data alike, so the robustness of exemplar masking to missing modalities
# reads off one table. Default: RebQ's released setting, UPMC Food-101 in 10 phases, 70 % of the samples of every
# split missing a modality, for each missing type, plus the complete data as the reference.
#
#   setting (MISSING=)   named config       what misses
#   none                 (none)             nothing: the reference
#   both                 missing_both_70    35 % the text, 35 % the image (RebQ's scripts/food101_both_0.7.sh)
#   text                 missing_text_70    70 % the text  ("" -> [CLS] [SEP])
#   image                missing_image_70   70 % the image (a white image)
#   RATIO (default 0.7) sets missing_ratio for every setting but none.
#
#   method (METHODS=)    what it is
#   finetune             SSF, no memory (lower bound)
#   replay               SSF + herding, full exemplars, 5 per class
#   emm                  SSF + exemplar masking + multimodal augmentation (the paper's method)
#   rebq                 RebQ: frozen ViLT, memory/image/text prompt pools, reconstruction (its released
#                        hyperparameters: lr 1e-4, 10 epochs, batch 4; rebq_reinit=False as released)
#
# Runs are $LOG_DIR/table_cmml_<dataset>_L<L>_<setting>[_r<ratio>]_<method>_seed<s>; results.json of each holds our
# metrics and RebQ's (rebq_metrics: AP, forgetting, last); the report goes to $REPORT_DIR.
#
# Usage:   DATA_ROOT=data/arrow CKPT=checkpoints/vilt_200k_mlm_itm.ckpt GPUS=1 scripts/table_cmml.sh
#          DRY_RUN=1 SEEDS=0 scripts/table_cmml.sh      # resolve every config (run.py print_config), print commands
#          MISSING="both" METHODS="emm rebq" RATIO=0.5 scripts/table_cmml.sh
# Variables of this script (defaults in brackets):
#   METHODS  [finetune replay emm rebq]  named configs of methods
#   MISSING  [none both text image]      missing settings (see above)
#   RATIO    [0.7]                       missing_ratio
#   DATASET  [food101]                   food101 | mm_imagenet_r
#   PHASES   [10]                        L: phases_<L> named configs (RebQ: 10 tasks on Food-101)
# Variables shared by all scripts (DATA_ROOT [data/arrow], CKPT [checkpoints/vilt_200k_mlm_itm.ckpt], GPUS [1],
# PRECISION, SEEDS [0 1 2], LOG_DIR [runs], EXTRA, TAG, DRY_RUN [0], KEEP_GOING, REPORT, REPORT_DIR, VERBOSE,
# PYTHON): see scripts/common.sh.
set -euo pipefail

METHODS=${METHODS:-finetune replay emm rebq}
MISSING=${MISSING:-none both text image}
RATIO=${RATIO:-0.7}
DATASET=${DATASET:-food101}
PHASES=${PHASES:-10}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_data "$DATASET"
# the ratio in the run names only when it is not RebQ's 70 %
ratio_tag=""
[[ $RATIO == 0.7 ]] || ratio_tag="_r$RATIO"
for L in $PHASES; do
    for setting in $MISSING; do
        case $setting in
            none)            missing=() ; tag="" ;;
            both|text|image) missing=("missing_${setting}_70" "missing_ratio=$RATIO") ; tag=$ratio_tag ;;
            *) echo "error: MISSING=$setting: expected none, both, text or image" >&2; exit 1 ;;
        esac
        for method in $METHODS; do
            add_runs "table_cmml_${DATASET}_L${L}_${setting}${tag}_${method}" "$DATASET" "phases_$L" "$method" \
                "${missing[@]}"
        done
    done
done
run_all "table_cmml_*"
