import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { NativeLoadError } from './errors.js';

/** How a package finds its native addon. */
export interface LoadNativeAddonOptions {
  /** npm name, for messages: "@x/core". */
  packageName: string;
  /** File name without extension: "x_core". */
  addonName: string;
  /** Environment variable holding an explicit path: "X_CORE_NATIVE". */
  envVar: string;
  /** The package root (the folder holding package.json). */
  packageRoot: string;
}

/** The path a native addon was loaded from, with the module itself. */
export interface LoadedAddon<T> {
  path: string;
  addon: T;
}

/**
 * The one loader every native x package uses. Order: explicit path (env var) → local build
 * (build/Release) → prebuilt (prebuilds/<platform>-<arch>) → NativeLoadError listing what it tried.
 */
export function loadNativeAddon<T>(options: LoadNativeAddonOptions): LoadedAddon<T> {
  const require = createRequire(join(options.packageRoot, 'package.json'));
  const file = `${options.addonName}.node`;
  const candidates: string[] = [];
  const explicit = process.env[options.envVar];
  if (explicit) candidates.push(explicit);
  candidates.push(join(options.packageRoot, 'build', 'Release', file));
  candidates.push(
    join(options.packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, file),
  );

  const tried: Array<{ path: string; error: string }> = [];
  for (const path of candidates) {
    if (!existsSync(path)) {
      tried.push({ path, error: 'not found' });
      if (path === explicit) break; // an explicit path that is wrong must not be silently ignored
      continue;
    }
    try {
      return { path, addon: require(path) as T };
    } catch (err) {
      tried.push({ path, error: (err as Error).message.split('\n')[0] ?? String(err) });
      if (path === explicit) break;
    }
  }
  throw new NativeLoadError(options.packageName, tried, [
    explicit
      ? `${options.envVar}=${explicit} is set: point it at a built ${file} or unset it`
      : `set ${options.envVar} to the path of a built ${file}`,
    `build from source in the x repository: pnpm install && pnpm build (needs cmake, a C++20 compiler; nvcc optional)`,
    `prebuilt binaries ship for linux-x64 (glibc) only; this is ${process.platform}-${process.arch}`,
  ]);
}
