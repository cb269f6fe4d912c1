#!/usr/bin/env bash
# Stages a GPU run into .device/ (run `pnpm build` first):
#   scripts/device-stage.sh [EXTRA_PATH ...]      # extra paths relative to the repo root
# It bundles the device-generic vitest suites for Node alone (scripts/gpu-bundle.mjs) and stages
# every package's built outputs (dist/, dist-gpu/, build/Release/, prebuilds/). Then run there with
# carry [".device"]:  source .device/activate.sh && bash scripts/gpu-check.sh
# Test and bench scripts are tracked files, so they travel with the working tree.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
prepare=${X_DEVICE_PREPARE:-/work/shared/device/prepare}
node scripts/gpu-bundle.mjs packages/cumem/src/allocator.test.ts
paths=()
for pkg in packages/*; do
  # node_modules/@x holds pnpm's relative links to sibling packages (bare `@x/core` imports).
  for out in dist dist-gpu build/Release prebuilds node_modules/@x; do
    # prebuilds/ duplicates build/Release/ (the loader tries the local build first); the carried
    # tree is limited to 64 MiB and @x/kernels' addon alone is ~7 MB, so stage only one of them.
    [ "$out" = prebuilds ] && [ -e "$pkg/build/Release" ] && continue
    [ -e "$pkg/$out" ] && paths+=("$pkg/$out")
  done
done
exec "$prepare" "${paths[@]}" "$@"
