#!/usr/bin/env bash
# The GPU check: one command on a GPU machine that always leaves figures, at most ~6 minutes.
#
#   scripts/gpu_check.sh OUT_DIR        # on the GPU machine (OUT_DIR defaults to $OUT)
#   scripts/gpu_check.sh --dry-run      # on a CPU machine (CI): same build, collection and imports
#
# Steps, each independent (its own time limit; a failure is recorded and the next step runs):
#   environment  GPU, driver, CUDA, torch              -> OUT_DIR/environment.txt
#   build        kernels + TensorRT plugin library (+ enqueue harness) for this GPU's architecture only
#   kernel_tests        pytest -m gpu tests/test_*gpu*.py, gather variant (parity rows -> parity.jsonl)
#   kernel_tests_chunk  the same tests under the chunk variant, in a process of its own
#   enqueue             pytest -m gpu tests/test_plugin_enqueue.py (the IPluginV3 enqueue harness)
#   benchmarks          python -m benchmarks.kernels (gather)      -> OUT_DIR/kernels.json
#   benchmarks_chunk    the BucketAttention groups under chunk     -> OUT_DIR/kernels_chunk.json
#   summary             python -m benchmarks.gpu_summary collect   -> OUT_DIR/summary.json + summary.md
# OUT_DIR gets at most 8 files: environment.txt, steps.tsv, run.log, parity.jsonl, kernels.json,
# kernels_chunk.json, summary.json, summary.md. Builds and scratch files go to build/gpu_check/ (git-ignored).
# The GPU machine receives only the repository: what it needs from ../shared (TensorRT headers, Set5)
# is copied into .gpu/ by scripts/prepare_gpu_run.sh, which also prints the device call (and builds
# sm_90 libraries into .gpu/prebuilt/, used only if the build here fails).
#
# --dry-run: the same build (sm_90), the collection of the GPU test modules and the benchmark imports
# (plus a tiny CPU run of the benchmark logic and the summary), with polygraphy, onnx_graphsurgeon,
# onnxruntime_extensions and tensorrt made unimportable, as on the GPU machine. Exit status non-zero
# when any step failed (both modes).
# Environment: GPU_CHECK_BUDGET_S (default 345: the whole check's deadline on a GPU), JOBS (default nproc),
# ARCH (default: the GPU's own, e.g. 90-real; 90-real in a dry run), GPU_CHECK_STEPS (comma-separated
# step names to run, e.g. for a rerun: environment,build,kernel_tests,summary; default all).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
case "${1:-}" in -*) echo "usage: scripts/gpu_check.sh [--dry-run] [OUT_DIR]" >&2; exit 2 ;; esac
WORK="$REPO/build/gpu_check"
if [ "$DRY" = 1 ]; then
  OUT_DIR="${1:-}"
  [ -n "$OUT_DIR" ] || { OUT_DIR="$WORK/dry_run_out"; rm -rf "$OUT_DIR"; }  # only its own default is cleared
else
  OUT_DIR="${1:-${OUT:-}}"
  [ -n "$OUT_DIR" ] || { echo "error: give OUT_DIR (or set OUT): scripts/gpu_check.sh OUT_DIR" >&2; exit 2; }
fi
mkdir -p "$OUT_DIR" "$WORK" || { echo "error: cannot create $OUT_DIR or $WORK" >&2; exit 2; }
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
if [ -n "$(ls -A "$OUT_DIR")" ]; then
  echo "error: $OUT_DIR is not empty; give an empty or new folder (nothing is overwritten)" >&2; exit 2
fi
LOG="$OUT_DIR/run.log"
STEPS="$OUT_DIR/steps.tsv"
JOBS="${JOBS:-$(nproc)}"
BUDGET="${GPU_CHECK_BUDGET_S:-345}"
T0=$(date +%s)
failed=0

# ../shared when present, else the copy prepare_gpu_run.sh made in .gpu/
if [ -z "${SRDEPLOY_SHARED:-}" ]; then
  if [ -d "$REPO/../shared" ]; then SRDEPLOY_SHARED="$(cd "$REPO/../shared" && pwd)"
  elif [ -d "$REPO/.gpu" ]; then SRDEPLOY_SHARED="$REPO/.gpu"
  else SRDEPLOY_SHARED="$REPO/../shared"; fi
fi
export SRDEPLOY_SHARED
TRT_ROOT=""
for d in "$SRDEPLOY_SHARED/third_party/tensorrt" "$REPO/.gpu/tensorrt"; do
  if [ -f "$d/include/NvInfer.h" ]; then TRT_ROOT="$d"; break; fi
done
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

if [ "$DRY" = 1 ]; then
  # Packages the GPU machine lacks: importing them must fail here too.
  BLOCKED="$WORK/blocked_packages"
  rm -rf "$BLOCKED"
  for pkg in polygraphy onnx_graphsurgeon onnxruntime_extensions tensorrt tensorrt_lean tensorrt_rtx; do
    mkdir -p "$BLOCKED/$pkg"
    echo "raise ImportError('$pkg is not installed on the GPU machine (blocked by scripts/gpu_check.sh --dry-run)')" \
      > "$BLOCKED/$pkg/__init__.py"
  done
  export PYTHONPATH="$BLOCKED:$PYTHONPATH"
