/**
 * Start a whole consortium on this machine: one OS process per site on
 * 127.0.0.1 (so both cores work), each from its own generated config file.
 * Used by `dflmoe simulate --transport tcp` and by the tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Interrupted, type AlgorithmName, type AlgorithmResult, type PeerResult, type RoundResult, type SimulationConfig } from '@dflmoe/core';
import { assignedTasks, getAlgorithm, networkBytes, roundHeadlines, siteModality, summarize, summarizeTasks } from '@dflmoe/core/internal';
import { loadDataset, modalityView, partition, type Dataset, type PeerSplit } from '@dflmoe/data';
import { writeShare } from '@dflmoe/data/internal';
import { generateIdentity, loadIdentity, parsePeerConfig, parseServerConfig, saveIdentity, type PeerRunResult, type RoundLine } from '@dflmoe/p2p';
import { siteSettings, writeJsonAtomic } from '@dflmoe/p2p/internal';

/** Lowest port the kernel hands out for outgoing connections (Linux; 32768 elsewhere). */
function ephemeralFloor(): number {
  try {
    const lo = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(lo) && lo > 2048 ? lo : 32768;
  } catch {
    return 32768;
  }
}

const handedOut = new Set<number>();

function tryListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A free TCP port on 127.0.0.1 for a site to listen on later, below the
 * kernel's ephemeral range: a port from that range (what `listen(0)` gives)
 * can be taken by another site's outgoing connection before the site that
 * was given it starts, and with dozens of sites on one machine it was.
 */
