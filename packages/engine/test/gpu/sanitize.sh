#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck over full forward passes of @x/engine on CUDA
# (dist-gpu/forward.sanitize.mjs: prefill, eager and CUDA-graph decode, sampling; cuBLASLt's GEMMs
# included), one process per tool, side by side. Logs: $OUT/engine-sanitize-<tool>.log.
#   source .device/activate.sh && bash packages/engine/test/gpu/sanitize.sh
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
cs=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
pids=()
tools=(${SANITIZE_TOOLS:-memcheck racecheck})
for tool in "${tools[@]}"; do
  timeout "${SANITIZE_TIMEOUT:-300}" "$cs" --tool "$tool" --error-exitcode 99 --print-limit 20 \
    node packages/engine/dist-gpu/forward.sanitize.mjs >"$out/engine-sanitize-$tool.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  rc=$?
  log="$out/engine-sanitize-${tools[$i]}.log"
  summary=$(grep -E '^========= (ERROR SUMMARY|RACECHECK SUMMARY)|^# ' "$log" | tr '\n' ' ')
  echo "${tools[$i]}: rc=$rc ${summary}"
  [ "$rc" -eq 0 ] || { status=1; grep -m 12 -E '=========  |Error|error' "$log"; }
done
exit $status
