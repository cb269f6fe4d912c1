#!/usr/bin/env bash
# Stages a GPU run of @x/core into .device/ (assumes `pnpm build` already ran):
#   scripts/device-stage.sh [EXTRA_PATH ...]      # extra paths relative to the repo root
# then run there with carry [".device"]:
#   source .device/activate.sh && node packages/core/test/gpu/core.gpu.mjs && node packages/core/bench/copy-bandwidth.mjs
# The test and bench scripts themselves are tracked files, so they travel with the working tree;
# .device/tree carries the ignored build outputs they import.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
prepare=${X_DEVICE_PREPARE:-/work/shared/device/prepare}
exec "$prepare" packages/core/dist packages/core/build/Release packages/core/prebuilds \
  packages/core/package.json "$@"