elif compgen -G "$REPO/.gpu/wheels/*.whl" > /dev/null; then
  # Python packages the GPU machine lacks, carried as wheels (the device README's recipe).
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    "$REPO"/.gpu/wheels/*.whl >> "$LOG" 2>&1 && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi

# run_step NAME CAP_S RESERVE_S CMD...: runs CMD with output appended to run.log, under a time limit of
# CAP_S, shortened on a GPU so that RESERVE_S seconds of the budget stay for the steps after it.
run_step() {
  local name=$1 cap=$2 reserve=$3; shift 3
  local limit=$cap
  if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ ",$GPU_CHECK_STEPS," != *",$name,"* ]]; then
    printf '%s\tnot selected\t0\t0\tGPU_CHECK_STEPS=%s\n' "$name" "$GPU_CHECK_STEPS" >> "$STEPS"
    return 0
  fi
  if [ "$DRY" = 0 ]; then
    local left=$(( T0 + BUDGET - $(date +%s) - reserve ))
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  if [ "$limit" -lt 5 ]; then
    printf '%s\tskipped\t0\t-1\tno time left in the %s s budget\n' "$name" "$BUDGET" >> "$STEPS"
    printf '%-14s skipped (no time left)\n' "$name"
    failed=1
    return 1
  fi
  printf '\n===== %s (limit %s s): %s\n' "$name" "$limit" "$*" >> "$LOG"
  local start rc status
  start=$(date +%s.%N)
  timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" > "$WORK/step.out" 2>&1  # bash -c: steps may be functions
  rc=$?
  cat "$WORK/step.out" >> "$LOG"
  # pytest's count line ("3 failed, 97 passed in 41.2s") becomes the step's note
  local note=""
  [[ " $* " == *" pytest "* ]] && note=$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected).* in [0-9.]+s' "$WORK/step.out" | tail -1 | tr -d '=' | xargs)
  local secs
  secs=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  [ "$rc" -ne 0 ] && failed=1
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$rc" "$note" >> "$STEPS"
  printf '%-17s %-8s %7s s  %s\n' "$name" "$status" "$secs" "$note"
  return $rc
}

environment() {
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 || echo "nvidia-smi: none"
  (command -v nvcc > /dev/null && nvcc --version | tail -2) || echo "nvcc: not on PATH"
  cmake --version | head -1
  echo "nproc $(nproc)"
  python3 -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name())'
  echo "shared $SRDEPLOY_SHARED; TensorRT headers ${TRT_ROOT:-none}"
}

if [ -z "${ARCH:-}" ]; then
  ARCH=90-real
  if [ "$DRY" = 0 ]; then  # only this GPU's architecture: CI builds the others
    ARCH="$(python3 -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}{n}-real")' 2>/dev/null || echo 90-real)"
  fi
fi
# The folder the tests' trt_plugins_lib fixture and plugins.trt.harness use: in CI the suite after the
# dry run then rebuilds nothing.
BUILD="$REPO/build/trt-plugins-$ARCH"
build() {
  if [ -n "$TRT_ROOT" ]; then
    python3 -m plugins.build --build-dir "$BUILD" --arch "$ARCH" --jobs "$JOBS" --tensorrt-root "$TRT_ROOT" && return 0
    echo "the build with the TensorRT plugins failed; building the kernels alone"
    python3 -m plugins.build --build-dir "$BUILD" --arch "$ARCH" --jobs "$JOBS"
    return 1  # the kernels are there for the next steps, the failure is still recorded
  fi
  echo "no TensorRT headers (../shared/third_party/tensorrt or .gpu/tensorrt): building the kernels alone"
  python3 -m plugins.build --build-dir "$BUILD" --arch "$ARCH" --jobs "$JOBS"
}
export -f environment build
export ARCH BUILD JOBS TRT_ROOT
# The libraries' file names are defined in plugins/build.py only.
read -r KERNELS_LIB_NAME TRT_LIB_NAME < <(cd "$REPO" && python3 -c 'from plugins.build import LIB_NAME, TRT_LIB_NAME
print(LIB_NAME, TRT_LIB_NAME)')
[ -n "${TRT_LIB_NAME:-}" ] || { echo "error: python3 could not read the library names from plugins/build.py" >&2; exit 1; }
export SRDEPLOY_KERNELS_LIB="$BUILD/$KERNELS_LIB_NAME" SRDEPLOY_TRT_PLUGINS="$BUILD/$TRT_LIB_NAME"
[ -n "$TRT_ROOT" ] && export SRDEPLOY_TRT_HEADERS="$TRT_ROOT"
export SRDEPLOY_PARITY_LOG="$OUT_DIR/parity.jsonl"
PYTEST=(python3 -m pytest -p no:cacheprovider -rA -q)
ENQUEUE_TEST=tests/test_plugin_enqueue.py
GPU_TESTS=(tests/test_*gpu*.py tests/test_op_backends.py)  # every module with GPU tests (test_kernels_gpu.py, ..., the op x backend table)

echo "gpu_check$([ "$DRY" = 1 ] && echo ' --dry-run'): $OUT_DIR (arch $ARCH, $JOBS jobs)"
run_step environment 20 300 environment
cp "$LOG" "$OUT_DIR/environment.txt" 2>/dev/null
if [ -z "${GPU_CHECK_STEPS:-}" ] || [[ ",$GPU_CHECK_STEPS," == *",build,"* ]]; then
  rm -f "$SRDEPLOY_KERNELS_LIB" "$SRDEPLOY_TRT_PLUGINS"  # what the steps below use is what this build made
fi
run_step build "$([ "$DRY" = 1 ] && echo 1800 || echo 120)" 150 build
if [ "$DRY" = 0 ]; then
  # a library the build did not make: the one prepare_gpu_run.sh built for sm_90, so the check still measures
  for var in SRDEPLOY_KERNELS_LIB SRDEPLOY_TRT_PLUGINS; do
    prebuilt="$REPO/.gpu/prebuilt/$(basename "${!var}")"
    if [ ! -f "${!var}" ] && [ -f "$prebuilt" ]; then
      export "$var=$prebuilt"
      printf 'prebuilt_fallback\tok\t0\t0\t%s from .gpu/prebuilt/, built from %s\n' "$(basename "$prebuilt")" \
        "$(cat "$REPO/.gpu/prebuilt/COMMIT" 2>/dev/null || echo 'an unknown commit')" >> "$STEPS"
      echo "using the prebuilt $(basename "$prebuilt") (.gpu/prebuilt/)"
    fi
  done
fi

if [ "$DRY" = 1 ]; then
  modules=("${GPU_TESTS[@]}")
  [ -f "$ENQUEUE_TEST" ] && modules+=("$ENQUEUE_TEST")
  run_step collect_gpu_tests 300 0 "${PYTEST[@]}" -m gpu --collect-only "${modules[@]}"
  run_step bench_imports 120 0 python3 -c \
    'import benchmarks.kernels, benchmarks.gpu_summary, benchmarks.op_cases, benchmarks.near_tie, plugins.kernels'
  # the benchmark's own logic on CPU (reference and official-style paths at tiny sizes)
  run_step bench_cpu_logic 300 0 python3 -m benchmarks.kernels --device cpu --groups nlsa,fold --sizes 12 \
    --fold-sizes 8 --dtypes fp32 --reps 1 --out "$WORK/bench"
else
  export SRDEPLOY_REQUIRE_GPU=1  # a GPU test module that would skip everything fails instead
  # The new chunk variant runs in processes of its own: a sticky CUDA error there cannot cost the rest.
  run_step kernel_tests 100 152 "${PYTEST[@]}" -m gpu -k "not chunk" "${GPU_TESTS[@]}"
  run_step kernel_tests_chunk 60 122 "${PYTEST[@]}" -m gpu -k chunk "${GPU_TESTS[@]}"
  if [ -f "$ENQUEUE_TEST" ]; then
    run_step enqueue 60 102 "${PYTEST[@]}" -m gpu "$ENQUEUE_TEST"
  else
    printf 'enqueue\tskipped\t0\t-1\t%s not in this checkout\n' "$ENQUEUE_TEST" >> "$STEPS"
  fi
  rm -rf "$WORK/bench" "$WORK/bench_chunk"
  run_step benchmarks 200 42 python3 -m benchmarks.kernels --out "$WORK/bench" --variants gather --reps 20
  run_step benchmarks_chunk 60 12 python3 -m benchmarks.kernels --out "$WORK/bench_chunk" --variants chunk \
    --groups nlsa,nlsn_x4 --no-compile --reps 20
fi
# kernels.json is rewritten after every benchmark group: a benchmark stopped by its limit still leaves figures
[ -f "$WORK/bench/kernels.json" ] && cp "$WORK/bench/kernels.json" "$OUT_DIR/kernels.json"
[ "$DRY" = 0 ] && [ -f "$WORK/bench_chunk/kernels.json" ] && cp "$WORK/bench_chunk/kernels.json" "$OUT_DIR/kernels_chunk.json"
run_step summary 30 0 python3 -m benchmarks.gpu_summary collect "$OUT_DIR"
[ -f "$OUT_DIR/summary.md" ] && cat "$OUT_DIR/summary.md"
[ "$DRY" = 1 ] && rm -rf "$WORK/bench"

echo "gpu_check: $(( $(date +%s) - T0 )) s, $(ls "$OUT_DIR" | wc -l) files in $OUT_DIR, status $failed"
exit $failed
