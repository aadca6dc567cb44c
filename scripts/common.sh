# Shared by the experiment scripts (table_*.sh, ablation_*.sh, demo_figures.sh); source it, do not run it.
#
# A script sets its own variables, calls `add_runs EXP_PREFIX NAMED_CONFIGS... KEY=VALUE...` once per
# configuration (one run per seed of $SEEDS), then `run_all REPORT_GLOB`, which
#   1. resolves every run's config with sacred, training nothing (`run.py print_config with ...`, all in one Python
#      process: scripts/resolve_configs.py), and stops if any fails: an unknown key or named config, or two runs
#      sharing a run directory;
#   2. with DRY_RUN=1 prints the commands (one shell-quoted line each; comments start with #) and stops there;
#      otherwise runs them one after the other (a finished run is skipped, an interrupted one resumes: run.py does
#      that by itself) and then writes the report: python -m emmcil.report "$LOG_DIR/REPORT_GLOB" --out $REPORT_DIR.
#      A run stopped by SIGTERM / SIGINT (exit status 75, STOPPED below; or killed by one of them before it could
#      say so: 143, 130) stops the script with status 75 at once, whatever KEEP_GOING says: running the script
#      again resumes that run and does the rest. Any other non-zero status is a failure.
#
# Needs bash >= 4.4 (mapfile, empty arrays under `set -u`): Linux has it; on macOS, `brew install bash`.
#
# Variables every script takes (defaults in brackets):
#   DATA_ROOT   [data/arrow]  folder of the {dataset}_{split}.arrow files (scripts/prepare_*.sh); "" = the demo set
#   CKPT        [checkpoints/vilt_200k_mlm_itm.ckpt]  pretrained ViLT (load_path); "" = random initialisation
#   GPUS        [1]   GPUs per run and node (devices=); > 1 adds strategy=ddp; 0 = CPU (accelerator=cpu)
#   NODES       [1]   nodes per run (num_nodes=); > 1 adds strategy=ddp and needs a LAUNCHER that starts
#                     GPUS x NODES processes: scripts/slurm/table.sbatch sets both under SLURM
#   LAUNCHER    []    a command put before every run, e.g. "srun --kill-on-bad-exit=1" (scripts/slurm/table.sbatch);
#                     config resolution and the report run without it
#   PRECISION   [16-mixed]  Lightning precision on GPUs (the authors' ViLT code trains in fp16); 32-true for fp32
#   SEEDS       [0 1 2]  one run per seed (seed=); the report shows mean ± std over them
#   LOG_DIR     [runs]  run directories go to $LOG_DIR/<exp_name>
#   EXTRA       []    more key=value config updates for every run, space-separated (e.g. "per_gpu_batchsize=64")
#   TAG         []    appended to every exp_name and to exp_tag, to keep a variant (made with EXTRA) apart
#   DRY_RUN     [0]   1: resolve every config and print the commands, train nothing
#   KEEP_GOING  [0]   1: when a run fails, go on with the next one (failures are listed at the end, exit 1)
#   REPORT      [1]   0: no report after the runs
#   REPORT_DIR  [reports/<script name>]  where the report's tables and figures go
#   VERBOSE     [0]   1: print every resolved config in full
#   PYTHON      [python]  the interpreter that has emmcil's requirements

DATA_ROOT=${DATA_ROOT-data/arrow}
CKPT=${CKPT-checkpoints/vilt_200k_mlm_itm.ckpt}
GPUS=${GPUS:-1}
NODES=${NODES:-1}
LAUNCHER=${LAUNCHER:-}
PRECISION=${PRECISION:-16-mixed}
SEEDS=${SEEDS:-0 1 2}
LOG_DIR=${LOG_DIR:-runs}
EXTRA=${EXTRA:-}
TAG=${TAG:-}
DRY_RUN=${DRY_RUN:-0}
KEEP_GOING=${KEEP_GOING:-0}
REPORT=${REPORT:-1}
SCRIPT_NAME=$(basename "$0" .sh)
REPORT_DIR=${REPORT_DIR:-reports/$SCRIPT_NAME}
VERBOSE=${VERBOSE:-0}
PYTHON=${PYTHON:-python}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # emmcil importable without `pip install -e .`
# run.py by a relative path when run from the repository root (commands to copy), else by its absolute path;
# relative DATA_ROOT, CKPT, LOG_DIR and REPORT_DIR are taken from the current directory, as run.py takes them.
if [[ $PWD == "$REPO" ]]; then RUN_PY=run.py; else RUN_PY=$REPO/run.py; fi

