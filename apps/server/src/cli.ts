import { createRequire } from 'node:module';
import { Command } from 'commander';
import { collectInfo, formatInfo } from './info.js';
import { registerLaunch } from './launch.js';

// dist/cli.js → ../package.json is this package's manifest, which npm always ships.
const { version: cliVersion } = createRequire(import.meta.url)('../package.json') as {
  version: string;
};

const program = new Command()
  .name('x')
  .description('x: an LLM inference engine in TypeScript')
  .version(cliVersion)
  .showHelpAfterError('(run `x --help` to see the commands)')
  .showSuggestionAfterError();

program
  .command('info')
  .description('show the build (CUDA kernels, architectures), the CUDA driver and the devices')
  .option('--json', 'print one JSON object {build, driver, devices}')
  .action(async (options: { json?: boolean }) => {
    const { coreVersion, report } = await collectInfo();
    const text = options.json
      ? JSON.stringify(report, null, 2)
      : formatInfo(report, cliVersion, coreVersion);
    process.stdout.write(`${text}\n`);
  });

registerLaunch(program);
(await import('./generate.js')).registerGenerate(program);
(await import('./serve.js')).registerServe(program);
(await import('./bench-serve.js')).registerBenchServe(program);

try {
  await program.parseAsync();
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`x: ${message}\n`);
  process.exitCode = 1;
}
