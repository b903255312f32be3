/**
 * Experts across tasks between site processes: `simulate --transport tcp
 * --cross-task` runs three dFLMoE site processes over 127.0.0.1 whose tasks
 * (digit; parity and high; high) read each other's heads on the cross-task
 * channel, and agrees with the in-memory run of the same seed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simulate, silentLogger } from '@dflmoe/core/internal';
import { backend, cli } from './helpers.js';

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
    }
  });
});
