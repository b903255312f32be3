/**
 * A short chaos soak (benchmarks/chaos-driver.ts; `npm run bench:chaos` is
 * the long one): 5 sites over TCP, one hostile all along, a stranger
 * writing garbage to every port, an honest site killed with SIGKILL every 3
 * rounds and restarted. Bounded: every run must end within its timeout.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chaosSoak } from '../benchmarks/chaos-driver.js';

describe('chaos soak (short)', function () {
  this.timeout(240000);

  it('dFLMoE: kills, a hostile member and a stranger; every round once, no hang, resumed from checkpoints, audits verify, accuracy within 1 point', async () => {
    const r = await chaosSoak({
      algorithm: 'dflmoe',
      dir: mkdtempSync(join(tmpdir(), 'dflmoe-chaos-test-')),
      sites: 5,
      rounds: 8,
      classes: 4,
      // Well-separated classes: accuracy is stable, so a pool that missed a head for a round does not move it, while a hostile head would.
      sim: { dataset: 'synthetic:classes=4,dim=16,samples=2000,separation=1', partition: 'iid', seed: 4, epochs: 2 },
      killEvery: 3,
      deadlineMs: 3000,
      timeoutMs: 150000,
      seed: 3,
    });
    process.stdout.write(
      `      (undisturbed ${(100 * r.undisturbed.meanAccuracy).toFixed(2)}% in ${r.undisturbed.seconds.toFixed(0)} s, ` +
        `chaos ${(100 * r.chaos.meanAccuracy).toFixed(2)}% in ${r.chaos.seconds.toFixed(0)} s, kills ${JSON.stringify(r.chaos.kills)}, stranger writes ${r.chaos.strangerWrites})\n`,
    );
    assert.deepEqual(r.problems, []);
    assert.ok(r.chaos.kills.length >= 2, `kills: ${r.chaos.kills.length}`);
    assert.ok(
      r.chaos.kills.every((k) => k.resumedFrom !== undefined),
      JSON.stringify(r.chaos.kills),
    );
    assert.ok(r.chaos.strangerWrites > 10);
    assert.ok(Object.values(r.chaos.hostileDrops).reduce((a, b) => a + b, 0) > 0, "the hostile member's data was dropped");
    assert.deepEqual(r.checks, { everyRoundOnce: true, noHangOrCrash: true, resumedFromCheckpoint: true, auditsVerify: true, withinTolerance: true });
  });
});
