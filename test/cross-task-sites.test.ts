/**
 * Experts across tasks between site processes: `simulate --transport tcp
 * --cross-task` runs three dFLMoE site processes over 127.0.0.1 whose tasks
 * (digit; parity and high; high) read each other's heads on the cross-task
 * channel, and agrees with the in-memory run of the same seed; and a member
 * whose `crossTask` is off is not waited for on that channel.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SIMULATION, simulate, silentLogger } from '@dflmoe/core/internal';
import { waitExit, writeConsortium } from '@dflmoe/cli/internal';
import { readJsonLines, verifyAudit, type RoundLine } from '@dflmoe/p2p/internal';
import { backend, cli, processGroup } from './helpers.js';

describe('experts across tasks over TCP (site processes)', function () {
  this.timeout(180_000);
  before(backend);

  it("every site finishes; each task's results carry its reliance on the other tasks, as in memory", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-xtask-tcp-'));
    const args = { dataset: 'digits-tasks', peers: 3, rounds: 3, algorithms: ['dflmoe' as const], crossTask: true, seed: 1 };
    const mem = await simulate(args, { logger: silentLogger });
    const flags = ['--dataset', 'digits-tasks', '--peers', '3', '--rounds', '3', '--algorithms', 'dflmoe', '--cross-task', '--seed', '1'];
    const t = cli(['simulate', ...flags, '--transport', 'tcp', '--quiet', '--out', dir]);
    assert.equal(t.status, 0, t.stderr);
    const tcp = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as typeof mem;
    const [a, b] = [tcp, mem].map((x) => x.algorithms.dflmoe!.peers);
    // Site 0 learns digit, site 1 parity and high, site 2 high: every task reads the two tasks it does not learn.
    assert.deepEqual(
      a.map((p) => Object.keys(p.tasks).sort()),
      [['digit'], ['high', 'parity'], ['high']],
    );
    const tasks = ['digit', 'high', 'parity'];
    for (const p of a) {
      const keys = Object.keys(p.tasks).flatMap((task) => tasks.filter((o) => o !== task).map((o) => `${task} <- ${o}`));
      assert.deepEqual(Object.keys(p.gateWeights ?? {}).sort(), keys.sort(), `${p.id}: ${JSON.stringify(p.gateWeights)}`);
      for (const k of keys) assert.ok(p.gateWeights![k] > 0 && p.gateWeights![k] < 1, `${p.id} ${k}`);
    }
    // The site's own config carried the setting to the process.
    const site = JSON.parse(readFileSync(join(dir, 'consortium', 'dflmoe', 'site-0.json'), 'utf8')) as { dflmoe?: { crossTask?: boolean } };
    assert.equal(site.dflmoe?.crossTask, true);
    // TCP does not fix the order heads arrive in (nor so the order of the read-out's sum): close, not necessarily equal.
    for (const [i, p] of a.entries()) {
      for (const [task, r] of Object.entries(p.tasks)) {
        const [x, y] = [r.accuracy, b[i].tasks[task].accuracy].map(Number);
        assert.ok(Math.abs(x - y) <= 0.02, `${p.id} ${task}: ${x} over TCP, ${y} in memory`);
      }
      for (const [k, w] of Object.entries(p.gateWeights!))
        assert.ok(Math.abs(w - b[i].gateWeights![k]) <= 0.02, `${p.id} ${k}: ${w} vs ${b[i].gateWeights![k]}`);
    }
    // Nothing the members sent each other was dropped.
    for (const s of [0, 1, 2]) {
      const lines = readFileSync(join(dir, 'consortium', 'dflmoe', `site-${s}`, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n');
      for (const l of lines) assert.deepEqual((JSON.parse(l) as { dropped: object }).dropped, {}, `site-${s}`);
      // Each round's line carries the read-outs' reliance (what the live view draws by round); the last round's is the results'.
      const last = JSON.parse(lines.at(-1)!) as RoundLine;
      assert.deepEqual(last.reliance, tcp.algorithms.dflmoe!.peers[s].gateWeights, `site-${s}`);
    }
  });

  const procs = processGroup();
  afterEach(() => procs.kill());

  it('a member with crossTask off is not waited for on the cross-task channel (said once); every site trains its tasks', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-xtask-off-'));
    const deadlineMs = 20000;
    const sim = { ...DEFAULT_SIMULATION, dataset: 'digits-tasks', peers: 3, rounds: 2, algorithms: ['dflmoe' as const], crossTask: true, seed: 1 };
    const files = await writeConsortium({ dir, algorithm: 'dflmoe', sim, deadlineMs, lingerMs: 1000 });
    const off = files.sites[2];
    const cfg = JSON.parse(readFileSync(off.config, 'utf8')) as { dflmoe: { crossTask?: boolean } };
    cfg.dflmoe.crossTask = false;
    writeFileSync(off.config, JSON.stringify(cfg, null, 2));
    const ps = files.sites.map((s) => procs.start(['peer', '--config', s.config], `${s.out}.log`));
    assert.deepEqual(await Promise.all(ps.map((p) => waitExit(p, 120000))), [0, 0, 0], 'every site exits cleanly');
    const notice = /site-2 does not take part in experts across tasks: not waiting for its bundles/g;
    const lines = (i: number) => readJsonLines<RoundLine>(join(files.sites[i].out, 'metrics.jsonl'));
    for (const [i, s] of files.sites.entries()) {
      const log = readFileSync(`${s.out}.log`, 'utf8');
      assert.deepEqual(
        lines(i).map((l) => l.round),
        [1, 2],
        `rounds of site-${i}`,
      );
      for (const l of lines(i)) {
        assert.ok(
          Object.values(l.tasks!).every((t) => Number.isFinite(t.accuracy)),
          `site-${i} round ${l.round}: its tasks trained`,
        );
        // Waiting out the cross-task deadline for site-2 would take 20 s a round.
        assert.ok(l.waitSeconds < deadlineMs / 2000, `site-${i} round ${l.round} waited ${l.waitSeconds} s`);
        assert.deepEqual(l.dropped, {}, `site-${i} round ${l.round}`);
      }
      assert.equal(log.match(notice)?.length ?? 0, i < 2 ? 1 : 0, `site-${i}'s log:\n${log}`);
      // The members that take part are known to (identify says so from the first connection on).
      assert.equal(log.match(/does not take part in experts across tasks/g)?.length ?? 0, i < 2 ? 1 : 0, `site-${i}'s log:\n${log}`);
    }
    const results = files.sites.map((s) => JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8')) as { gateWeights?: Record<string, number> });
    // The audit trails: what a site mixed (task channels) or read (the cross-task channel) has the digest its sender published.
    const trails = await Promise.all(files.sites.map((s) => verifyAudit(join(s.out, 'audit.jsonl'))));
    const rounds = trails.map((t) => {
      assert.deepEqual(t.problems, []);
      return t.entries.filter((e) => e.kind === 'round');
    });
    const published = (peer: string, round: number, task?: string) => {
      const e = rounds[files.sites.findIndex((s) => s.peerId === peer)].find((x) => x.round === round)!;
      return task === undefined ? e.cross?.own : e.ownTasks?.[task];
    };
    let checked = 0;
    for (const [i, rs] of rounds.entries()) {
      for (const e of rs) {
        assert.equal(e.cross === undefined, i === 2, `site-${i} round ${e.round}: a cross-task part only with crossTask`);
        assert.deepEqual(Object.keys(e.ownTasks ?? {}).sort(), Object.keys(lines(i)[0].tasks!).sort());
        for (const m of [...e.mixed, ...(e.cross?.mixed ?? [])]) {
          assert.notEqual(m.digest, null, `site-${i} round ${e.round}: ${JSON.stringify(m)}`);
          assert.equal(m.digest, published(m.peer, m.version, m.task)?.digest, `site-${i} round ${e.round}: ${JSON.stringify(m)}`);
          checked++;
        }
      }
    }
    // site-1 mixes site-2's high heads, site-0 reads site-1's bundles, site-1 reads site-0's.
    assert.ok(checked >= 5, `${checked} digests checked`);
    assert.deepEqual(
      rounds[0].map((e) => e.cross!.mixed.map((m) => m.peer)),
      [[files.sites[1].peerId], [files.sites[1].peerId]],
    );
    // site-0 (digit) reads site-1's parity and high; site-2 has no read-outs.
    assert.deepEqual(Object.keys(results[0].gateWeights ?? {}).sort(), ['digit <- high', 'digit <- parity']);
    assert.equal(results[2].gateWeights, undefined);
  });
});
