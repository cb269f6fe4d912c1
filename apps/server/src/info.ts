import { formatBytes, formatTable } from './table.js';

type Core = typeof import('@x/core');

/** What `x info --json` prints: one object, stable keys. */
export interface InfoReport {
  build: ReturnType<Core['buildInfo']>;
  driver: ReturnType<Core['cudaStatus']>;
  devices: ReturnType<Core['devices']>;
}

/** Collects build, driver and device facts from `@x/core`. */
export async function collectInfo(): Promise<{ coreVersion: string; report: InfoReport }> {
  // Imported lazily so `x --help` and usage errors work even when the native addon cannot load.
  const core: Core = await import('@x/core');
  return {
    coreVersion: core.version,
    report: { build: core.buildInfo(), driver: core.cudaStatus(), devices: core.devices() },
  };
}

/** Renders the report as small aligned tables for a terminal. */
export function formatInfo(report: InfoReport, cliVersion: string, coreVersion: string): string {
  const { build, driver, devices } = report;
  const archs =
    build.cudaArchitectures.length > 0 ? ` (${build.cudaArchitectures.join(', ')})` : '';
  const buildRows = [
    ['cuda kernels', build.cudaKernels ? `yes${archs}` : 'no (CPU-only build)'],
    ['node-api', String(build.napiVersion)],
    ['core C API', String(build.capiVersion)],
    ['compiler', build.compiler],
    ['addon', build.addonPath],
  ];
  const driverRows = driver.available
    ? [
        ['available', 'yes'],
        ['version', driver.driverVersion ?? 'unknown'],
        ['library', driver.library ?? 'unknown'],
      ]
    : [
        ['available', 'no'],
        ['reason', driver.reason ?? 'unknown'],
      ];
  const deviceRows = [
    ['DEVICE', 'NAME', 'FREE', 'TOTAL', 'CC', 'SMS'],
    ...devices.map((d) => [
      d.device,
      d.name,
      formatBytes(d.freeBytes),
      formatBytes(d.totalBytes),
      d.computeCapability ?? '-',
      d.multiprocessors === undefined ? '-' : String(d.multiprocessors),
    ]),
  ];
  return [
    `x ${cliVersion} (@x/core ${coreVersion})`,
    '',
    'build',
    formatTable(buildRows, '  '),
    '',
    'driver',
    formatTable(driverRows, '  '),
    '',
    'devices',
    formatTable(deviceRows, '  '),
  ].join('\n');
}
