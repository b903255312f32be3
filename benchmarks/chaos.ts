/**
 * Chaos soak (see chaos-driver.ts): 8 sites over TCP for 30 rounds on
 * digits, one of them hostile, a stranger sending garbage to every port, an
 * honest site killed with SIGKILL every few rounds and restarted; the same
 * for FedAvg (its server killed once, then clients). Compared with an
 * undisturbed run of the same seed. Writes benchmarks/results/chaos.json.
 *
 *   npm run bench:chaos [-- --sites 8 --rounds 30 --kill-every 3 --algorithms dflmoe,fedavg]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chaosSoak, type ChaosResult } from './chaos-driver.js';

const { values } = parseArgs({
  options: {
    sites: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '30' },
    'kill-every': { type: 'string', default: '3' },
    algorithms: { type: 'string', default: 'dflmoe,fedavg' },
    dataset: { type: 'string', default: 'digits' },
    out: { type: 'string', default: 'benchmarks/results/chaos.json' },
  },
});
const results: ChaosResult[] = [];
for (const algorithm of values.algorithms!.split(',') as ('dflmoe' | 'fedavg')[]) {
  const r = await chaosSoak({
    algorithm,
    dir: join(tmpdir(), `dflmoe-chaos-${algorithm}`),
    sites: Number(values.sites),
    rounds: Number(values.rounds),
    sim: { dataset: values.dataset!, partition: 'dirichlet:0.5', seed: 1, epochs: 1 },
    classes: values.dataset === 'digits' ? 10 : 2,
    // FedAvg: the server waits its deadline every round for the hostile client's slot, so keep it short.
    killEvery: Number(values['kill-every']),
    deadlineMs: algorithm === 'fedavg' ? 3000 : 5000,
    timeoutMs: 20 * 60 * 1000,
    log: (l) => console.log(`[${algorithm}] ${l}`),
  });
  results.push(r);
  const c = r.checks;
  console.log(
    `[${algorithm}] undisturbed ${(100 * r.undisturbed.meanAccuracy).toFixed(2)}% (${r.undisturbed.seconds.toFixed(0)} s), ` +
      `chaos ${(100 * r.chaos.meanAccuracy).toFixed(2)}% (${r.chaos.seconds.toFixed(0)} s), difference ${r.accuracyDifferencePoints.toFixed(2)} points; ` +
      `${r.chaos.kills.length} kills; every round once ${c.everyRoundOnce}, no hang or crash ${c.noHangOrCrash}, resumed ${c.resumedFromCheckpoint}, ` +
      `audits ${c.auditsVerify}, within 1 point ${c.withinTolerance}`,
  );
  for (const p of r.problems) console.log(`[${algorithm}] problem: ${p}`);
}
mkdirSync('benchmarks/results', { recursive: true });
writeFileSync(
  values.out!,
  JSON.stringify({ date: new Date().toISOString(), note: 'shared 2-core machine; other work ran at the same time', results }, null, 2) + '\n',
);
console.log(`wrote ${values.out}`);
