/**
 * Chaos soak driver, shared by `npm run bench:chaos` and test/chaos.test.ts.
 *
 * A consortium over TCP on 127.0.0.1 (one process per site): the last site
 * is a hostile member (test/fixtures/hostile-peer.ts for dFLMoE,
 * hostile-fedavg-client.ts for FedAvg) that sends bad data all along; a
 * stranger (a key that is not a member) dials every site and writes
 * garbage to every port; a driver kills an honest site with SIGKILL every
 * few rounds and restarts it at once (FedAvg: the server too, once). The
 * same consortium runs once undisturbed (honest sites only) with the same
 * seed. Afterwards it checks: every honest site's metrics.jsonl holds each
 * round exactly once, no process hung or crashed, every restarted process
 * resumed from its checkpoint, every audit trail verifies, and the honest
 * sites' final mean accuracy is within `tolerance` of the undisturbed run.
 * Every wait is bounded; every process is killed at the end whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_SIMULATION, type SimulationConfig } from '@dflmoe/core';
import { Rng } from '@dflmoe/data/internal';
import { startProcess, waitExit, writeConsortium, type ConsortiumFiles, type SiteFiles } from '@dflmoe/cli/internal';
import { AUDIT_FILE, createSiteNode, generateIdentity, readJsonLines, verifyAudit, type RoundLine, type ServerRoundLine } from '@dflmoe/p2p/internal';
import { multiaddr } from '@multiformats/multiaddr';

export interface ChaosOptions {
  algorithm: 'dflmoe' | 'fedavg';
  dir: string;
  /** Sites in all, the hostile one included. */
  sites: number;
  rounds: number;
  sim: Partial<SimulationConfig> & { dataset: string };
  /** Kill a random honest site whenever the slowest running honest site has finished another this many rounds. */
  killEvery: number;
  deadlineMs: number;
  /** Everything must be over by then (per run). */
  timeoutMs: number;
  /** Seed of the driver's choices (which site to kill). */
  seed?: number;
  /** Classes of the dataset (the hostile member makes heads of this shape). */
  classes: number;
  /** Accuracy difference allowed, as a fraction (0.01: one point). */
  tolerance?: number;
  log?: (line: string) => void;
}

export interface ChaosRun {
  seconds: number;
  /** Final accuracy per honest site, and their mean. */
  accuracy: number[];
  meanAccuracy: number;
  exitCodes: (number | null)[];
}

