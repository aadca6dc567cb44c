#!/usr/bin/env bash
# The main table on UPMC Food-101: every method at L = 5, 10 and 20 phases, one run per seed. The paper reports
# Food-101 results too, but their numbers could not be read (docs/reproduction.md), so the report shows ours only.
#
#   paper row        here (method=)   what it is
#   SSF              replay           SSF + conventional replay: herding, full exemplars, 5 per class
#   SSF + MRDC       mrdc             SSF + full exemplars stored as JPEG (quality 50), each costing its JPEG's share
#   SSF + Ours       emm              SSF + exemplar masking + multimodal augmentation (the paper's method)
#   (lower bound)    finetune         SSF, no memory
#   (upper bound)    joint            SSF trained on all data seen so far
#   SSF + CIM        cim              SSF + CIM-compressed exemplars (CAM box full-size, rest at 1/4 of its area)
#   L2P              l2p              prompt pool with key-query selection, frozen ViLT, no exemplars
#   DualPrompt       dualprompt       general + per-task expert prefix prompts, frozen ViLT, no exemplars
#   EASE             ease             one adapter subspace per phase, prototype classifier, no exemplars
#
# Runs are $LOG_DIR/table_food101_L<L>_<method>_seed<s>; the report (table, accuracy-per-phase
# figure) goes to $REPORT_DIR. Compute: see docs/reproduction.md, "Expected compute".
#
# Usage:   DATA_ROOT=data/arrow CKPT=checkpoints/vilt_200k_mlm_itm.ckpt GPUS=4 scripts/table_food101.sh
#          DRY_RUN=1 SEEDS=0 scripts/table_food101.sh     # resolve every config, print the commands
#          METHODS="replay emm" PHASES=10 EXTRA="per_gpu_batchsize=64" scripts/table_food101.sh
# Variables shared by all scripts (DATA_ROOT, CKPT, GPUS, PRECISION, SEEDS, LOG_DIR, EXTRA, TAG, DRY_RUN,
# KEEP_GOING, REPORT, REPORT_DIR, VERBOSE, PYTHON): see scripts/common.sh.
set -euo pipefail

METHODS=${METHODS:-finetune joint l2p dualprompt ease replay mrdc cim emm}   # named configs of methods (config.py); one word per method
PHASES=${PHASES:-5 10 20}                            # L: phases_<L> named configs
DATASET=food101

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_table "$DATASET"