if ! [[ $GPUS =~ ^[0-9]+$ ]]; then echo "error: GPUS=$GPUS must be a number of GPUs (0 = CPU)" >&2; exit 1; fi
if ! [[ $NODES =~ ^[1-9][0-9]*$ ]]; then echo "error: NODES=$NODES must be a number of nodes (>= 1)" >&2; exit 1; fi
if [[ -z ${SEEDS// /} ]]; then echo "error: SEEDS is empty" >&2; exit 1; fi

STOPPED=75      # run.py's exit status for a run stopped by a signal (emmcil.stops.STOPPED_EXIT_CODE): resumable
CMDS=()          # one shell-quoted command a run
REPORT_ARGS=()   # more arguments of the report command (a script may set them after sourcing this file)

quote() { printf '%q ' "$@" | sed 's/ $//'; }

# The key=value updates every run gets: data, checkpoint, hardware, log directory, EXTRA.
common_args() {
    local args=()
    [[ -n $DATA_ROOT ]] && args+=("data_root=$DATA_ROOT")
    [[ -n $CKPT ]] && args+=("load_path=$CKPT")
    if (( GPUS == 0 )); then
        args+=(accelerator=cpu devices=1)
    else
        args+=(accelerator=gpu "devices=$GPUS" "precision=$PRECISION")
    fi
    (( NODES > 1 )) && args+=("num_nodes=$NODES")
    (( (GPUS > 1 ? GPUS : 1) * NODES > 1 )) && args+=(strategy=ddp)
    args+=("log_dir=$LOG_DIR")
    printf '%s\n' "${args[@]}"
}

# add_runs EXP_PREFIX [exp_tag=T] NAMED_CONFIGS... KEY=VALUE...
# One run per seed of $SEEDS: exp_name=EXP_PREFIX_seed<s>[_TAG], seed=<s>; the last exp_tag= given (or none) gets
# _TAG appended too. $EXTRA comes last, so it wins over the script's own keys.
add_runs() {
    local prefix=$1; shift
    local args=() tag="" a s
    for a in "$@"; do
        if [[ $a == exp_tag=* ]]; then tag=${a#exp_tag=}; else args+=("$a"); fi
    done
    if [[ -n $TAG ]]; then tag=${tag:+${tag}_}$TAG; fi
    local common
    mapfile -t common < <(common_args)
    local extra=() launcher=()
    read -r -a extra <<< "$EXTRA"
    read -r -a launcher <<< "$LAUNCHER"
    for s in $SEEDS; do
        local name="${prefix}_seed${s}${TAG:+_$TAG}"
        local cmd=("${launcher[@]}" "$PYTHON" "$RUN_PY" with "${args[@]}" "seed=$s" "exp_name=$name")
        [[ -n $tag ]] && cmd+=("exp_tag=$tag")
        cmd+=("${common[@]}" "${extra[@]}")
        CMDS+=("$(quote "${cmd[@]}")")
    done
}

# require_data DATASET: the arrow files and the checkpoint a real run needs (a note only, in a dry run).
require_data() {
    local missing=()
    if [[ -n $DATA_ROOT ]]; then
        local split
        for split in train test; do
            [[ -f $DATA_ROOT/${1}_$split.arrow ]] || missing+=("$DATA_ROOT/${1}_$split.arrow (scripts/prepare_${1}.sh)")
        done
    fi
    [[ -z $CKPT || -f $CKPT ]] || missing+=("$CKPT (CKPT=; see docs/reproduction.md)")
    if (( ${#missing[@]} )); then
        if [[ $DRY_RUN == 1 ]]; then
            printf '# note: not found (fine for a dry run): %s\n' "${missing[@]}" >&2
        else
            printf 'error: not found: %s\n' "${missing[@]}" >&2
            exit 1
        fi
    fi
}

# run_all REPORT_GLOB: resolve every config, then print (DRY_RUN=1) or run the commands, then the report.
run_all() {
    local glob=$1
    if (( ${#CMDS[@]} == 0 )); then echo "error: no runs (empty METHODS, PHASES or grid?)" >&2; exit 1; fi
    local list
    list=$(mktemp)
    printf '%s\n' "${CMDS[@]}" > "$list"
    local verbose=()
    [[ $VERBOSE == 1 ]] && verbose=(--verbose)
    echo "# $SCRIPT_NAME: ${#CMDS[@]} runs; resolving their configs (sacred print_config, nothing trains)"
    if ! "$PYTHON" "$REPO/scripts/resolve_configs.py" "$list" "${verbose[@]}"; then
        rm -f "$list"
        exit 1
    fi
    rm -f "$list"
    local report=("$PYTHON" -m emmcil.report "$LOG_DIR/$glob" --out "$REPORT_DIR" "${REPORT_ARGS[@]}")
    if [[ $DRY_RUN == 1 ]]; then
        printf '%s\n' "${CMDS[@]}"
        quote "${report[@]}"; echo
        return 0
    fi
    local failed=() i=0 cmd status
    for cmd in "${CMDS[@]}"; do
        i=$((i + 1))
        printf '+ [%d/%d] %s\n' "$i" "${#CMDS[@]}" "$cmd" >&2
        status=0
        eval "$cmd" || status=$?
        if (( status == STOPPED || status == 130 || status == 143 )); then
            echo "stopped: run $i of ${#CMDS[@]} was stopped (exit status $status); run this script again to resume" \
                 "it (and then the rest): $cmd" >&2
            exit "$STOPPED"
        fi
        if (( status != 0 )); then
            [[ $KEEP_GOING == 1 ]] || { echo "error: run $i failed (exit status $status): $cmd" >&2; exit 1; }
            failed+=("$cmd")
        fi
    done
    if [[ $REPORT == 1 ]]; then
        printf '+ %s\n' "$(quote "${report[@]}")" >&2
        "${report[@]}"
    fi
    if (( ${#failed[@]} )); then
        printf 'error: failed: %s\n' "${failed[@]}" >&2
        exit 1
    fi
}

# A main table (scripts/table_*.sh): every method of $METHODS at every L of $PHASES on one dataset, one run per
# seed, named table_<dataset>_L<L>_<method>_seed<s>; then the report.
run_table() {
    local dataset=$1 L method
    require_data "$dataset"
    for L in $PHASES; do
        for method in $METHODS; do
            add_runs "table_${dataset}_L${L}_${method}" "$dataset" "phases_$L" "$method"
        done
    done
    run_all "table_${dataset}_*"
}
