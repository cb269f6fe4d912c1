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
# @x/engine's GPU checks, benchmark and the bundled `x` CLI (packages/engine/dist-gpu/).
node packages/engine/test/gpu/bundle.mjs
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
"$prepare" "${paths[@]}" "$@"
# The carried tree is limited to 64 MiB: binaries over 1 MiB travel xz-compressed (the kernels
# addon shrinks ~9x) and activate.sh unpacks them in place.
find .device/tree -type f \( -name '*.node' -o -name '*.so*' \) -size +1M ! -name '*.xz' -exec xz -T0 -6 -f {} +
cat >>.device/activate.sh <<'ACT'
for f in $(cd .device/tree && find . -type f -name '*.xz'); do
  p=${f#./}
  if command -v xz >/dev/null; then xz -dc ".device/tree/$p" >"${p%.xz}"
  else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' ".device/tree/$p" "${p%.xz}"; fi
  chmod +x "${p%.xz}"; rm -f "$p"
done
ACT
du -sh .device | awk '{print "compressed .device: " $1}' >&2
