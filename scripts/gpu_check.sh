#!/usr/bin/env bash
# One-shot GPU validation: builds the CUDA extension for the visible GPU, runs the CUDA tests and the
# Triton kernels' tests, then the benchmarks at the target sizes (WNLL, kNN, TV, a PGD training step),
# and prints one summary (device, every figure, every target met or not), also written to
# <out>/gpu_check_<device>.md and .json. Made to finish in under 8 minutes on an H100/H200 whose Python
# already has torch, triton and pytest: nothing is downloaded, faiss is optional.
#
#   scripts/gpu_check.sh [--out DIR] [--work DIR] [--cpu-dry-run]
#
#   --out DIR      where the summary goes (default benchmarks/results)
#   --work DIR     what the run leaves besides (default benchmarks/out/gpu_check, git-ignored): the log
#                  gpu_check.log, one log per stage in logs/, the benchmarks' CSV/JSON in results/ and
#                  stages.tsv (name, exit status, seconds, budget, log of every stage); emptied first
#   --cpu-dry-run  check this script on a machine without a GPU: the build only resolved (pip --dry-run),
#                  the tests only collected, tiny benchmarks on the CPU (figures meaningless, targets
#                  n/a); the summary goes to the work folder unless --out is given
#   PYTHON=python3 the interpreter
#   GPU_CHECK_SECONDS=470  the time the whole run may take
#
# Every stage has a time budget in seconds (the second field of its line below): a stage still running
# at the end of it is stopped and reported as timed out, and budgets are cut (a stage skipped) so that
# the whole run ends within TOTAL_S. Exit status: 0 when every stage passed and every target is met
# (or, in a dry run, does not apply); 1 otherwise; 2 for a usage error or no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TOTAL_S=${GPU_CHECK_SECONDS:-470}   # the whole run, summary included: under 8 minutes
SUMMARY_S=25                        # kept for the summary at the end
KILL_S=5                            # a stopped stage gets this long to exit before it is killed

DRY=0
OUT=""
WORK=benchmarks/out/gpu_check
while (($#)); do
    case $1 in
        --cpu-dry-run) DRY=1 ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        --work) WORK=${2:?--work needs a folder}; shift ;;
        -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
START=$(date +%s)
DEADLINE=$((START + TOTAL_S - SUMMARY_S))
RESULTS=$WORK/results
LOG=$WORK/gpu_check.log
STAGES=$WORK/stages.tsv
rm -rf "$RESULTS" "$WORK/logs" "$STAGES" "$LOG"
mkdir -p "$RESULTS" "$WORK/logs"

if ((DRY)); then
    OUT=${OUT:-$WORK}
    DEVICE=cpu
    TITLE="fastwnll GPU check: CPU dry run (tiny sizes, figures meaningless)"
    BUILD=(pip install --dry-run)
    COLLECT=(--collect-only)
    LIVE=extension
    WNLL=(--sizes 200 --repeats 1)
    KNN=(--sizes 300 --backends native torch --repeats 1)
    BANK=(--cases 200:5 --repeats 1)
    TV=(--batch 2 --iters 5 --repeats 1)
    TRAINING=(--batch 16 --steps 1 --pgd-steps 1 --adv-templates 20 --repeats 1)
    ARCH=9.0
else
    OUT=${OUT:-benchmarks/results}
    DEVICE=cuda
    if ! ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>>"$LOG"); then
        echo "gpu_check.sh: $PY sees no CUDA device (torch.cuda); on a machine without one, use --cpu-dry-run" >&2
        exit 2
    fi
    TITLE="fastwnll GPU check"
    BUILD=(pip install)
    COLLECT=()
    LIVE=cuda_kernels_live
    WNLL=(--full --repeats 20)
    KNN=(--full --repeats 10)
    BANK=(--full --repeats 10)
    TV=(--full --repeats 10)
    TRAINING=(--full --repeats 3)
fi

log() { echo "$*" | tee -a "$LOG"; }

# stage NAME BUDGET_S COMMAND...: run COMMAND with its output in logs/NAME.log (and the main log), stopped
# after BUDGET_S seconds or at the run's deadline, whichever comes first; one line in stages.tsv.
stage() {
    local name=$1 budget=$2
    shift 2
    local stage_log="$WORK/logs/$name.log" left=$((DEADLINE - $(date +%s) - KILL_S)) began rc
    ((budget > left)) && budget=$left
    if ((budget < 5)); then
        printf '%s\tskipped\t0\t%s\t%s\n' "$name" "$((budget > 0 ? budget : 0))" "$stage_log" >> "$STAGES"
        log "[$name] skipped: no time left"
        return
    fi
    log "[$name] $* (at most ${budget} s)"
    began=$(date +%s)
    timeout -k "$KILL_S" "$budget" "$@" > "$stage_log" 2>&1
    rc=$?
    cat "$stage_log" >> "$LOG"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - began))" "$budget" "$stage_log" >> "$STAGES"
    log "[$name] exit status $rc after $(($(date +%s) - began)) s"
}

BENCH=("$PY" -m fastwnll bench)
SAVE=(--device "$DEVICE" --out "$RESULTS" --overwrite)
log "gpu_check.sh: $(date -u +%FT%TZ), $PY, CUDA arch $ARCH, log $LOG"
# The stages, one line each; a stage's figures reach the summary when it writes result files
# (fastwnll.bench.results.write_results) into "$RESULTS".
stage build 100 env FASTWNLL_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$(nproc)" \
    "$PY" -m "${BUILD[@]}" --no-index --disable-pip-version-check --no-build-isolation --no-deps -e .
stage extension 20 "$PY" -c "import sys, fastwnll; i = fastwnll.info(); print(i['device'], i['build'], \
'CUDA kernels live: %s' % i['cuda_kernels_live'], 'Triton live: %s' % i['triton_live'], sep=' | '); sys.exit(not i['$LIVE'])"
stage tests-cuda 120 "$PY" -m pytest -q -rs -p no:cacheprovider -m cuda "${COLLECT[@]}" tests
stage tests-triton 40 "$PY" -m pytest -q -rs -p no:cacheprovider -m "not cuda" "${COLLECT[@]}" tests/test_tv_kernels.py
stage bench-wnll 25 "${BENCH[@]}" wnll "${WNLL[@]}" "${SAVE[@]}"
stage bench-knn 25 "${BENCH[@]}" knn "${KNN[@]}" "${SAVE[@]}"
stage bench-bank 25 "${BENCH[@]}" bank "${BANK[@]}" "${SAVE[@]}"
stage bench-tv 25 "${BENCH[@]}" tv "${TV[@]}" "${SAVE[@]}"
stage bench-training 50 "${BENCH[@]}" training "${TRAINING[@]}" "${SAVE[@]}"

"${BENCH[@]}" summary --out "$RESULTS" --stages "$STAGES" --summary "$OUT/gpu_check_{device}.md" --title "$TITLE" \
    --device "$DEVICE" --check --overwrite 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
log "gpu_check.sh: $(($(date +%s) - START)) s in all; log $LOG"
if [ -z "$(find "$OUT" -maxdepth 1 -name 'gpu_check_*.md' -newer "$STAGES" 2>/dev/null)" ]; then
    log "gpu_check.sh: no summary was written (exit status $status); the stages:"
    tee -a "$LOG" < "$STAGES"
    exit 1
fi
exit $((status == 0 ? 0 : 1))
