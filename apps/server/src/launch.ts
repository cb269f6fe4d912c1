import { type LaunchOptions, launch } from '@x/comm';
import type { Command } from 'commander';

interface LaunchFlags {
  nprocPerNode: string;
  nnodes: string;
  nodeRank: string;
  masterAddr: string;
  masterPort?: string;
  graceMs: string;
}

function int(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n))
    throw new Error(`Expected an integer for --${name} but received "${v}"`);
  return n;
}

/** Registers `x launch`: one process per rank, torchrun-style environment, rank-prefixed output. */
export function registerLaunch(program: Command): void {
  // Options after the script belong to the script (`x launch --nproc-per-node 2 train.mjs --lr 1`).
  program.enablePositionalOptions();
  program
    .command('launch')
    .description('start one process per rank (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set)')
    .requiredOption('--nproc-per-node <n>', 'ranks on this node')
    .option('--nnodes <m>', 'number of nodes', '1')
    .option('--node-rank <r>', 'this node (0..nnodes-1)', '0')
    .option('--master-addr <addr>', 'rendezvous host (rank 0 serves the store)', '127.0.0.1')
    .option('--master-port <port>', 'rendezvous port (default: free port on one node, else 29500)')
    .option('--grace-ms <ms>', 'SIGTERM→SIGKILL grace when tearing ranks down', '5000')
    .argument('<script>', 'program to run per rank (.js/.mjs with Node, .py with python3)')
    .argument('[args...]', 'arguments for the script')
    .passThroughOptions()
    .action(async (script: string, args: string[], flags: LaunchFlags) => {
      const abort = new AbortController();
      const stop = (): void => abort.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      const options: LaunchOptions = {
        script,
        args,
        nprocPerNode: int('nproc-per-node', flags.nprocPerNode),
        nnodes: int('nnodes', flags.nnodes),
        nodeRank: int('node-rank', flags.nodeRank),
        masterAddr: flags.masterAddr,
        graceMs: int('grace-ms', flags.graceMs),
        signal: abort.signal,
        ...(flags.masterPort !== undefined
          ? { masterPort: int('master-port', flags.masterPort) }
          : {}),
      };
      const result = await launch(options);
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.exitCode = result.exitCode;
    });
}
