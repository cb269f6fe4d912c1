#!/usr/bin/env bash
# Packs @x/core, installs the tarball with plain npm into an empty project, and runs a CPU stream
# through it; then the same for @x/comm (with @x/core's tarball), whose prebuild carries libgloo:
# a one-rank gloo group all-reduces, with libgloo loaded from the tarball. Proves the published
# packages (dist + prebuilds) work without the workspace.
# Run after `pnpm build`.
set -euo pipefail
# The addon must come from the installed tarball's prebuilds, not from an override.
unset X_CORE_NATIVE

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pack_dir="$(mktemp -d)"
project_dir="$(mktemp -d)"
comm_project="$(mktemp -d)"
trap 'rm -rf "$pack_dir" "$project_dir" "$comm_project"' EXIT

# pack <package> <tarball glob>: packs a workspace package into $pack_dir, lists the tarball's
# files (stderr) and prints its path.
pack() {
  (cd "$root" && pnpm --filter "$1" pack --pack-destination "$pack_dir" >/dev/null)
  local t
  t="$(find "$pack_dir" -maxdepth 1 -name "$2" | head -n 1)"
  if [[ -z "$t" ]]; then
    echo "pack-check: pnpm pack produced no $1 tarball in $pack_dir" >&2
    return 1
  fi
  echo "packed: $(basename "$t")" >&2
  tar -tzf "$t" | sed 's/^/  /' >&2
  echo "$t"
}

tarball="$(pack @x/core 'x-core-*.tgz')"

cd "$project_dir"
npm init -y >/dev/null
# @x/core has no runtime dependencies, so this needs no registry access.
npm install --no-audit --no-fund --prefer-offline "$tarball"

cat > check.mjs <<'JS'
import assert from 'node:assert/strict';
import { HostBuffer, Stream, buildInfo } from '@x/core';

const info = buildInfo();
console.log('buildInfo:', JSON.stringify(info, null, 2));
assert.match(info.addonPath, /node_modules\/@x\/core\/prebuilds\//, 'addon loaded from the tarball');

const stream = Stream.create('cpu');
const buf = HostBuffer.alloc(64, { device: 'cpu' });
try {
  stream.fill(buf.ptr, 64, 0x7f, 1);
  await stream.synchronize();
  assert.equal(buf.bytes[63], 0x7f, 'last byte after fill');
  assert.equal(buf.bytes[0], 0x7f, 'first byte after fill');
} finally {
  buf.dispose();
  stream.dispose();
}
console.log('pack-check: CPU stream fill through the installed tarball: ok');
JS
node check.mjs

# ---- @x/comm: its prebuild carries libgloo and its dependencies (hosts without libgloo0 load it) ----
comm_tarball="$(pack @x/comm 'x-comm-*.tgz')"
# (A here-string, not a pipe: grep -q stops reading early and pipefail would count tar's SIGPIPE.)
grep -q 'prebuilds/linux-x64/libgloo.so.0$' <<<"$(tar -tzf "$comm_tarball")" ||
  { echo "pack-check: the @x/comm tarball lacks prebuilds/linux-x64/libgloo.so.0" >&2; exit 1; }
cd "$comm_project"
npm init -y >/dev/null
npm install --no-audit --no-fund --prefer-offline "$tarball" "$comm_tarball"
cat > check.mjs <<'JS'
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initGroup } from '@x/comm';

const dir = mkdtempSync(join(tmpdir(), 'x-pack-comm-'));
const g = await initGroup({ backend: 'gloo', rank: 0, worldSize: 1, initMethod: `file://${dir}`, timeoutMs: 10000 });
try {
  const sums = await g.allReduce(Float32Array.of(1, 2, 3), 'sum');
  assert.deepEqual([...sums], [1, 2, 3], 'one-rank all-reduce');
} finally {
  g.dispose();
}
const maps = readFileSync('/proc/self/maps', 'utf8');
const gloo = maps.split('\n').find((l) => l.includes('libgloo.so'));
console.log('libgloo mapped from:', gloo?.trim().split(/\s+/).at(-1));
assert.match(gloo ?? '', /node_modules\/@x\/comm\/prebuilds\/linux-x64\/libgloo\.so\.0/, 'libgloo from the tarball');
console.log('pack-check: one-rank gloo all-reduce through the installed @x/comm tarball: ok');
JS
node check.mjs
