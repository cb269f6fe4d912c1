#!/usr/bin/env bash
# Packs @x/core, installs the tarball with plain npm into an empty project, and runs a CPU stream
# through it. Proves the published package (dist + prebuilds) works without the workspace.
# Run after `pnpm build`.
set -euo pipefail
# The addon must come from the installed tarball's prebuilds, not from an override.
unset X_CORE_NATIVE

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pack_dir="$(mktemp -d)"
project_dir="$(mktemp -d)"
trap 'rm -rf "$pack_dir" "$project_dir"' EXIT

cd "$root"
pnpm --filter @x/core pack --pack-destination "$pack_dir" >/dev/null
tarball="$(find "$pack_dir" -maxdepth 1 -name '*.tgz' | head -n 1)"
if [[ -z "$tarball" ]]; then
  echo "pack-check: pnpm pack produced no tarball in $pack_dir" >&2
  exit 1
fi
echo "packed: $(basename "$tarball")"
tar -tzf "$tarball" | sed 's/^/  /'

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
