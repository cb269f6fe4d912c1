#!/usr/bin/env node
// Bundles vitest test files into plain Node scripts for the GPU machine (no node_modules there).
//   node scripts/gpu-bundle.mjs packages/cumem/src/allocator.test.ts [...]
// Output: <package>/dist-gpu/<file>.mjs. `vitest` becomes scripts/vitest-shim.mjs (node:test +
// vitest's expect); `@x/<pkg>[/sub]` stays external and points at packages/<pkg>/dist by relative
// path, so each package still finds its own native addon.
import { existsSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const shim = join(root, 'scripts', 'vitest-shim.mjs');

for (const file of process.argv.slice(2)) {
  const abs = resolve(file);
  const pkgDir = abs.slice(0, abs.indexOf('/', abs.indexOf('/packages/') + 10));
  const outdir = join(pkgDir, 'dist-gpu');
  const outfile = join(outdir, basename(abs).replace(/\.ts$/, '.mjs'));
  await build({
    entryPoints: [abs],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    plugins: [
      {
        name: 'x-externals',
        setup(b) {
          b.onResolve({ filter: /^vitest$/ }, () => ({ path: shim }));
          b.onResolve({ filter: /^@x\// }, (args) => {
            const [, name, sub] = /^@x\/([^/]+)(?:\/(.+))?$/.exec(args.path);
            const target = join(root, 'packages', name, 'dist', `${sub ?? 'index'}.js`);
            if (!existsSync(target))
              throw new Error(`gpu-bundle: ${target} missing; run pnpm build`);
            return { path: `./${relative(outdir, target)}`, external: true };
          });
          // Tests import their package's sources; route them to the built dist so the package's
          // native-addon loader resolves its own folder.
        },
      },
    ],
  });
  console.log(`gpu-bundle: ${relative(root, outfile)}`);
}
