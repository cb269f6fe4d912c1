#!/usr/bin/env bash
# Every GPU check and benchmark, in one call on the GPU machine (after `source .device/activate.sh`).
# Logs and JSON results go to $OUT (or ./gpu-out). Exit status: non-zero if any check failed;
# benchmarks always report.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
export OUT=$out X_TEST_DEVICE=${X_TEST_DEVICE:-cuda:0} NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
status=0
# GPU_CHECK_ONLY="core-gpu kernels-gpu ..." runs only the named checks (a short device lease).
run() {
  local name=$1
  shift
  if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ " $GPU_CHECK_ONLY " != *" $name "* ]]; then return; fi
  echo "== $name"
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 12 "$out/$name.log"
  [ $rc -eq 0 ] || { echo "!! $name failed (rc=$rc)"; status=1; }
}
run core-gpu node packages/core/test/gpu/core.gpu.mjs
run cumem-suite node packages/cumem/dist-gpu/allocator.test.mjs
run cumem-gpu node packages/cumem/test/gpu/cumem.gpu.mjs
run bench-core node packages/core/bench/copy-bandwidth.mjs
run bench-cumem node packages/cumem/bench/sleep-wake.mjs
run kernels-gpu timeout "${KERNELS_TEST_TIMEOUT:-600}" node --test --test-concurrency=3 packages/kernels/test/gpu/elementwise.gpu.mjs packages/kernels/test/gpu/attention.gpu.mjs packages/kernels/test/gpu/matmul.gpu.mjs packages/kernels/test/gpu/sample.gpu.mjs packages/kernels/test/gpu/graph.gpu.mjs packages/kernels/test/gpu/fused-linear.gpu.mjs
run kernels-sanitizer timeout "${KERNELS_SANITIZE_TIMEOUT:-900}" bash packages/kernels/test/gpu/sanitize.sh
run bench-kernels timeout "${KERNELS_BENCH_TIMEOUT:-600}" node packages/kernels/bench/gpu.mjs
run engine-gpu timeout "${ENGINE_TEST_TIMEOUT:-300}" node --test --test-concurrency=1 packages/engine/dist-gpu/fixtures.gpu.mjs packages/engine/dist-gpu/graphs.gpu.mjs
run engine-generate bash packages/engine/test/gpu/generate.gpu.sh
run engine-sanitizer timeout "${ENGINE_SANITIZE_TIMEOUT:-400}" bash packages/engine/test/gpu/sanitize.sh
run bench-engine-hf timeout "${ENGINE_HF_TIMEOUT:-300}" python3 packages/engine/bench/hf_eager.py
run bench-engine timeout "${ENGINE_BENCH_TIMEOUT:-400}" node packages/engine/dist-gpu/bench-gpu.mjs
run comm-nccl node packages/comm/test/gpu/nccl.gpu.mjs
run server-gpu node --test packages/server/test/gpu/serve.gpu.mjs
run bench-comm node packages/comm/bench/allreduce.mjs
grep -h -A8 '^| ' "$out"/bench-*.log
exit $status
