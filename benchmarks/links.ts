/**
 * Weak links, measured:
 * 1. head compression: dFLMoE in memory on breast-cancer and digits with
 *    float32, float16 and int8 heads (paired: same seeds, same data, same
 *    initial models); bytes per head and mean personalized accuracy;
 * 2. (--part slow, or all) a 4-site consortium over TCP through an emulated
 *    slow link (1 MB/s each way per connection, 100 ms round trip, 2% of
 *    connections reset): rounds completed within their deadline, the
 *    deadline each round had, and float16 against float32 heads.
 *
 *   node --import tsx --conditions=development benchmarks/links.ts [--part compression|slow|all] [--seeds 5] [--rounds 20]
 *        [--out benchmarks/results/links.json]
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_SIMULATION, initBackend, simulate, silentLogger, type Precision, type SimulationConfig } from '@dflmoe/core';

const { values } = parseArgs({
  options: {
    part: { type: 'string', default: 'all' },
    seeds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '20' },
    out: { type: 'string', default: 'benchmarks/results/links.json' },
  },
});
const seeds = Array.from({ length: Number(values.seeds) }, (_, i) => i + 1);
const rounds = Number(values.rounds);
const PRECISIONS: Precision[] = ['float32', 'float16', 'int8'];
const out: Record<string, unknown> = (() => {
  try {
    return JSON.parse(readFileSync(values.out!, 'utf8'));
  } catch {
    return {};
  }
})();
const save = () => {
  mkdirSync(dirname(values.out!), { recursive: true });
  writeFileSync(values.out!, JSON.stringify({ ...out, date: new Date().toISOString() }, null, 2) + '\n');
};

// ------------------------------------------------------------ 1. compression
if (values.part === 'compression' || values.part === 'all') {
  const backend = await initBackend({ logger: silentLogger });
  const cells: { dataset: string; peers: number }[] = [
    { dataset: 'breast-cancer', peers: 4 },
    { dataset: 'digits', peers: 4 },
  ];
  const rows: Record<string, unknown>[] = [];
  for (const cell of cells) {
    const per: Record<Precision, { acc: number[]; bytes: number[]; headBytes: number }> = {
      float32: { acc: [], bytes: [], headBytes: 0 },
      float16: { acc: [], bytes: [], headBytes: 0 },
      int8: { acc: [], bytes: [], headBytes: 0 },
    };
    for (const seed of seeds) {
      for (const p of PRECISIONS) {
        const cfg: SimulationConfig = {
          ...DEFAULT_SIMULATION,
          dataset: cell.dataset,
          peers: cell.peers,
          partition: 'dirichlet:0.3',
          rounds,
          seed,
          algorithms: ['dflmoe'],
          bodies: ['mlp:128'],
          featureDim: 64,
          learningRate: 3e-3,
          headPrecision: p,
        };
        const r = await simulate(cfg, { logger: silentLogger });
        const a = r.algorithms.dflmoe!;
        per[p].acc.push(a.accuracy.mean);
        per[p].bytes.push(a.bytesSent);
        // Every site publishes one head a round and each of the others pulls it once.
        per[p].headBytes = a.bytesSent / (rounds * cell.peers * (cell.peers - 1));
      }
      console.log(`${cell.dataset} seed ${seed}: ${PRECISIONS.map((p) => `${p} ${(100 * per[p].acc.at(-1)!).toFixed(2)}%`).join(', ')}`);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    // The head's parameters alone (linear head: a 64 x C kernel and C biases), as the codec lays them out.
    const classes = cell.dataset === 'digits' ? 10 : 2;
    const tensorBytes = (p: Precision, n: number) => (p === 'float32' ? 4 * n : p === 'float16' ? 4 * Math.ceil(n / 2) : 4 + 4 * Math.ceil(n / 4));
    const paramBytes = (p: Precision) => tensorBytes(p, 64 * classes) + tensorBytes(p, classes);
    for (const p of PRECISIONS) {
      const diffs = per[p].acc.map((v, i) => 100 * (v - per.float32.acc[i]));
      const row = {
        dataset: cell.dataset,
        peers: cell.peers,
        precision: p,
        seeds: seeds.length,
        rounds,
        headBytes: per[p].headBytes,
        bytesRatio: per[p].headBytes / per.float32.headBytes,
        paramBytes: paramBytes(p),
        paramBytesRatio: paramBytes(p) / paramBytes('float32'),
        meanAccuracy: mean(per[p].acc),
        deltaPoints: mean(diffs),
        worstDeltaPoints: Math.min(...diffs),
      };
      rows.push(row);
      console.log(
        `${cell.dataset.padEnd(14)} ${p.padEnd(8)} head ${row.headBytes.toFixed(0).padStart(5)} B (x${row.bytesRatio.toFixed(3)}; parameters ` +
          `${row.paramBytes} B, x${row.paramBytesRatio.toFixed(3)})  ` +
          `accuracy ${(100 * row.meanAccuracy).toFixed(2)}%  vs float32 ${row.deltaPoints >= 0 ? '+' : ''}${row.deltaPoints.toFixed(2)} points (worst seed ${row.worstDeltaPoints.toFixed(2)})`,
      );
    }
  }
  out.compression = {
    backend: backend.name,
    settings: { partition: 'dirichlet:0.3', body: 'mlp:128', featureDim: 64, head: 'linear', lr: 3e-3, rounds, seeds },
    rows,
  };
  save();
}

// ------------------------------------------------------------ 2. slow link
if (values.part === 'slow' || values.part === 'all') {
  const { slowLinkRun } = await import('./slow-link.js');
  out.slowLink = await slowLinkRun({ log: (s) => console.log(s) });
  save();
}
console.log(`wrote ${values.out}`);