export async function freePort(): Promise<number> {
  const hi = ephemeralFloor();
  const lo = Math.max(1025, hi - 12000);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = lo + Math.floor(Math.random() * (hi - lo));
    if (handedOut.has(port)) continue;
    if (await tryListen(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found between ${lo} and ${hi} on 127.0.0.1`);
}

export interface SiteFiles {
  config: string;
  peerId: string;
  port: number;
  out: string;
  /** With `ui`: the port of the site's live view on 127.0.0.1. */
  uiPort?: number;
}

export interface ConsortiumFiles {
  sites: SiteFiles[];
  server?: SiteFiles;
}

export interface ConsortiumOptions {
  dir: string;
  algorithm: AlgorithmName;
  sim: SimulationConfig;
  deadlineMs?: number;
  /** Sites: fresh messages to wait for each round (default: all other members). */
  quorum?: number;
  /** Server algorithms: uploads the server needs at the deadline (default: all clients). */
  serverQuorum?: number;
  lingerMs?: number;
  maxHeadBytes?: number;
  /** Added to `sim.datasetOptions`. */
  datasetOptions?: SimulationConfig['datasetOptions'];
  /** Every site serves its live view on 127.0.0.1 (`ui.listen`; `simulate --ui` follows them). */
  ui?: boolean;
  /** How long a site waits for the others' summaries before round 1 (default: the site config's, 120 s). */
  preprocessDeadlineMs?: number;
  /**
   * The dataset and the sites' splits to write the shares from (default:
   * `sim.dataset` loaded and partitioned as the in-memory simulator does).
   */
  shares?: { dataset: Dataset; splits: PeerSplit[] };
}

/** The file name of site `i`'s share of the dataset. */
const shareName = (i: number) => `site-${i}.share`;

/**
 * Write each site's share of the dataset to `<dir>/site-<i>.share`, so that
 * a site process reads only its own rows (the files' names, in site order).
 */
export function writeShares(dir: string, sim: SimulationConfig, shares?: ConsortiumOptions['shares']): string[] {
  const ds = shares?.dataset ?? loadDataset(sim.dataset, { seed: sim.seed, ...sim.datasetOptions });
  const splits =
    shares?.splits ??
    partition(ds.labels, ds.classNames.length, sim.peers, sim.partition, { seed: sim.seed, testFraction: sim.testFraction, minSize: sim.minSize });
  if (splits.length !== sim.peers) throw new Error(`${splits.length} splits for ${sim.peers} sites`);
  return splits.map((split, i) => {
    const file = shareName(i);
    // A multi-task dataset: the site's share holds the label columns of its own tasks only.
    const tasks = ds.tasks ? { ...ds, tasks: assignedTasks(ds, sim, i).map((t) => ds.tasks!.find((c) => c.name === t) ?? unknownTask(ds, t, i)) } : ds;
    // Sites with modalities: the share holds the site's rows in its form (images, or a table of their pixels).
    const form = siteModality(sim.siteModalities, i);
    const own = form ? modalityView(tasks, form) : tasks;
    writeShare(join(dir, file), own, split, { dataset: sim.dataset, peers: sim.peers, index: i, partition: sim.partition, seed: sim.seed });
    return file;
  });
}

/** Throws: site `i`'s task `t` is not one of the multi-task `ds`'s. */
function unknownTask(ds: Dataset, t: string, i: number): never {
  throw new Error(`site ${i}'s task "${t}" is not a task of ${ds.name}; its tasks are ${ds.tasks!.map((c) => c.name).join(', ')}`);
}

/** Write keys and one config per site (and the server's, for server algorithms) into `dir`. */
export async function writeConsortium(o: ConsortiumOptions): Promise<ConsortiumFiles> {
  mkdirSync(o.dir, { recursive: true });
  const alg = getAlgorithm(o.algorithm);
  const n = o.sim.peers;
  // A site's identity lives in the directory: written into again (a rerun), the sites keep theirs, so that
  // they resume from their own checkpoints and their audit trails stay signed by one key.
  const make = async (name: string): Promise<SiteFiles> => {
    const key = join(o.dir, `${name}.key`);
    const id = existsSync(key) ? loadIdentity(key) : await generateIdentity();
    if (!existsSync(key)) saveIdentity(key, id.privateKey, true);
    return { config: join(o.dir, `${name}.json`), peerId: id.peerId, port: await freePort(), out: join(o.dir, name) };
  };
  const sites: SiteFiles[] = [];
  for (let i = 0; i < n; i++) sites.push(await make(`site-${i}`));
  if (o.ui) for (const s of sites) s.uiPort = await freePort();
  const server = alg.network === 'server' ? await make('server') : undefined;
  const addr = (s: SiteFiles) => `/ip4/127.0.0.1/tcp/${s.port}`;
  const sim: SimulationConfig = { ...o.sim, datasetOptions: { ...o.sim.datasetOptions, ...o.datasetOptions } };
  // Data, model, training and algorithm settings come from the one mapping of simulation options (siteSettings)...
  const settings = sites.map((_, i) => siteSettings(sim, i, o.algorithm));
  // ...and each site reads only its own share of the dataset (written once the directory is known to take this run).
  const shares = sites.map((_, i) => shareName(i));
  const configs: { file: SiteFiles; cfg: Record<string, unknown> }[] = sites.map((s, i) => {
    const cfg = {
      name: `site-${i}`,
      key: `site-${i}.key`,
      listen: [addr(s)],
      members: sites.map((m, j) => ({ peerId: m.peerId, addrs: [addr(m)], name: `site-${j}` })),
      algorithm: o.algorithm,
      ...(server ? { server: { peerId: server.peerId, addrs: [addr(server)], name: 'server' } } : {}),
      ...settings[i],
      data: { ...settings[i].data, simulate: { ...settings[i].data.simulate, share: shares[i] } },
      ...(o.preprocessDeadlineMs !== undefined ? { preprocess: { deadlineMs: o.preprocessDeadlineMs } } : {}),
      round: { ...settings[i].round, deadlineMs: o.deadlineMs ?? 60000, ...(o.quorum !== undefined ? { quorum: o.quorum } : {}) },
      ...(o.maxHeadBytes !== undefined ? { limits: { maxHeadBytes: o.maxHeadBytes } } : {}),
      lingerMs: o.lingerMs ?? 3000,
      ...(s.uiPort !== undefined ? { ui: { listen: `127.0.0.1:${s.uiPort}` } } : {}),
      out: `site-${i}`,
    };
    parsePeerConfig(cfg, s.config, o.dir);
    return { file: s, cfg };
  });
  if (server) {
    const cfg = {
      name: 'server',
      algorithm: o.algorithm,
      key: 'server.key',
      listen: [addr(server)],
      clients: sites.map((m, j) => ({ peerId: m.peerId, addrs: [addr(m)], name: `site-${j}` })),
      rounds: o.sim.rounds,
      round: { deadlineMs: o.deadlineMs ?? 60000, ...(o.serverQuorum !== undefined ? { quorum: o.serverQuorum } : {}) },
      lingerMs: o.lingerMs ?? 3000,
      out: 'server',
    };
    parseServerConfig(cfg, server.config, o.dir);
    configs.push({ file: server, cfg });
  }
  // Sites with output of an earlier run resume from it: only with the settings it had.
  for (const { file, cfg } of configs) {
    if (!existsSync(file.out) || !existsSync(file.config)) continue;
    const changed = changedSettings(JSON.parse(readFileSync(file.config, 'utf8')) as Record<string, unknown>, cfg);
    if (changed.length > 0) {
      throw new Error(`${o.dir} holds an earlier run with other settings (${changed.join(', ')}); rerun with --fresh to start over, or pick another --out`);
    }
  }
  writeShares(o.dir, sim, o.shares);
  for (const { file, cfg } of configs) writeFileSync(file.config, JSON.stringify(cfg, null, 2) + '\n');
  return { sites, server };
}

/** A config without what changes from run to run (listen ports, members' addresses, the live view). */
function settingsOf(cfg: Record<string, unknown>): Record<string, unknown> {
  const noAddrs = (ms: unknown) => (Array.isArray(ms) ? ms.map((m: Record<string, unknown>) => ({ ...m, addrs: undefined })) : ms);
  const { listen: _listen, ui: _ui, ...rest } = cfg;
  return JSON.parse(
    JSON.stringify({
      ...rest,
      members: noAddrs(cfg.members),
      clients: noAddrs(cfg.clients),
      ...(cfg.server ? { server: { ...(cfg.server as Record<string, unknown>), addrs: undefined } } : {}),
    }),
  ) as Record<string, unknown>;
}

/** The top-level settings in which two configs of a site differ. */
function changedSettings(before: Record<string, unknown>, after: Record<string, unknown>): string[] {
  const [a, b] = [settingsOf(before), settingsOf(after)];
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
}

/** What a run directory of `simulate --transport tcp` keeps between its parts (interrupted, then run again). */
interface RunRecord {
  /** Seconds the earlier parts took. */
  seconds: number;
}

const RUN_FILE = 'run.json';

/** Seconds the earlier parts of the run in `dir` took (0 for a new run). */
export function earlierRunSeconds(dir: string): number {
  try {
    const r = JSON.parse(readFileSync(join(dir, RUN_FILE), 'utf8')) as RunRecord;
    return Number.isFinite(r.seconds) ? r.seconds : 0;
  } catch {
    return 0;
  }
}

/** Record that the run in `dir` has taken `seconds` so far (all its parts). */
export function recordRunSeconds(dir: string, seconds: number): void {
  writeJsonAtomic(join(dir, RUN_FILE), { seconds } satisfies RunRecord);
}

/** The command line that runs this CLI (source through tsx in development, else the built file). */
function cliArgs(): string[] {
  // `npm test` builds every package before the tests and sets DFLMOE_TEST_BUILT=1: the processes the tests start then run
  // the built code, which starts without compiling TypeScript (about half a second less per process).
  if (process.env.DFLMOE_TEST_BUILT === '1') return [fileURLToPath(new URL('../dist/main.js', import.meta.url))];
  const self = fileURLToPath(import.meta.url);
  const main = fileURLToPath(new URL(`./main${extname(self)}`, import.meta.url));
  return [...process.execArgv, main];
}

export function startProcess(args: string[], logFile?: string, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(process.execPath, [...cliArgs(), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DFLMOE_LOG_LEVEL: process.env.DFLMOE_LOG_LEVEL ?? 'info', ...env },
  });
  if (logFile) {
    // Appended as it comes (a restarted process adds to its log).
    const out = createWriteStream(logFile, { flags: 'a' });
    let open = 2;
    const end = () => --open === 0 && out.end();
    for (const s of [child.stdout!, child.stderr!]) {
      s.on('data', (d: Buffer) => out.write(d));
      s.once('end', end);
    }
  } else {
    child.stdout!.resume();
    child.stderr!.resume();
  }
  return child;
}

export function waitExit(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    const t = setTimeout(() => {
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

/**
 * Run every site (and the server) as its own process and wait for all of them.
 * When `signal` aborts (Ctrl-C), every process is asked to stop (SIGTERM: each
 * saves what it has and exits), and this throws `Interrupted` once they have.
 */
export async function runConsortium(
  files: ConsortiumFiles,
  timeoutMs: number,
  onRound?: (site: number, line: RoundLine) => void,
  signal?: AbortSignal,
): Promise<void> {
  const procs: { name: string; log: string; child: ChildProcess }[] = [];
  const launch = (name: string, args: string[], out: string) => procs.push({ name, log: `${out}.log`, child: startProcess(args, `${out}.log`) });
  if (files.server) launch('server', ['server', '--config', files.server.config], files.server.out);
  files.sites.forEach((s, i) => launch(`site-${i}`, ['peer', '--config', s.config], s.out));
  // Progress from the sites' round records (metrics.jsonl), the file every reader of a site reads.
  const follow = onRound
    ? followRounds(
        files.sites.map((s) => join(s.out, 'metrics.jsonl')),
        onRound,
      )
    : undefined;
  try {
    await waitConsortium(files, procs, timeoutMs, signal);
  } finally {
    follow?.stop();
  }
}

/**
 * Follow the `metrics.jsonl` of each site (by index), calling `onRound` once
 * per site and round as its line appears; a file rewritten (a resumed run
 * keeps the lines its checkpoint covers) is read again, rounds already
 * reported skipped. Polls every `intervalMs` until `stop()`, which reads
 * what came last.
 */
export function followRounds(files: string[], onRound: (site: number, line: RoundLine) => void, intervalMs = 250): { stop(): void } {
  const state = files.map(() => ({ offset: 0, last: 0 }));
  const poll = () =>
    files.forEach((f, i) => {
      const st = state[i];
      const size = existsSync(f) ? statSync(f).size : 0;
      if (size < st.offset) st.offset = 0;
      if (size === st.offset) return;
      const text = readFileSync(f).subarray(st.offset).toString('utf8');
      const complete = text.slice(0, text.lastIndexOf('\n') + 1);
      st.offset += Buffer.byteLength(complete);
      for (const l of complete.split('\n')) {
        if (!l) continue;
        let line: RoundLine;
        try {
          line = JSON.parse(l) as RoundLine;
        } catch {
          continue;
        }
        if (Number.isInteger(line.round) && line.round > st.last) {
          st.last = line.round;
          onRound(i, line);
        }
      }
    });
  const timer = setInterval(poll, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      poll();
    },
  };
}

async function waitConsortium(
  files: ConsortiumFiles,
  procs: { name: string; log: string; child: ChildProcess }[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  // A site that fails makes the comparison void, and the others (and the server) would wait out their deadlines for it:
  // the first failure stops every process still running.
  let stopping = false;
  const stopAll = () => {
    if (stopping) return;
    stopping = true;
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  };
  const interrupt = () => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
  };
  signal?.addEventListener('abort', interrupt, { once: true });
  if (signal?.aborted) interrupt();
  const sites = procs.filter((p) => p.name !== 'server');
  const siteCodes = await Promise.all(
    sites.map(async (p) => {
      const code = await waitExit(p.child, timeoutMs);
      if (code !== 0 && !stopping && !signal?.aborted) stopAll();
      return code;
    }),
  );
  // The server ends by itself after the last round.
  const server = procs.find((p) => p.name === 'server');
  const serverCode = server ? await waitExit(server.child, stopping || signal?.aborted ? 5000 : 60000) : 0;
  signal?.removeEventListener('abort', interrupt);
  if (signal?.aborted) throw new Interrupted();
  const codes = [...(server ? [serverCode] : []), ...siteCodes];
  // What a failed process said last about its error, so the cause shows without opening the logs.
  const why = (f: string) => {
    const line = existsSync(f)
      ? readFileSync(f, 'utf8')
          .split('\n')
          .reverse()
          .find((l) => /error/i.test(l))
      : undefined;
    return line ? `: ${line.trim()}` : '';
  };
  // The processes stopped because another failed are not failures of their own.
  const failed = procs.flatMap((p, i) => (codes[i] !== 0 && codes[i] !== null ? [`${p.name} (exit ${codes[i]})${why(p.log)}`] : []));
  if (!failed.length && codes.some((c) => c !== 0))
    failed.push(
      `${procs
        .filter((_, i) => codes[i] !== 0)
        .map((p) => p.name)
        .join(', ')} (killed at the time limit)`,
    );
  if (failed.length) throw new Error(`consortium processes failed: ${failed.join('; ')}; see the .log files in ${join(files.sites[0].out, '..')}`);
}

/**
 * Mean gate weight per expert, own head included: a site's metrics list the
 * received experts; the gate's weights sum to one, so the own head has the rest.
 */
export function gateWeightsOf(r: Pick<PeerRunResult, 'name' | 'peerId' | 'rounds'>): Record<string, number> {
  const experts = r.rounds.at(-1)?.experts ?? [];
  const received = experts.map((e) => [e.name ?? e.peer, e.gateWeight] as const);
  const own = Math.max(0, 1 - received.reduce((a, [, w]) => a + w, 0));
  return Object.fromEntries([[r.name ?? r.peerId, own], ...received]);
}

/**
 * One round over the sites of a consortium, from their round records: the
 * accuracy across sites, the mean loss, the bytes moved since the round
 * before (`earlier`: the rounds before, in order) and the slowest site's seconds.
 */
export function consortiumRound(alg: AlgorithmName, round: number, lines: RoundLine[], earlier: readonly RoundResult[]): RoundResult {
  const accs = lines.map((l) => l.accuracy);
  const s = summarize(accs);
  const before = earlier.reduce((a, r) => a + r.bytesSent, 0);
  return {
    round,
    accuracyMean: s.mean,
    accuracyStd: s.std,
    accuracyMin: s.min,
    peerAccuracy: accs,
    tasks: roundHeadlines(lines),
    loss: lines.reduce((a, l) => a + l.loss, 0) / lines.length,
    bytesSent: networkBytes(getAlgorithm(alg), lines) - before,
    seconds: Math.max(...lines.map((l) => l.seconds)),
  };
}

/** Collect the sites' results.json into the simulator's result shape. */
export function collectResults(
  alg: AlgorithmName,
  files: { sites: { out: string }[]; server?: { out: string } },
  wallSeconds: number,
  bodies: string[],
  settings: AlgorithmResult['settings'],
): AlgorithmResult {
  const res: PeerRunResult[] = files.sites.map((s) => {
    const f = join(s.out, 'results.json');
    if (!existsSync(f)) throw new Error(`${f} is missing: the site did not finish`);
    return JSON.parse(readFileSync(f, 'utf8')) as PeerRunResult;
  });
  const server = files.server ? (JSON.parse(readFileSync(join(files.server.out, 'results.json'), 'utf8')) as { bytesIn: number; bytesOut: number }) : undefined;
  const peers: PeerResult[] = res.map((r, i) => {
    const last = r.rounds.at(-1);
    return {
      id: r.name ?? r.peerId,
      accuracy: r.accuracy,
      ownHeadAccuracy: r.ownHeadAccuracy,
      bytesSent: r.bytesSent,
      bytesReceived: r.bytesReceived,
      trainSamples: r.trainSamples,
      testSamples: r.testSamples,
      body: bodies[i % bodies.length],
      tasks: r.tasks,
      ...(r.bodyBytesSent !== undefined ? { bodyBytesSent: r.bodyBytesSent, bodyBytesReceived: r.bodyBytesReceived } : {}),
      // A cross-task site's reliance on the other tasks, as the simulator reports it; else the gate's weights of its last round.
      ...(r.gateWeights ? { gateWeights: r.gateWeights } : last?.experts.length ? { gateWeights: gateWeightsOf(r) } : {}),
      ...(r.modality ? { modality: r.modality } : {}),
      // With DP-SGD: the privacy a site spent, as its last round reported it (the simulator's figure, from the same accountant).
      ...(last?.privacy ? { privacy: last.privacy } : {}),
    };
  });
  const nRounds = Math.max(...res.map((r) => r.rounds.length));
  const rounds: RoundResult[] = [];
  for (let k = 0; k < nRounds; k++) rounds.push(consortiumRound(alg, k + 1, res.map((r) => r.rounds[k]).filter(Boolean), rounds));
  // Server algorithms: what the server sent (it may differ from what the sites counted if a site missed a round).
  const bytesSent = peers.reduce((a, p) => a + p.bytesSent, 0) + (server?.bytesOut ?? 0);
  return {
    settings,
    accuracy: summarize(
      peers.map((p) => p.accuracy),
      peers.map((p) => p.testSamples),
    ),
    tasks: summarizeTasks(peers),
    bytesSent,
    wallSeconds,
    peers,
    rounds,
    ...(peers.some((p) => p.bodyBytesSent !== undefined) ? { bodyBytesSent: peers.reduce((a, p) => a + (p.bodyBytesSent ?? 0), 0) } : {}),
  };
}
