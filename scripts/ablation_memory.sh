#!/usr/bin/env bash
# The paper's memory-size ablation ("Ablation study on memory buffer size"; MM-ImageNet-R, L = 10): memory of
# 1, 3, 5, 7 and 10 full exemplars per class (memory_per_class=, in the default memory_unit=tokens: a full
# exemplar costs 1.0, a masked one its stored tokens over the sample's, a compressed one its reference's rate; every
# run's results.json also gives its memory in the other units) for conventional replay ("SSF"),
# SSF + CIM (`cim`), exemplar masking ("SSF + Ours", `emm`) and SSF + MRDC (`mrdc`, not in the paper's plot), one run
# per seed. The report draws the plot: exemplars stored per class (bars) and accuracy (lines) against the memory
# size, with the paper's digitised curves dashed beside ours.
#
# Runs are $LOG_DIR/abl_mem_<dataset>_L<L>_<method>_m<m>_seed<s>, with exp_tag=abl_mem, so they never share a run
# directory (or a report group) with the main table's runs, even at m = 5.
#
# Usage:   DATA_ROOT=data/arrow CKPT=checkpoints/vilt_200k_mlm_itm.ckpt GPUS=4 scripts/ablation_memory.sh
#          DRY_RUN=1 SEEDS=0 MEMORY_SIZES="1 5" scripts/ablation_memory.sh
# Variables shared by all scripts (DATA_ROOT, CKPT, GPUS, PRECISION, SEEDS, LOG_DIR, EXTRA, TAG, DRY_RUN,
# KEEP_GOING, REPORT, REPORT_DIR, VERBOSE, PYTHON): see scripts/common.sh.
set -euo pipefail

METHODS=${METHODS:-replay mrdc cim emm}   # methods with a memory (named configs of config.py)
MEMORY_SIZES=${MEMORY_SIZES:-1 3 5 7 10}  # memory_per_class: budget per class in full exemplars
DATASET=${DATASET:-mm_imagenet_r}         # the paper's plot: MM-ImageNet-R
PHASES=${PHASES:-10}                      # the paper's plot: L = 10

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_data "$DATASET"
for L in $PHASES; do
    for method in $METHODS; do
        for m in $MEMORY_SIZES; do
            add_runs "abl_mem_${DATASET}_L${L}_${method}_m${m}" "$DATASET" "phases_$L" "$method" \
                "memory_per_class=$m" exp_tag=abl_mem
        done
    done
done
run_all "abl_mem_${DATASET}_*"
