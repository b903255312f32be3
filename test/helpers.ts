import { spawnSync } from 'node:child_process';
import { initBackend, preparePeerData, silentLogger, type PeerData } from '@dflmoe/core';
import { makeSynthetic, partition, type Dataset } from '@dflmoe/data';

/** Activate the process's compute backend (wasm here) quietly. */
export async function backend(): Promise<string> {
  process.env.DFLMOE_LOG_LEVEL ??= 'warn';
  return (await initBackend({ logger: silentLogger })).name;
}

export function tinyDataset(seed = 1, samples = 240): Dataset {
  return makeSynthetic({ classes: 4, dim: 8, samples, seed, separation: 1.5 });
}

export function tinyPeers(n: number, seed = 1): { ds: Dataset; datas: PeerData[] } {
  const ds = tinyDataset(seed);
  const splits = partition(ds.labels, 4, n, 'iid', { seed });
  return { ds, datas: splits.map((s) => preparePeerData(ds, s)) };
}

/** Run the dflmoe CLI from source. */
export function cli(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', '--conditions=development', 'packages/cli/src/main.ts', ...args], {
    encoding: 'utf8',
    timeout: 120000,
    env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' },
  });
}

/** Poll `fn` every 100 ms until it is true; throws after `timeoutMs`. */
export async function until(what: string, fn: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!fn()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
