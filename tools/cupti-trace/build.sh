#!/usr/bin/env bash
# Builds libxtrace.so (see trace.cc) next to this script, with the toolkit's libcupti copied beside
# it (rpath $ORIGIN), so the pair can travel to a GPU machine: scripts/device-stage.sh stages it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cuda=${CUDA_HOME:-/usr/local/cuda}
out=${1:-$here/build}
mkdir -p "$out"
lib=$(ls "$cuda"/lib/libcupti.so.* "$cuda"/lib64/libcupti.so.* "$cuda"/extras/CUPTI/lib64/libcupti.so.* 2>/dev/null | head -1 || true)
[ -n "$lib" ] || { echo "cupti-trace: no libcupti under $cuda" >&2; exit 1; }
cp -L "$lib" "$out/"
g++ -O2 -std=c++17 -shared -fPIC -o "$out/libxtrace.so" "$here/trace.cc" -I"$cuda/include" \
  "$out/$(basename "$lib")" -Wl,-rpath,'$ORIGIN' -pthread
echo "$out/libxtrace.so"
