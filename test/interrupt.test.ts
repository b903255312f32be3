/**
 * Ctrl-C while a site waits: SIGINT to a real `dflmoe peer` (and `dflmoe
 * server`) process in each wait state ends it within seconds, with exit code
 * 130 and `interrupted; rerun to resume`, instead of at the end of the wait
 * (the preprocessing deadline, the round deadline, the server's deadline).
 * Every process is killed in `afterEach` (or, for a set-up that two tests
 * share, in `after`) whatever happens.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SIMULATION, type AlgorithmName, type SimulationConfig } from '@dflmoe/core';
import { waitExit, writeConsortium } from '@dflmoe/cli/internal';
import { processGroup, until } from './helpers.js';

/** Far above what stopping takes (about a second), far below the waits it cuts short (60 s and more). */
const PROMPT_S = 10;

const sim = (o: Partial<SimulationConfig> = {}): SimulationConfig => ({
  ...DEFAULT_SIMULATION,
  dataset: 'breast-cancer',
  peers: 3,
  rounds: 3,
  partition: 'iid',
  seed: 4,
  ...o,
});

const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');

describe('Ctrl-C while a site waits (multi-process)', function () {
  this.timeout(120000);
  const group = processGroup();
  afterEach(() => group.kill());

  async function consortium(alg: AlgorithmName, o: Partial<SimulationConfig>, preprocessDeadlineMs?: number) {
    const dir = mkdtempSync(join(tmpdir(), `dflmoe-interrupt-${alg}-`));
    return writeConsortium({ dir, algorithm: alg, sim: sim(o), deadlineMs: 60000, lingerMs: 1000, ...(preprocessDeadlineMs ? { preprocessDeadlineMs } : {}) });
  }

  /** SIGINT `p` (logging to `log`); returns the seconds it took to exit, after checking the exit code and the message. */
  async function interrupt(p: ChildProcess, log: string, what: string): Promise<number> {
    const t0 = performance.now();
    p.kill('SIGINT');
    const code = await waitExit(p, 60000);
    const s = (performance.now() - t0) / 1000;
    process.stdout.write(`      (${what}: stopped ${s.toFixed(2)} s after SIGINT)\n`);
    assert.equal(code, 130, `${what}: exit code\n${read(log).slice(-1500)}`);
    assert.match(read(log), /^dflmoe: interrupted; rerun to resume$/m, what);
    assert.doesNotMatch(read(log), /\n\s+at /, 'no stack trace');
    assert.ok(s < PROMPT_S, `${what}: stopped ${s.toFixed(1)} s after SIGINT`);
    return s;
  }

  it('a site waiting for the other members before round 1 (preprocessing) stops at once', async () => {
    // Default preprocessing deadline (120 s): the other members never come.
    const f = await consortium('dflmoe', { peers: 2 });
    const s = f.sites[0];
    const log = `${s.out}.log`;
    const p = group.start(['peer', '--config', s.config], log);
    await until('the site to gather statements', () => read(log).includes('own data:'), 60000);
    await new Promise((r) => setTimeout(r, 1500));
    await interrupt(p, log, 'waiting for members');
    assert.ok(!existsSync(join(s.out, 'results.json')), 'no results for a run that did not happen');
  });

  describe('waiting in a round (both consortia set up at once)', () => {
    // The two consortia below are set up in one before hook: the FedAvg one agrees and settles into its wait while the
    // dFLMoE sites wait in their rounds.
    const shared = processGroup();
    after(() => shared.kill());
    let dfl: { logs: string[]; ps: ChildProcess[] };
    let fed: { slog: string; sp: ChildProcess; logs: string[]; ps: ChildProcess[] };
    before(async () => {
      const [fd, ff] = [await consortium('dflmoe', { rounds: 50 }, 3000), await consortium('fedavg', {}, 3000)];
      // Three members agree; then the third is frozen (SIGSTOP: connected, silent), and each round of the two waits (60 s) for its head.
      const dlogs = fd.sites.map((s) => `${s.out}.log`);
      dfl = { logs: dlogs, ps: fd.sites.map((s, i) => shared.start(['peer', '--config', s.config], dlogs[i])) };
      // All three agreed (so no one still pulls the third's statement, which would keep it in preprocessing), then the third freezes.
      await until('the three sites to agree', () => dlogs.every((l) => read(l).includes('preprocessing: agreed')), 60000);
      dfl.ps[2].kill('SIGSTOP');
      // Three clients, two started: the server waits its deadline (60 s) for the third upload, the two clients for the global model.
      const server = ff.server!;
      const slog = `${server.out}.log`;
      const sp = shared.start(['server', '--config', server.config], slog);
      const flogs = ff.sites.slice(0, 2).map((s) => `${s.out}.log`);
      fed = { slog, sp, logs: flogs, ps: ff.sites.slice(0, 2).map((s, i) => shared.start(['peer', '--config', s.config], flogs[i])) };
      await until('the two clients to agree', () => flogs.every((l) => read(l).includes('preprocessing: agreed')), 60000);
      await new Promise((r) => setTimeout(r, 3000));
    });

    it('a site waiting in a round quorum stops at once', async () => {
      // Each says whom it waits for (a member it agreed with, connected): it is waiting in a round.
      // In their rounds (one finished): every round now waits its deadline for the frozen third, so an interrupt finds them waiting.
      await until('the two sites to be in their rounds', () => dfl.logs.slice(0, 2).every((l) => /^round \d+\/50 /m.test(read(l))), 60000);
      await interrupt(dfl.ps[0], dfl.logs[0], 'waiting in a round quorum');
      // The other site, still waiting for the third, goes the same way.
      await interrupt(dfl.ps[1], dfl.logs[1], 'waiting in a round quorum (second site)');
    });

    it('a FedAvg client waiting for its server, and the server waiting for uploads, stop at once', async () => {
      await interrupt(fed.ps[0], fed.logs[0], 'FedAvg client waiting for the global model');
      await interrupt(fed.sp, fed.slog, 'FedAvg server waiting for uploads');
      await interrupt(fed.ps[1], fed.logs[1], 'FedAvg client whose server is gone');
    });
  });
});
