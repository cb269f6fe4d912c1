#!/usr/bin/env bash
# On the GPU machine (after `source .device/activate.sh`): the batch-1 decode replay profile of
# the engine bench (BENCH_PROFILE=1) under tuning knobs, each variant in its own process, with a
# kernel timeline of the ones named in PROFILE_TRACE. Variants are "name:ENV=V,ENV=V" words in
# PROFILE_VARIANTS ("base:" = no knobs). Writes $OUT/profile.tar.gz (logs, traces, reports).
#   PROFILE_VARIANTS="base: split128:X_ATTN_SPLIT_KEYS=128" PROFILE_TRACE="base" bash tools/cupti-trace/profile.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-profile-out}
work=$(mktemp -d)
lib=$here/build/libxtrace.so
for v in ${PROFILE_VARIANTS:-base:}; do
  name=${v%%:*}
  knobs=${v#*:}
  envs=()
  [ -n "$knobs" ] && IFS=',' read -r -a envs <<<"$knobs"
  pre=()
  if [[ " ${PROFILE_TRACE:-} " == *" $name "* ]]; then
    pre=(LD_PRELOAD="$lib" X_CUPTI_TRACE="$work/$name.trace.csv")
  fi
  echo "== $name ${knobs}"
  env "${envs[@]}" "${pre[@]}" BENCH_PROFILE=1 timeout "${PROFILE_TIMEOUT:-300}" \
    node packages/engine/dist-gpu/bench-gpu.mjs >"$work/$name.log" 2>&1
  echo "rc=$?" >>"$work/$name.log"
  grep -h 'profile:\|rc=' "$work/$name.log"
  if [ -f "$work/$name.trace.csv" ]; then
    node "$here/report.mjs" "$work/$name.trace.csv" --nodes >"$work/$name.report.md" 2>&1
    grep -h '^## graph' "$work/$name.report.md"
    gzip -f "$work/$name.trace.csv"
  fi
done
mkdir -p "$out"
tar -C "$work" -czf "$out/profile.tar.gz" .
