#!/usr/bin/env node
// Bundles @x/engine's GPU checks and benchmark for the GPU machine (Node alone, no node_modules):
//   node packages/engine/test/gpu/bundle.mjs
// Entries import the engine's TypeScript sources, which are bundled in; the native packages
// (@x/core, @x/cumem, @x/kernels) and @x/scheduler stay external, pointing at packages/<pkg>/dist
// by relative path so each finds its own addon. Output: packages/engine/dist-gpu/<name>.mjs.
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const engine = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const root = resolve(engine, '..', '..');
const outdir = join(engine, 'dist-gpu');
const entries = [
  'test/gpu/fixtures.gpu.mjs',
  'test/gpu/graphs.gpu.mjs',
  'test/gpu/forward.sanitize.mjs',
  ['bench/gpu.mjs', 'bench-gpu.mjs'],
];

for (const e of entries) {
  const [src, name] = Array.isArray(e) ? e : [e, basename(e)];
  const outfile = join(outdir, name);
  await build({
    entryPoints: [join(engine, src)],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
    plugins: [
      {
        name: 'x-gpu-externals',
        setup(b) {
          b.onResolve({ filter: /^@x\// }, (args) => {
            const [, pkg, sub] = /^@x\/([^/]+)(?:\/(.+))?$/.exec(args.path);
            const target = join(root, 'packages', pkg, 'dist', `${sub ?? 'index'}.js`);
            if (!existsSync(target)) throw new Error(`bundle: ${target} missing; build ${pkg}`);
            return { path: `./${relative(outdir, target)}`, external: true };
          });
          // The GPU machine has no node_modules: a check must not pull in a third-party package.
          b.onResolve({ filter: /^[^./]/ }, (args) => {
            if (args.path.startsWith('node:') || !args.importer.includes('/packages/')) return;
            const builtin =
              /^(fs|path|url|os|crypto|child_process|worker_threads|util|events|stream|module|assert)(\/|$)/;
            if (builtin.test(args.path)) return { path: args.path, external: true };
            throw new Error(
              `bundle: ${args.importer} imports ${args.path}, absent on the GPU machine`,
            );
          });
        },
      },
    ],
  });
  console.log(`bundle: ${relative(root, outfile)}`);
}

// The `x` CLI for `x generate --device cuda` on the GPU machine: everything bundled but the native
// packages (external, as above) and the `tokenizers` addon, whose Linux x64 build is copied next to
// the bundle (dist-gpu/node_modules/tokenizers).
{
  const natives = new Set(['core', 'cumem', 'kernels', 'comm']);
  // `x serve` starts its engine core from ./engine-core-thread.js beside the bundle (the URL
  // EngineClient builds from import.meta.url), so the thread entry is bundled next to cli.mjs.
  const cliEntries = [
    [join(root, 'apps/server/src/cli.ts'), 'cli.mjs'],
    [join(engine, 'src/serving/engine-core-thread.ts'), 'engine-core-thread.js'],
  ];
  for (const [entry, name] of cliEntries) {
    await build({
      entryPoints: [entry],
      outfile: join(outdir, name),
      bundle: true,
      minify: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      logLevel: 'warning',
      banner: {
        js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
      },
      external: ['tokenizers'],
      plugins: [
        {
          name: 'x-native-externals',
          setup(b) {
            b.onResolve({ filter: /^@x\// }, (args) => {
              const [, pkg, sub] = /^@x\/([^/]+)(?:\/(.+))?$/.exec(args.path);
              if (!natives.has(pkg)) return undefined;
              const target = join(root, 'packages', pkg, 'dist', `${sub ?? 'index'}.js`);
              return { path: `./${relative(outdir, target)}`, external: true };
            });
          },
        },
      ],
    });
  }
  const outfile = join(outdir, 'cli.mjs');
  const tk = join(outdir, 'node_modules', 'tokenizers');
  const from = dirname(createRequire(join(engine, 'package.json')).resolve('tokenizers'));
  mkdirSync(tk, { recursive: true });
  for (const f of ['index.js', 'package.json', 'tokenizers.linux-x64-gnu.node']) {
    copyFileSync(join(from, f), join(tk, f));
  }
  console.log(`bundle: ${relative(root, outfile)} (+ node_modules/tokenizers)`);
}
