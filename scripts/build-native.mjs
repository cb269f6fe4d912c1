#!/usr/bin/env node
// Builds one native package's addon(s) with cmake-js and stages the shipped one as a prebuild.
//   node ../../scripts/build-native.mjs --package core --addon x_core [--extra x_core_capi_test]
// Run from the package folder (pnpm does). Sources: native/<package>/, included by the package's
// CMakeLists.txt. Output: build/Release/*.node
// in the package, and prebuilds/<platform>-<arch>/<addon>.node (with the shared libraries the
// build bundled next to it) for the tarball.
// X_WITH_CUDA=0 builds CPU-only even where nvcc exists.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    package: { type: 'string' },
    addon: { type: 'string' },
    extra: { type: 'string', multiple: true, default: [] },
  },
});
if (!values.package || !values.addon) {
  console.error('usage: build-native.mjs --package <name> --addon <target> [--extra <target>...]');
  process.exit(2);
}

const pkgDir = process.cwd();
const require = createRequire(join(pkgDir, 'package.json'));
// The package's CMakeLists.txt adds native/<package>; cmake-js reads `binary.napi_versions` from
// the package.json next to it and so uses node-api-headers instead of downloading Node's headers.
if (
  !existsSync(join(pkgDir, 'CMakeLists.txt')) ||
  !existsSync(resolve(pkgDir, '../../native', values.package))
) {
  console.error(
    `build-native: expected CMakeLists.txt here and native/${values.package}/ in the repo`,
  );
  process.exit(2);
}
const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
const addonApiDir = require('node-addon-api').include_dir.replace(/"/g, '');
const withCuda = process.env.X_WITH_CUDA === '0' ? 'OFF' : 'ON';

const args = [
  cmakeJs,
  'compile',
  '--directory',
  pkgDir,
  '--out',
  join(pkgDir, 'build'),
  `--CDNODE_ADDON_API_DIR=${resolve(pkgDir, addonApiDir)}`,
  `--CDX_WITH_CUDA=${withCuda}`,
  '--parallel',
  String(Math.max(2, (await import('node:os')).availableParallelism())),
];
execFileSync(process.execPath, args, { stdio: 'inherit', cwd: pkgDir });

const built = join(pkgDir, 'build', 'Release', `${values.addon}.node`);
if (!existsSync(built)) {
  console.error(`build-native: expected ${built} after the build`);
  process.exit(1);
}
const prebuildDir = join(pkgDir, 'prebuilds', `${process.platform}-${process.arch}`);
mkdirSync(prebuildDir, { recursive: true });
copyFileSync(built, join(prebuildDir, `${values.addon}.node`));
// Shared libraries the build bundled next to the addon (found through its $ORIGIN rpath, e.g.
// @x/comm's libgloo and its dependencies) travel in the prebuild too, each as a regular file
// under the name the loader asks for (the symlink's name: tarballs drop symlinks).
const releaseDir = join(pkgDir, 'build', 'Release');
const entries = readdirSync(releaseDir).filter((f) => /\.so(\.\d+)*$/.test(f));
const linkedTo = new Set(
  entries
    .filter((f) => lstatSync(join(releaseDir, f)).isSymbolicLink())
    .map((f) => realpathSync(join(releaseDir, f))),
);
for (const f of entries) {
  const path = join(releaseDir, f);
  if (!lstatSync(path).isSymbolicLink() && linkedTo.has(realpathSync(path))) continue;
  copyFileSync(realpathSync(path), join(prebuildDir, f));
}
for (const extra of values.extra) {
  if (!existsSync(join(pkgDir, 'build', 'Release', `${extra}.node`))) {
    console.error(`build-native: expected ${extra}.node after the build`);
    process.exit(1);
  }
}
console.log(`build-native: ${values.addon}.node -> ${prebuildDir}`);
