#!/usr/bin/env bash
# Copy what scripts/gpu_check.sh needs from ../shared into .gpu/ (git-ignored; a few MB), because the
# GPU machine receives only the repository, then print the device call that runs the check.
#
#   scripts/prepare_gpu_run.sh                 # ../shared, or $SRDEPLOY_SHARED
#   scripts/prepare_gpu_run.sh --no-prebuilt   # skip the fallback build (a minute or two here)
#
# .gpu/tensorrt/include        TensorRT 11.1 headers (the plugin library and the enqueue harness build against them)
# .gpu/data/benchmark/Set5/HR  the Set5 images (real-image fp16 end-to-end tests and benchmark inputs)
# .gpu/third_party/tensorrt    a link to ../tensorrt, so code that looks in $SRDEPLOY_SHARED finds the headers
# .gpu/prebuilt/               the kernels and plugin libraries built here for sm_90 (~6 MB): used by gpu_check.sh
#                              only if its own build on the GPU machine fails, so the check still measures
# .gpu/wheels/*.whl            none needed now (the H200 image has torch, numpy, pytest, pillow); wheels put
#                              there are installed by gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PREBUILT=1
case "${1:-}" in
  "") ;;
  --no-prebuilt) PREBUILT=0 ;;
  *) echo "usage: scripts/prepare_gpu_run.sh [--no-prebuilt]" >&2; exit 2 ;;
esac
SHARED="${SRDEPLOY_SHARED:-../shared}"
HEADERS="$SHARED/third_party/tensorrt/include"
SET5="$SHARED/data/benchmark/Set5/HR"
if [ ! -f "$HEADERS/NvInfer.h" ] || ! compgen -G "$SET5/*.png" > /dev/null; then
  echo "error: $SHARED lacks third_party/tensorrt/include/NvInfer.h or data/benchmark/Set5/HR/*.png;" \
       "set SRDEPLOY_SHARED to the shared/ folder" >&2
  exit 2
fi
tmp=".gpu.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tensorrt" "$tmp/data/benchmark/Set5" "$tmp/third_party" "$tmp/wheels"
cp -r "$HEADERS" "$tmp/tensorrt/include"
cp -r "$SET5" "$tmp/data/benchmark/Set5/HR"
ln -s ../tensorrt "$tmp/third_party/tensorrt"
if [ "$PREBUILT" = 1 ]; then
  mkdir -p "$tmp/prebuilt"
  python3 -m plugins.build --build-dir build/gpu_check/prebuilt --arch 90-real --jobs "$(nproc)" \
    --tensorrt-root "$tmp/tensorrt" > build/prebuilt.log 2>&1 \
    || { echo "error: the sm_90 build failed (build/prebuilt.log); fix it or pass --no-prebuilt" >&2; exit 1; }
  cp build/gpu_check/prebuilt/*.so "$tmp/prebuilt/"
  echo "$(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' + uncommitted changes')" > "$tmp/prebuilt/COMMIT"
fi
if [ -d .gpu/wheels ]; then cp -p .gpu/wheels/*.whl "$tmp/wheels/" 2>/dev/null || true; fi  # keep carried wheels
rm -rf .gpu
mv "$tmp" .gpu
git check-ignore -q .gpu || echo "warning: .gpu/ is not git-ignored; add /.gpu/ to .gitignore" >&2
echo "prepared .gpu/ ($(du -sh .gpu | cut -f1)): TensorRT headers, Set5$([ "$PREBUILT" = 1 ] && echo ', prebuilt sm_90 libraries')"
cat <<'CALL'
Device call (one command, at most ~6 minutes of the 15-minute device budget; files come back from $OUT):
  run(command="scripts/gpu_check.sh \"$OUT\"", carry=[".gpu"], timeout_s=420)
A rerun of some steps only (build is needed by the others):
  run(command="GPU_CHECK_STEPS=environment,build,kernel_tests,summary scripts/gpu_check.sh \"$OUT\"", carry=[".gpu"], timeout_s=420)
Then, here: python -m benchmarks.gpu_summary publish <files_at>   (-> benchmarks/results/gpu/<gpu-name>.json/.md)
CALL
