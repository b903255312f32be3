import { spawn, spawnSync, type ChildProcess, type SpawnSyncOptions, type SpawnSyncReturns } from 'node:child_process';
import fc from 'fast-check';
import { initBackend, preparePeerData, silentLogger, type PeerData } from '@dflmoe/core/internal';
import { makeSynthetic, partition, type Dataset } from '@dflmoe/data/internal';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SIMULATION, type SimulationConfig } from '@dflmoe/core';
import { startProcess, waitExit, writeConsortium, type ConsortiumFiles, type SiteFiles } from '@dflmoe/cli/internal';
import { readJsonLines, type RoundLine } from '@dflmoe/p2p/internal';

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

/**
 * How to start the dflmoe CLI: from source through tsx, or, under `npm test`
 * (which builds every package first and sets DFLMOE_TEST_BUILT=1), the
 * built code, which starts faster.
 */
export function cliCommand(): string[] {
  return process.env.DFLMOE_TEST_BUILT === '1' ? ['packages/cli/dist/main.js'] : ['--import', 'tsx', '--conditions=development', 'packages/cli/src/main.ts'];
}

/** Run the dflmoe CLI (see `cliCommand`). */
export function cli(args: string[]) {
  return spawnSync(process.execPath, [...cliCommand(), ...args], {
    encoding: 'utf8',
    timeout: 120000,
    env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' },
  });
}

/** What `cli` returns, for a run that `cliAsync` made. */
export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Run the dflmoe CLI as `cli` does, without blocking: independent runs of one
 * test can go at once (`Promise.all`). The same environment and timeout.
 */
export function cliAsync(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [...cliCommand(), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGTERM'), 120000);
    p.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

let helpOfSimulate: CliResult | undefined;
/** `dflmoe simulate --help`, run once per test process (several tests read it). */
export function simulateHelp(): CliResult {
  return (helpOfSimulate ??= cli(['simulate', '--help']));
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

/**
 * A 4-site dFLMoE consortium on breast-cancer (8 rounds, 20 s deadline) for
 * the reach tests: write it, let `edit` change each site's config, run every
 * site as a process of `procs`, check that each exits cleanly and ran every
 * round once with all 3 others as experts from round `from` on (fresh at the
 * end); returns the files and the sites' logs.
 */
export async function runFourSites(
  procs: ReturnType<typeof processGroup>,
  name: string,
  seed: number,
  edit: (cfg: SiteConfigJson, site: SiteFiles, files: ConsortiumFiles) => void,
  from = 1,
): Promise<{ files: ConsortiumFiles; logs: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), `dflmoe-${name}-`));
  const sim: SimulationConfig = {
    ...DEFAULT_SIMULATION,
    dataset: 'breast-cancer',
    peers: 4,
    rounds: 8,
    partition: 'dirichlet:0.5',
    seed,
    algorithms: ['dflmoe'],
  };
  const files = await writeConsortium({ dir, algorithm: 'dflmoe', sim, deadlineMs: 20000, lingerMs: 3000 });
  for (const s of files.sites) {
    const c = JSON.parse(readFileSync(s.config, 'utf8')) as SiteConfigJson;
    edit(c, s, files);
    writeFileSync(s.config, JSON.stringify(c, null, 2));
  }
  const ps = files.sites.map((s) => procs.start(['peer', '--config', s.config], `${s.out}.log`));
  assert.deepEqual(await Promise.all(ps.map((p) => waitExit(p, 240000))), [0, 0, 0, 0], 'every site exits cleanly');
  for (const s of files.sites) {
    const ls = readJsonLines<RoundLine>(join(s.out, 'metrics.jsonl'));
    assert.deepEqual(
      ls.map((l) => l.round),
      [1, 2, 3, 4, 5, 6, 7, 8],
      `rounds of ${s.out}`,
    );
    const others = files.sites
      .filter((o) => o !== s)
      .map((o) => o.peerId)
      .sort();
    for (const l of ls.slice(from - 1)) assert.deepEqual(l.experts.map((e) => e.peer).sort(), others, `${s.out} round ${l.round}: experts`);
    assert.ok(
      ls.at(-1)!.experts.every((e) => e.version >= 7),
      'fresh experts at the end',
    );
    assert.ok(ls.at(-1)!.accuracy > 0.8);
  }
  return { files, logs: files.sites.map((s) => readFileSync(`${s.out}.log`, 'utf8')) };
}

/** The parts of a site config the reach tests change. */
export interface SiteConfigJson {
  listen: string[];
  relay?: unknown;
  discovery?: unknown;
  members: { peerId: string; addrs?: string[]; name?: string }[];
}

/** The share of the most common class: the accuracy of always answering it (the bound a model must beat). */
export function majorityRate(labels: ArrayLike<number | string>): number {
  const counts = new Map<number | string, number>();
  for (let i = 0; i < labels.length; i++) counts.set(labels[i], (counts.get(labels[i]) ?? 0) + 1);
  return Math.max(...counts.values()) / labels.length;
}

/**
 * A network namespace of the test's own (`ip netns`, needs root and iproute2):
 * its loopback up, then `setup` run in it (each an `ip` command's arguments).
 * Nothing sent inside it leaves it. Undefined when it cannot be made: the
 * reason is printed, so that a skipped test says why it was skipped.
 */
export function testNamespace(
  prefix: string,
  setup: string[][] = [],
): { name: string; run(args: string[], o?: SpawnSyncOptions): SpawnSyncReturns<string>; remove(): void } | undefined {
  const name = `${prefix}-${process.pid}`;
  const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' });
  const made = ip('netns', 'add', name);
  if (made.status !== 0) {
    const why = made.error ? made.error.message : made.stderr.trim();
    process.stdout.write(`      skipped: a network namespace needs root and iproute2 (ip netns add: ${why}); run as root to include this test\n`);
    return undefined;
  }
  for (const a of [['link', 'set', 'lo', 'up'], ...setup]) {
    const r = ip('netns', 'exec', name, 'ip', ...a);
    if (r.status !== 0) {
      ip('netns', 'del', name);
      throw new Error(`ip ${a.join(' ')} in the namespace: ${r.stderr}`);
    }
  }
  return {
    name,
    run: (args, o = {}) => spawnSync('ip', ['netns', 'exec', name, ...args], { encoding: 'utf8', ...o }) as SpawnSyncReturns<string>,
    remove: () => void ip('netns', 'del', name),
  };
}