export interface ChaosResult {
  options: Omit<ChaosOptions, 'log' | 'dir'>;
  undisturbed: ChaosRun;
  chaos: ChaosRun & {
    kills: { process: string; atRound: number; resumedFrom?: number }[];
    hostileDrops: Record<string, number>;
    strangerWrites: number;
    strangerDials: number;
  };
  checks: { everyRoundOnce: boolean; noHangOrCrash: boolean; resumedFromCheckpoint: boolean; auditsVerify: boolean; withinTolerance: boolean };
  problems: string[];
  accuracyDifferencePoints: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fixture = (name: string) => fileURLToPath(new URL(`../test/fixtures/${name}`, import.meta.url));

const metrics = (s: { out: string }) => readJsonLines<RoundLine>(join(s.out, 'metrics.jsonl'));

/** Garbage to every port and libp2p dials from a key that is not a member, until `stop`. */
function stranger(ports: number[], stop: AbortSignal): { done: Promise<void>; writes: () => number; dials: () => number } {
  let writes = 0;
  let dials = 0;
  const rng = new Rng(99);
  const done = (async () => {
    const id = await generateIdentity();
    const node = await createSiteNode({ privateKey: id.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow: [] });
    await node.start();
    try {
      while (!stop.aborted) {
        for (const port of ports) {
          if (stop.aborted) break;
          await new Promise<void>((resolve) => {
            const sock = connect({ host: '127.0.0.1', port }, () => {
              const junk = Buffer.alloc(1 + Math.floor(rng.uniform() * 8192));
              for (let i = 0; i < junk.length; i++) junk[i] = rng.int(256);
              sock.end(junk, () => (writes++, resolve()));
            });
            sock.setTimeout(2000, () => sock.destroy());
            sock.on('error', () => resolve());
            sock.on('close', () => resolve());
          });
        }
        // A libp2p node that is not a member: the connection gater refuses it.
        const port = ports[rng.int(ports.length)];
        dials++;
        await node.dial(multiaddr(`/ip4/127.0.0.1/tcp/${port}`), { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
        await sleep(250);
      }
    } finally {
      await node.stop();
    }
  })();
  return { done, writes: () => writes, dials: () => dials };
}

async function consortium(o: ChaosOptions, sub: string): Promise<ConsortiumFiles> {
  const dir = join(o.dir, sub);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const sim: SimulationConfig = { ...DEFAULT_SIMULATION, ...o.sim, peers: o.sites, rounds: o.rounds, algorithms: [o.algorithm] };
  const honest = o.sites - 1;
  return writeConsortium({
    dir,
    algorithm: o.algorithm,
    sim,
    deadlineMs: o.deadlineMs,
    lingerMs: 4000,
    // Wait for the honest others only (heads, and summaries in preprocessing): the hostile member never sends anything usable.
    quorum: honest - 1,
    serverQuorum: o.algorithm === 'fedavg' ? honest : undefined,
  });
}

/** Run both the undisturbed and the chaos consortium, and check the chaos one. */
export async function chaosSoak(o: ChaosOptions): Promise<ChaosResult> {
  const log = o.log ?? (() => {});
  const procs = new Set<ChildProcess>();
  const start = (args: string[], logFile: string) => {
    const p = startProcess(args, logFile, { DFLMOE_LOG_LEVEL: 'info' });
    procs.add(p);
    return p;
  };
  const problems: string[] = [];
  try {
    // ---- undisturbed: honest sites only
    const clean = await consortium(o, 'undisturbed');
    const honestClean = clean.sites.slice(0, -1);
    let t0 = performance.now();
    log(`undisturbed: ${honestClean.length} honest sites, ${o.rounds} rounds`);
    const cleanProcs = [
      ...(clean.server ? [start(['server', '--config', clean.server.config], `${clean.server.out}.log`)] : []),
      ...honestClean.map((s) => start(['peer', '--config', s.config], `${s.out}.log`)),
    ];
    const cleanCodes = await Promise.all(cleanProcs.map((p) => waitExit(p, o.timeoutMs)));
    const finalAcc = (ss: SiteFiles[]) => ss.map((s) => metrics(s).at(-1)?.accuracy ?? NaN);
    const undisturbed: ChaosRun = {
      seconds: (performance.now() - t0) / 1000,
      accuracy: finalAcc(honestClean),
      meanAccuracy: 0,
      exitCodes: cleanCodes,
    };
    undisturbed.meanAccuracy = undisturbed.accuracy.reduce((a, b) => a + b, 0) / undisturbed.accuracy.length;
    if (cleanCodes.some((c) => c !== 0)) problems.push(`undisturbed run: exit codes ${cleanCodes}`);
    log(`undisturbed: mean accuracy ${(100 * undisturbed.meanAccuracy).toFixed(2)}% in ${undisturbed.seconds.toFixed(1)} s`);

    // ---- chaos
    const f = await consortium(o, 'chaos');
    const honest = f.sites.slice(0, -1);
    const hostileSite = f.sites.at(-1)!;
    t0 = performance.now();
    const deadline = Date.now() + o.timeoutMs;
    type Slot = { name: string; args: string[]; out: string; proc: ChildProcess; restarts: number; codes: (number | null)[] };
    const slots: Slot[] = [];
    const launch = (name: string, args: string[], out: string): Slot => {
      const s: Slot = { name, args, out, proc: start(args, `${out}.log`), restarts: 0, codes: [] };
      slots.push(s);
      return s;
    };
    const server = f.server ? launch('server', ['server', '--config', f.server.config], f.server.out) : undefined;
    const sites = honest.map((s, i) => launch(`site-${i}`, ['peer', '--config', s.config], s.out));
    const hostile = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--conditions=development',
        fixture(o.algorithm === 'dflmoe' ? 'hostile-peer.ts' : 'hostile-fedavg-client.ts'),
        '--config',
        hostileSite.config,
        '--seconds',
        String(Math.ceil(o.timeoutMs / 1000)),
        ...(o.algorithm === 'dflmoe' ? ['--classes', String(o.classes)] : []),
      ],
      { stdio: 'ignore' },
    );
    procs.add(hostile);
    const stop = new AbortController();
    const s = stranger([...f.sites.map((x) => x.port), ...(f.server ? [f.server.port] : [])], stop.signal);
    const rng = new Rng(o.seed ?? 7);
    const kills: ChaosResult['chaos']['kills'] = [];
    const running = (x: Slot) => x.proc.exitCode === null && x.proc.signalCode === null;
    const kill = async (x: Slot) => {
      const atRound = metrics(x).length;
      x.proc.kill('SIGKILL');
      await waitExit(x.proc, 10000);
      kills.push({ process: x.name, atRound });
      log(`killed ${x.name} (SIGKILL) after round ${atRound}; restarting`);
      await sleep(300);
      x.restarts++;
      const logged = existsSync(`${x.out}.log`) ? readFileSync(`${x.out}.log`).length : 0;
      x.proc = start(x.args, `${x.out}.log`);
      // No other kill until this process has restored its checkpoint (or had none), so that every kill tests a resume.
      const resumed = () => {
        const text = existsSync(`${x.out}.log`) ? readFileSync(`${x.out}.log`).subarray(logged).toString('utf8') : '';
        const m = /resumed from round (\d+)/.exec(text);
        return m ? Number(m[1]) : /starting from round 1|listening on/.test(text) && atRound === 0 ? 0 : undefined;
      };
      const t = Date.now();
      while (resumed() === undefined && running(x) && Date.now() - t < 90000) await sleep(200);
      const r = resumed();
      if (r !== undefined && atRound > 0) kills[kills.length - 1].resumedFrom = r;
    };
    let nextKill = o.killEvery;
    let serverKilled = false;
    while (sites.some(running) && Date.now() < deadline) {
      await sleep(100);
      const live = sites.filter(running);
      const slowest = Math.min(...live.map((x) => metrics(x).length));
      // Any site with a round left may be killed: a restarted site catches up several rounds in a tenth of a
      // second each (its pool is full), so a window of one round was often passed between two looks.
      if (slowest >= nextKill && slowest < o.rounds) {
        nextKill += o.killEvery;
        if (server && !serverKilled) {
          serverKilled = true;
          await kill(server);
        } else {
          // A site with rounds left, so that its restart resumes mid-run.
          const due = live.filter((x) => metrics(x).length < o.rounds);
          await kill(due[rng.int(due.length)]);
        }
      }
    }
    const codes = await Promise.all([...sites, ...(server ? [server] : [])].map((x) => waitExit(x.proc, Math.max(1000, deadline - Date.now()))));
    stop.abort();
    hostile.kill('SIGKILL');
    await s.done.catch(() => undefined);
    const seconds = (performance.now() - t0) / 1000;

    // ---- checks
    const everyRoundOnce = honest.every((x, i) => {
      const rs = metrics(x).map((l) => l.round);
      const ok = rs.length === o.rounds && rs.every((r, k) => r === k + 1);
      if (!ok) problems.push(`site-${i}: rounds ${rs.join(',')}`);
      return ok;
    });
    const noHangOrCrash = codes.every((c) => c === 0);
    if (!noHangOrCrash) problems.push(`exit codes ${codes} (null: killed at the deadline)`);
    for (const k of kills) {
      const r = k.resumedFrom;
      if (k.atRound > 0 && (r === undefined || r < k.atRound - 1 || r > k.atRound + 1)) {
        problems.push(`${k.process} killed after round ${k.atRound} did not resume from its checkpoint (resumed from ${r ?? 'nothing'})`);
      }
    }
    const resumedFromCheckpoint = kills.every((k) => k.atRound === 0 || (k.resumedFrom !== undefined && Math.abs(k.resumedFrom - k.atRound) <= 1));
    let auditsVerify = true;
    for (const [i, x] of honest.entries()) {
      const file = join(x.out, AUDIT_FILE);
      if (!existsSync(file)) {
        auditsVerify = false;
        problems.push(`site-${i}: no audit trail`);
        continue;
      }
      const a = await verifyAudit(file);
      const rounds = new Set(a.entries.flatMap((e) => (e.kind === 'round' ? [e.round] : [])));
      if (a.problems.length || rounds.size !== o.rounds) {
        auditsVerify = false;
        problems.push(`site-${i}: audit ${JSON.stringify(a.problems.slice(0, 3))}, ${rounds.size} rounds`);
      }
    }
    const accuracy = finalAcc(honest);
    const meanAccuracy = accuracy.reduce((a, b) => a + b, 0) / accuracy.length;
    const tolerance = o.tolerance ?? 0.01;
    const withinTolerance = Math.abs(meanAccuracy - undisturbed.meanAccuracy) <= tolerance;
    if (!withinTolerance) problems.push(`mean accuracy ${meanAccuracy} vs undisturbed ${undisturbed.meanAccuracy}`);
    const hostileDrops: Record<string, number> = {};
    for (const x of honest) for (const [k, v] of Object.entries(metrics(x).at(-1)?.dropped ?? {})) hostileDrops[k] = (hostileDrops[k] ?? 0) + v;
    const serverLine = server ? readJsonLines<ServerRoundLine>(join(server.out, 'metrics.jsonl')).at(-1) : undefined;
    for (const [k, v] of Object.entries(serverLine?.dropped ?? {})) hostileDrops[`server:${k}`] = v;
    log(
      `chaos: mean accuracy ${(100 * meanAccuracy).toFixed(2)}% in ${seconds.toFixed(1)} s; ${kills.length} kills; stranger ${s.writes()} garbage writes, ${s.dials()} dials`,
    );
    const { log: _l, dir: _d, ...options } = o;
    return {
      options,
      undisturbed,
      chaos: { seconds, accuracy, meanAccuracy, exitCodes: codes, kills, hostileDrops, strangerWrites: s.writes(), strangerDials: s.dials() },
      checks: { everyRoundOnce, noHangOrCrash, resumedFromCheckpoint, auditsVerify, withinTolerance },
      problems,
      accuracyDifferencePoints: 100 * (meanAccuracy - undisturbed.meanAccuracy),
    };
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}
