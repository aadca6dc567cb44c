#!/usr/bin/env bash
# The demo figures (docs/reproduction.md, "Demo figures"), from the embedded demo set (10 synthetic classes, tiny
# model, CPU, no download):
# finetune, replay, mrdc, cim and emm at the default memory (5 full exemplars per class: replay keeps 5 of a class's
# 30 training samples, and the compressed methods fewer than 30, so every one of them is under memory pressure),
# plus replay, mrdc, cim and emm at 1 and 3 per class (with the runs at 5, a memory sweep), 5 phases, one seed, each
# method's own recipe (DEMO_EPOCHS=k shortens it to k epochs a phase; the report then labels every row
# [max_epoch=k]). Then `python -m emmcil.report` writes the tables and the PNGs to $REPORT_DIR, and the memory
# browser of emm beside replay at the default memory (`python -m emmcil.report.memory`) is drawn by headless Chromium
# (scripts/screenshot.sh) into $BROWSER_PNG (its last phase's page, the first screen; skipped with a note when there
# is no Chromium or no emm and replay run at the default memory).
# Demo numbers show that the pipeline works end to end; they are NOT the paper's setting and say nothing about
# its results.
#
# Time: see the README's Quick start (measured by benchmarks/bench_commands.py). The runs go to a temporary LOG_DIR
# (removed at the end unless LOG_DIR is set).
#
# Usage:   scripts/demo_figures.sh                       # -> fig/report.md, fig/*.png, fig/*.md
#          DRY_RUN=1 scripts/demo_figures.sh             # resolve the configs, print the commands
# Variables shared by all scripts: see scripts/common.sh; here DATA_ROOT and CKPT default to "" (the demo set, no
# pretrained weights), GPUS to 0 (CPU), SEEDS to 0, REPORT_DIR to fig.
set -euo pipefail

METHODS=${METHODS:-finetune replay mrdc cim emm}   # at the default memory
SWEEP_METHODS=${SWEEP_METHODS:-replay mrdc cim emm}
SWEEP_SIZES=${SWEEP_SIZES:-1 3}           # memory_per_class besides the default 5
DEMO_EPOCHS=${DEMO_EPOCHS:-}              # max_epoch per phase; "" = the method's recipe (20 on the demo)
DATA_ROOT=${DATA_ROOT-}
CKPT=${CKPT-}
GPUS=${GPUS:-0}
SEEDS=${SEEDS:-0}
REPORT_DIR=${REPORT_DIR:-fig}
BROWSER_PNG=${BROWSER_PNG:-$REPORT_DIR/memory_browser.png}   # the memory browser's screenshot
if [[ -z ${LOG_DIR:-} ]]; then
    LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/emmcil_demo.XXXXXX")
    [[ ${DRY_RUN:-0} == 1 ]] && rmdir "$LOG_DIR"
    trap 'rm -rf "$LOG_DIR"' EXIT
fi

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REPORT_ARGS=(--note "Demo: the embedded synthetic set (10 classes, 30 training images each), the tiny model trained \
in full on the CPU, ${DEMO_EPOCHS:-20} epochs a phase, seeds: $SEEDS. The numbers show that the pipeline works end \
to end; they are not the paper's setting.")
settings=(progress_bar=False ${DEMO_EPOCHS:+"max_epoch=$DEMO_EPOCHS"})
# emm's masking figures (mask_figure, a key of emm only) are not drawn for the demo
own() { [[ $1 == emm ]] && echo mask_figure=0; true; }
for method in $METHODS; do
    add_runs "demo_${method}" demo "$method" "${settings[@]}" $(own "$method")
done
for method in $SWEEP_METHODS; do
    for m in $SWEEP_SIZES; do
        add_runs "demo_${method}_m${m}" demo "$method" "memory_per_class=$m" "${settings[@]}" $(own "$method")
    done
done
start=$SECONDS
run_all "demo_*"
# the memory browser: emm beside replay at the default memory, first seed; its last phase's page, first screen
seed=${SEEDS%% *}
browser=("$PYTHON" -m emmcil.report.memory "$LOG_DIR/demo_emm_seed$seed" "$LOG_DIR/demo_replay_seed$seed"
         --out "$LOG_DIR/memory_browser")
shot=(bash "$REPO/scripts/screenshot.sh" "$LOG_DIR/memory_browser/phase_4.html" "$BROWSER_PNG" 1400 1000)
if [[ $DRY_RUN == 1 ]]; then
    echo "# then: $(quote "${browser[@]}")"
    echo "# then: $(quote "${shot[@]}")"
elif [[ " $METHODS " != *" emm "* || " $METHODS " != *" replay "* ]]; then
    echo "note: METHODS has no emm or no replay: $BROWSER_PNG not redrawn" >&2
else
    printf '+ %s\n' "$(quote "${browser[@]}")" >&2
    "${browser[@]}"
    if command -v chromium > /dev/null 2>&1 || [[ -n ${CHROMIUM:-} ]]; then
        printf '+ %s\n' "$(quote "${shot[@]}")" >&2
        "${shot[@]}"
    else
        echo "note: no Chromium (apt-get install -y chromium): $BROWSER_PNG not redrawn" >&2
    fi
fi
if [[ $DRY_RUN != 1 ]]; then
    echo "# demo_figures: $(( SECONDS - start )) s; report in $REPORT_DIR/report.md" >&2
fi
