/**
 * The accuracy cost of differential privacy on breast-cancer: DP-SGD with
 * per-example clipping, noise chosen so that every site spends about
 * epsilon = 1, 3 or 8 (delta = 1e-5) over the whole run, against no DP.
 *
 *   node --import tsx benchmarks/dp.ts
 */
import { silentLogger } from '@dflmoe/core';
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { noiseForEpsilon, simulate, type SimulationConfig } from '@dflmoe/core/internal';
import { loadDataset, partition } from '@dflmoe/data';

const { values } = parseArgs({ options: { out: { type: 'string', default: 'benchmarks/results/dp.json' } } });
const quiet = silentLogger;
const base = {
  dataset: 'breast-cancer',
  peers: 3,
  partition: 'iid',
  rounds: 10,
  epochs: 1,
  batchSize: 16,
  learningRate: 3e-3,
  seed: 1,
  algorithms: ['dflmoe', 'local'],
} satisfies Partial<SimulationConfig>;
// The smallest site has the largest sampling rate; calibrate the noise for it.
const ds = loadDataset(base.dataset);
const splits = partition(ds.labels, 2, base.peers, base.partition, { seed: base.seed });
const n = Math.min(...splits.map((s) => s.train.length));
const q = base.batchSize / n;
const steps = base.rounds * base.epochs * Math.ceil(n / base.batchSize);
const rows = [];
for (const target of [Infinity, 8, 3, 1]) {
  const noise = Number.isFinite(target) ? noiseForEpsilon(target, q, steps, 1e-5) : undefined;
  const r = await simulate({ ...base, ...(noise ? { dp: { noiseMultiplier: noise, clipNorm: 1, delta: 1e-5 } } : {}) }, { logger: quiet });
  const eps = r.algorithms.dflmoe!.peers.map((p) => p.privacy?.epsilon ?? Infinity);
  const row = {
    targetEpsilon: target,
    noiseMultiplier: noise ?? 0,
    maxEpsilon: Math.max(...eps),
    dflmoe: r.algorithms.dflmoe!.accuracy.mean,
    local: r.algorithms.local!.accuracy.mean,
  };
  rows.push(row);
  console.log(
    `${Number.isFinite(target) ? `epsilon ~${target}` : 'no DP     '}  noise ${row.noiseMultiplier.toFixed(3)}  spent max epsilon ${Number.isFinite(row.maxEpsilon) ? row.maxEpsilon.toFixed(2) : 'inf'}  ` +
      `dFLMoE ${(100 * row.dflmoe).toFixed(2)}%  local ${(100 * row.local).toFixed(2)}%`,
  );
}
mkdirSync('benchmarks/results', { recursive: true });
writeFileSync(values.out!, JSON.stringify({ date: new Date().toISOString(), base, q, steps, rows }, null, 2) + '\n');
console.log(`sampling rate ${q.toFixed(3)} over ${steps} steps (smallest site, ${n} training samples); wrote ${values.out}`);
