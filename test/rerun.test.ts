/**
 * `dflmoe simulate --transport tcp` into an --out that holds an earlier run:
 * Ctrl-C, then a rerun that resumes every site with its own key (audit
 * trails verify) and reports bytes and time for the whole run; a rerun of a
 * finished run changes nothing; other settings are refused; --fresh starts
 * over. Every process is killed in `afterEach` whatever happens.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SimulationResults } from '@dflmoe/core';
import { waitExit } from '@dflmoe/cli/internal';
import { readJsonLines, verifyAudit, type RoundLine } from '@dflmoe/p2p/internal';
import { until, cliCommand } from './helpers.js';

const ROUNDS = 12;
const args = (out: string, more: string[] = []) => [
  'simulate',
  '--transport',
  'tcp',
  '--dataset',
  'breast-cancer',
  '--peers',
  '2',
  '--rounds',
  String(ROUNDS),
  '--epochs',
  '3',
  '--algorithms',
  'dflmoe,fedavg',
  '--deadline',
  '20000',
  '--out',
  out,
  '--quiet',
  ...more,
];

describe('simulate over TCP into an earlier run (multi-process)', function () {
  this.timeout(300000);
  let procs: ChildProcess[] = [];
  afterEach(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    procs = [];
  });

  /** Start the CLI (its sites log at info level); resolves with its exit code and output. */
  function start(argv: string[]) {
    const p = spawn(process.execPath, [...cliCommand(), ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DFLMOE_LOG_LEVEL: 'info' },
    });
    procs.push(p);
    let out = '';
    p.stdout!.on('data', (d: Buffer) => (out += d));
    p.stderr!.on('data', (d: Buffer) => (out += d));
    return { p, done: waitExit(p, 240000).then((code) => ({ code, out })) };
  }

  const results = (out: string) => JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as SimulationResults;
  const sites = (out: string, alg: string) => [0, 1].map((i) => join(out, 'consortium', alg, `site-${i}`));

  async function auditsVerify(out: string, alg: string, starts: number, rounds = ROUNDS) {
    for (const s of sites(out, alg)) {
      const r = await verifyAudit(join(s, 'audit.jsonl'));
      assert.deepEqual(r.problems, [], `${s}: audit trail`);
      assert.equal(r.entries.filter((e) => e.kind === 'start').length, starts, `${s}: starts`);
      assert.deepEqual(
        r.entries.filter((e) => e.kind === 'round').map((e) => (e as { round: number }).round),
        Array.from({ length: rounds }, (_, i) => i + 1),
      );
    }
  }

  it('Ctrl-C, rerun: every site resumes with its own key and the table covers the whole run; a rerun of the finished run reports the same; other settings are refused; --fresh starts over', async () => {
    const out = mkdtempSync(join(tmpdir(), 'dflmoe-rerun-'));
    // Part 1: stopped with SIGINT a few rounds into dFLMoE.
    const first = start(args(out));
    await until('round 3 at both dFLMoE sites', () => sites(out, 'dflmoe').every((s) => readJsonLines(join(s, 'metrics.jsonl')).length >= 3), 120000);
    first.p.kill('SIGINT');
    const a = await first.done;
    assert.equal(a.code, 130, a.out);
    assert.match(a.out, /^dflmoe: interrupted; rerun to resume$/m);
    const stoppedAt = sites(out, 'dflmoe').map((s) => readJsonLines<RoundLine>(join(s, 'metrics.jsonl')).length);
    assert.ok(
      stoppedAt.every((n) => n < ROUNDS),
      `stopped mid-run (${stoppedAt})`,
    );

    // Part 2: the rerun resumes dFLMoE where each site stopped, then runs FedAvg.
    const b = await start(args(out)).done;
    assert.equal(b.code, 0, b.out);
    assert.match(b.out, /dflmoe: resuming the earlier run/);
    sites(out, 'dflmoe').forEach((s, i) => {
      assert.match(readFileSync(`${s}.log`, 'utf8'), new RegExp(`resumed from round ${stoppedAt[i]} `), `${s} logs where it resumed`);
      const ls = readJsonLines<RoundLine>(join(s, 'metrics.jsonl'));
      assert.deepEqual(
        ls.map((l) => l.round),
        Array.from({ length: ROUNDS }, (_, k) => k + 1),
        'every round once',
      );
      // Bytes and time run on across the restart: the lines count the whole run.
      for (let k = 1; k < ls.length; k++) {
        assert.ok(ls[k].bytesSent >= ls[k - 1].bytesSent, `${s} round ${ls[k].round}: bytes out ${ls[k].bytesSent} < ${ls[k - 1].bytesSent}`);
        assert.ok(ls[k].wallSeconds! > ls[k - 1].wallSeconds!, `${s} round ${ls[k].round}: seconds`);
      }
    });
    await auditsVerify(out, 'dflmoe', 2);
    await auditsVerify(out, 'fedavg', 1);
    const rb = results(out);
    // The table counts what the lines count (bytes so far, over both parts), and what went out while the sites lingered.
    const lastLines = sites(out, 'dflmoe').reduce((a, s) => a + readJsonLines<RoundLine>(join(s, 'metrics.jsonl')).at(-1)!.bytesSent, 0);
    assert.ok(rb.algorithms.dflmoe!.bytesSent >= lastLines, `dflmoe bytes ${rb.algorithms.dflmoe!.bytesSent} cover the whole run (${lastLines})`);

    // Part 3: a rerun of the finished run resumes every site at its last round and reports the same bytes.
    const c = await start(args(out)).done;
    assert.equal(c.code, 0, c.out);
    const rc = results(out);
    for (const alg of ['dflmoe', 'fedavg'] as const) {
      for (const s of sites(out, alg)) assert.match(readFileSync(`${s}.log`, 'utf8'), new RegExp(`resumed from round ${ROUNDS} `));
      assert.equal(rc.algorithms[alg]!.bytesSent, rb.algorithms[alg]!.bytesSent, `${alg}: bytes of the whole run`);
      assert.ok(rc.algorithms[alg]!.wallSeconds > rb.algorithms[alg]!.wallSeconds, `${alg}: seconds of every part`);
      assert.deepEqual(
        rc.algorithms[alg]!.peers.map((p) => p.accuracy),
        rb.algorithms[alg]!.peers.map((p) => p.accuracy),
      );
    }
    await auditsVerify(out, 'dflmoe', 3);
    await auditsVerify(out, 'fedavg', 2);

    // Other settings would resume sites that trained on something else: refused, in one line.
    const d = await start(args(out, ['--seed', '9'])).done;
    assert.equal(d.code, 1, d.out);
    assert.match(d.out, /^dflmoe: error: .*holds an earlier run with other settings \(data\); rerun with --fresh/m);
    assert.doesNotMatch(d.out, /\n\s+at /, 'no stack trace');

    // --fresh: a new run, new keys, one start in each audit trail.
    const before = readFileSync(join(out, 'consortium', 'dflmoe', 'site-0.key'), 'utf8');
    // (dFLMoE alone and 3 rounds: what is checked is that nothing of the earlier run is taken up.)
    const e = await start(args(out, ['--seed', '9', '--fresh', '--algorithms', 'dflmoe', '--rounds', '3'])).done;
    assert.equal(e.code, 0, e.out);
    assert.doesNotMatch(e.out, /resuming/);
    assert.notEqual(readFileSync(join(out, 'consortium', 'dflmoe', 'site-0.key'), 'utf8'), before, 'new identities');
    for (const s of sites(out, 'dflmoe')) assert.doesNotMatch(readFileSync(`${s}.log`, 'utf8'), /resumed/);
    await auditsVerify(out, 'dflmoe', 1, 3);
    assert.ok(existsSync(join(out, 'results.json')));
  });
});
