#!/usr/bin/env bash
# One command on a GPU machine: build the kernels library, run the GPU tests, run the kernel
# microbenchmarks, and leave the figures (JSON + Markdown tables) and logs in one folder.
#
#   scripts/gpu_check.sh [OUT_DIR]        # default: $OUT, else out/gpu_check
#
# Environment: JOBS (compile jobs, default nproc), ARCHS (CMake CUDA architectures, default the
# GPU's own, e.g. 90-real; ARCHS=all builds 80-real;90-real;100), BENCH_REPS (default 30),
# PYTEST_TARGETS (default tests: every test marked gpu).
# Fits in about 10 minutes on an H100. Exit status: non-zero if the build or a test failed.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${1:-${OUT:-out/gpu_check}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
BUILD_DIR="${BUILD_DIR:-plugins/build}"
JOBS="${JOBS:-$(nproc)}"
status=0

log() { printf '\n=== %s\n' "$*" | tee -a "$OUT_DIR/summary.txt"; }

log "environment"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 || echo "nvidia-smi unavailable"
  (command -v nvcc >/dev/null && nvcc --version | tail -2) || echo "nvcc not on PATH"
  cmake --version | head -1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())'
} 2>&1 | tee "$OUT_DIR/environment.txt" | tee -a "$OUT_DIR/summary.txt"

if [ -z "${ARCHS:-}" ]; then
  # Only this GPU's architecture: a full three-architecture build is what CI checks.
  ARCHS="$(python3 -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}{n}-real")' 2>/dev/null || echo all)"
fi
[ "$ARCHS" = "all" ] && ARCHS="80-real;90-real;100"

log "build (archs $ARCHS, $JOBS jobs)"
start=$(date +%s)
if python3 -m plugins.build --build-dir "$BUILD_DIR" --arch "$ARCHS" --jobs "$JOBS" > "$OUT_DIR/build.log" 2>&1; then
  echo "built in $(( $(date +%s) - start )) s" | tee -a "$OUT_DIR/summary.txt"
else
  echo "BUILD FAILED (see build.log)" | tee -a "$OUT_DIR/summary.txt"
  tail -40 "$OUT_DIR/build.log"
  exit 1
fi
export SRDEPLOY_KERNELS_LIB="$(cd "$BUILD_DIR" && pwd)/libsrdeploy_kernels.so"

log "GPU tests (pytest -m gpu)"
# shellcheck disable=SC2086
python3 -m pytest -m gpu -rs -q ${PYTEST_TARGETS:-tests} \
  --junitxml="$OUT_DIR/pytest_gpu.xml" 2>&1 | tee "$OUT_DIR/pytest_gpu.log" | tail -40
test_status=${PIPESTATUS[0]}
[ "$test_status" -ne 0 ] && status=$test_status
tail -1 "$OUT_DIR/pytest_gpu.log" >> "$OUT_DIR/summary.txt"

log "CPU checks of the library (C ABI validation, loader)"
python3 -m pytest -q tests/test_kernels_build.py 2>&1 | tail -3 | tee -a "$OUT_DIR/summary.txt"

log "kernel microbenchmarks"
if python3 -m benchmarks.kernels --out "$OUT_DIR/bench_kernels" --reps "${BENCH_REPS:-30}" \
    > "$OUT_DIR/bench_kernels.log" 2>&1; then
  cat "$OUT_DIR/bench_kernels/results.md" | tee -a "$OUT_DIR/summary.txt"
else
  echo "BENCHMARK FAILED (see bench_kernels.log)" | tee -a "$OUT_DIR/summary.txt"
  tail -40 "$OUT_DIR/bench_kernels.log"
  status=1
fi

log "done: $OUT_DIR (status $status)"
exit $status
