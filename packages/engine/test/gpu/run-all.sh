#!/usr/bin/env bash
# Every @x/engine GPU check and the engine benchmark in one call, in the order that keeps timings
# clean: compute-sanitizer (background) alongside the correctness checks, then transformers eager,
# then bench:gpu-engine alone on the GPU. The kernel checks the engine's forward relies on run
# first (@x/kernels' elementwise, attention and graph checks; memcheck of the first two in the
# background). At most 8 files land in $OUT (what the device tool returns): checks.log,
# bench.log, engine-gpu.jsonl, hf-eager.json, bench-engine.json, s/engine-sanitize-*.log,
# s/kernels-memcheck.log.
#   source .device/activate.sh && bash packages/engine/test/gpu/run-all.sh
# RUN_ALL_SKIP="kernels-gpu bench-engine-hf ..." leaves the named steps out (a shorter run).
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out/s"
export OUT=$out X_TEST_DEVICE=${X_TEST_DEVICE:-cuda:0}
status=0
skip() { [[ " ${RUN_ALL_SKIP:-} " == *" $1 "* ]]; }
step() { # name timeout_s log command...
  local name=$1 limit=$2 log=$3
  shift 3
  if skip "$name"; then echo "== $name skipped" | tee -a "$log"; return; fi
  echo "== $name ($(date +%T))" | tee -a "$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "== $name rc=$rc" | tee -a "$log"
  [ $rc -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee "$out/checks.log"
OUT=$out/s SANITIZE_TIMEOUT=${SANITIZE_TIMEOUT:-200} bash packages/engine/test/gpu/sanitize.sh >"$out/s/summary.txt" 2>&1 &
san=$!
ksan=
if ! skip kernels-memcheck; then
  OUT=$out/k SANITIZE_TOOLS=memcheck SANITIZE_FILES="elementwise attention" SANITIZE_TIMEOUT=${KERNELS_SANITIZE_TIMEOUT:-200} \
    bash packages/kernels/test/gpu/sanitize.sh >"$out/s/ksummary.txt" 2>&1 &
  ksan=$!
fi
step kernels-gpu "${KERNELS_TEST_TIMEOUT:-110}" "$out/checks.log" \
  node --test --test-concurrency=3 --test-reporter=spec packages/kernels/test/gpu/elementwise.gpu.mjs packages/kernels/test/gpu/attention.gpu.mjs packages/kernels/test/gpu/graph.gpu.mjs
step engine-gpu "${ENGINE_TEST_TIMEOUT:-120}" "$out/checks.log" \
  node --test --test-concurrency=1 --test-reporter=spec packages/engine/dist-gpu/fixtures.gpu.mjs packages/engine/dist-gpu/graphs.gpu.mjs
step engine-generate "${ENGINE_GENERATE_TIMEOUT:-90}" "$out/checks.log" bash packages/engine/test/gpu/generate.gpu.sh
wait $san
rc=$?
{ echo "== engine-sanitizer rc=$rc"; cat "$out/s/summary.txt"; } | tee -a "$out/checks.log"
rm -f "$out/s/summary.txt"
[ $rc -eq 0 ] || status=1
if [ -n "$ksan" ]; then
  wait $ksan
  rc=$?
  { echo "== kernels-memcheck rc=$rc"; cat "$out/s/ksummary.txt"; } | tee -a "$out/checks.log"
  cat "$out"/k/*.log >"$out/s/kernels-memcheck.log" 2>/dev/null
  rm -rf "$out/k" "$out/s/ksummary.txt"
  [ $rc -eq 0 ] || status=1
fi
step bench-engine-hf "${ENGINE_HF_TIMEOUT:-90}" "$out/bench.log" env PYTHONUNBUFFERED=1 python3 packages/engine/bench/hf_eager.py
step bench-engine "${ENGINE_BENCH_TIMEOUT:-150}" "$out/bench.log" node packages/engine/dist-gpu/bench-gpu.mjs
grep -E '^(ok|not ok|✔|✖|▶|ℹ (pass|fail))|^# \{|rc=' "$out/checks.log" | tail -80
grep -A12 -E '^(# @x/engine|\| (decode|prefill|tok/s))|^pipelined ids' "$out/bench.log" | head -40
exit $status
