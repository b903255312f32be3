import { spawnSync, type ChildProcess } from 'node:child_process';
import fc from 'fast-check';
import { initBackend, preparePeerData, silentLogger, type PeerData } from '@dflmoe/core';
import { makeSynthetic, partition, type Dataset } from '@dflmoe/data';
import { startProcess } from '@dflmoe/cli';

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

/** Poll `fn` every 100 ms until it returns something truthy, and return that; throws after `timeoutMs`. */
export async function untilValue<T>(what: string, fn: () => T | undefined | null | false, timeoutMs: number): Promise<T> {
  let v: T | undefined | null | false;
  await until(what, () => Boolean((v = fn())), timeoutMs);
  return v as T;
}

/** The child processes of a multi-process test; call `kill` in `afterEach` so that none outlives its test. */
export function processGroup() {
  let procs: ChildProcess[] = [];
  return {
    /** Run the dflmoe CLI (`startProcess`), logging to `log`, at log level info. */
    start(args: string[], log?: string): ChildProcess {
      const p = startProcess(args, log, { DFLMOE_LOG_LEVEL: 'info' });
      procs.push(p);
      return p;
    },
    kill(): void {
      for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
      procs = [];
    },
  };
}

/** Property tests: a valid message with some bytes flipped, cut, or extended. */
export const mutated = (base: Uint8Array) =>
  fc.oneof(
    fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }).map((flips) => {
      const b = base.slice();
      for (const [i, x] of flips) b[i] ^= x;
      return b;
    }),
    fc.nat(base.length - 1).map((n) => base.slice(0, n)),
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((tail) => Uint8Array.from([...base, ...tail])),
  );
