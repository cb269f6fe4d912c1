import { defineConfig } from 'tsup';

export default defineConfig({
  // The engine core runs in a worker thread whose entry must be its own file (see src/serving).
  entry: { index: 'src/index.ts', 'engine-core-thread': 'src/serving/engine-core-thread.ts' },
  format: ['esm'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
});
