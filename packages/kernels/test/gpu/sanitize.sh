#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck over @x/kernels' own kernels, at small sizes
# (X_GPU_SMALL=1), one process per (tool, check file), run side by side (GEMMs are cuBLASLt's and
# are left out: matmul.gpu.mjs is not run; racecheck hazards inside cuBLASLt's nvjet kernels, which
# fused-linear.gpu.mjs runs as references, are listed but do not fail the run — they are not our
# code, and excluding those kernels from instrumentation crashes the sanitizer). Logs:
# $OUT/sanitize-<tool>-<file>.log. SANITIZE_TOOLS / SANITIZE_FILES narrow it.
#   source .device/activate.sh && bash packages/kernels/test/gpu/sanitize.sh
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
cs=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
pids=()
names=()
for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
  for f in ${SANITIZE_FILES:-elementwise attention sample fused-linear}; do
    log="$out/sanitize-$tool-$f.log"
    X_GPU_SMALL=1 timeout "${SANITIZE_TIMEOUT:-300}" "$cs" --tool "$tool" --error-exitcode 99 --print-limit 20 \
      node "packages/kernels/test/gpu/$f.gpu.mjs" >"$log" 2>&1 &
    pids+=($!)
    names+=("$tool $f")
  done
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  rc=$?
  log="$out/sanitize-${names[$i]// /-}.log"
  summary=$(grep -E '^========= (ERROR SUMMARY|RACECHECK SUMMARY)|^# (pass|fail) ' "$log" | tr '\n' ' ')
  echo "${names[$i]}: rc=$rc ${summary}"
  if [ "$rc" -eq 99 ] && [[ "${names[$i]}" == racecheck* ]] && ! grep -q '^not ok\|^# fail [1-9]' "$log" &&
    ! grep -E '^========= +(Error: Race reported between|and) ' "$log" | grep -v -q ' at nvjet_'; then
    echo "  (every hazard is inside cuBLASLt's nvjet kernels:)"
    grep -m 8 -E '^========= +(Error: Race reported between|and) ' "$log"
    continue
  fi
  [ "$rc" -eq 0 ] || { status=1; grep -m 8 -E '=========  |not ok|Error' "$log"; }
done
exit $status
