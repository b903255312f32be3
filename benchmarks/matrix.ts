/**
 * The recorded comparison: datasets x partitions x algorithms x seeds, equal
 * rounds and epochs for every algorithm. Each cell is a `dflmoe simulate`
 * process (two at a time, one per core).
 *
 *   npm run bench              # full matrix; updates benchmarks/README.md
 *   npm run bench -- --quick   # a few minutes; writes benchmarks/results/quick/
 *   npm run bench -- --algorithms dflmoe,fedavg --optimizer sgd   # (default: every registered algorithm, adam)
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ALGORITHMS, OPTIMIZERS, algorithmColors, getAlgorithm, type AlgorithmName, type OptimizerKind, type SimulationResults } from '@dflmoe/core';
import { createProgress, renderPage, startProcess, waitExit, type Chart } from '@dflmoe/cli';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    jobs: { type: 'string', default: '2' },
    algorithms: { type: 'string', default: ALGORITHMS.join(',') },
    optimizer: { type: 'string', default: 'adam' },
  },
});
const quick = values.quick!;
const algorithms = values.algorithms!.split(',').map((a) => getAlgorithm(a.trim()).name) as AlgorithmName[];
const optimizer = values.optimizer as OptimizerKind;
if (!OPTIMIZERS.includes(optimizer)) throw new Error(`unknown optimizer "${optimizer}"; choose from ${OPTIMIZERS.join(', ')}`);

interface Cell { dataset: string; peers: number; extra: string[]; partition: string; seed: number }
const datasets = quick
  ? [{ dataset: 'breast-cancer', peers: 4, extra: [] }, { dataset: 'digits', peers: 6, extra: [] }]
  : [
      { dataset: 'breast-cancer', peers: 4, extra: [] },
      { dataset: 'digits', peers: 8, extra: [] },
      { dataset: 'fashion-mnist', peers: 10, extra: ['--max-samples', '20000'] },
    ];
const partitions = quick ? ['iid', 'dirichlet:0.1'] : ['iid', 'dirichlet:0.5', 'dirichlet:0.1', 'shards:2'];
const seeds = quick ? [1] : [1, 2, 3];
const rounds = quick ? 3 : 10;
const epochs = 1;
const outDir = quick ? 'benchmarks/results/quick' : 'benchmarks/results';
const runsDir = join(outDir, 'runs');
mkdirSync(runsDir, { recursive: true });

const cells: Cell[] = datasets.flatMap((d) => partitions.flatMap((partition) => seeds.map((seed) => ({ ...d, partition, seed }))));
const cellDir = (c: Cell) => join(runsDir, `${c.dataset}-${c.partition.replace(':', '')}-s${c.seed}`);

// ------------------------------------------------------------ run the cells
const t0 = performance.now();
const progress = createProgress('bench', cells.length, 'cell');
let done = 0;
const queue = [...cells];
async function worker(): Promise<void> {
  for (let c = queue.shift(); c; c = queue.shift()) {
    const dir = cellDir(c);
    const args = [
      'simulate', '--dataset', c.dataset, '--peers', String(c.peers), '--partition', c.partition, '--seed', String(c.seed),
      '--rounds', String(rounds), '--epochs', String(epochs), '--algorithms', algorithms.join(','), '--optimizer', optimizer, '--quiet', '--out', dir, ...c.extra,
    ];
    mkdirSync(dir, { recursive: true });
    const code = await waitExit(startProcess(args, join(dir, 'log.txt'), { DFLMOE_LOG_LEVEL: 'warn' }), 3 * 3600 * 1000);
    if (code !== 0) throw new Error(`cell ${dir} failed (exit ${code}); see ${join(dir, 'log.txt')}`);
    done++;
    const el = (performance.now() - t0) / 1000;
    progress.update(done, `${c.dataset} ${c.partition} seed ${c.seed}  (${el.toFixed(0)} s so far, ~${((el / done) * (cells.length - done)).toFixed(0)} s left)`);
  }
}
await Promise.all(Array.from({ length: Number(values.jobs) }, worker));
progress.stop();
const wallSeconds = (performance.now() - t0) / 1000;

// ------------------------------------------------------------ aggregate
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const std = (xs: number[]) => Math.sqrt(mean(xs.map((x) => (x - mean(xs)) ** 2)));
const results = new Map(cells.map((c) => [c, JSON.parse(readFileSync(join(cellDir(c), 'results.json'), 'utf8')) as SimulationResults]));
const backend = [...results.values()][0].backend;

interface Row {
  dataset: string; partition: string; algorithm: AlgorithmName;
  accMean: number; accStd: number; worstPeer: number; bytesPerPeerRound: number; roundsToTarget: number | null; target: number; seconds: number;
}
const rows: Row[] = [];
for (const d of datasets) {
  for (const partition of partitions) {
    const group = cells.filter((c) => c.dataset === d.dataset && c.partition === partition);
    // Target: 95% of the best final mean accuracy of any algorithm, per seed.
    const targets = group.map((c) => 0.95 * Math.max(...algorithms.map((a) => results.get(c)!.algorithms[a]!.accuracy.mean)));
    for (const algorithm of algorithms) {
      const rs = group.map((c) => results.get(c)!.algorithms[algorithm]!);
      const reach = rs.map((r, i) => r.rounds.find((x) => x.accuracyMean >= targets[i])?.round ?? null);
      rows.push({
        dataset: d.dataset, partition, algorithm,
        accMean: mean(rs.map((r) => r.accuracy.mean)), accStd: std(rs.map((r) => r.accuracy.mean)),
        worstPeer: mean(rs.map((r) => r.accuracy.min)),
        bytesPerPeerRound: mean(rs.map((r) => r.bytesSent / (d.peers * rounds))),
        roundsToTarget: reach.every((x) => x !== null) ? mean(reach as number[]) : null,
        target: mean(targets),
        seconds: mean(rs.map((r) => r.wallSeconds)),
      });
    }
  }
}

// ------------------------------------------------------------ tables, JSON, report
const p = (x: number) => `${(100 * x).toFixed(2)}`;
const kib = (x: number) => (x === 0 ? '0' : x < 1024 ? `${x.toFixed(0)} B` : `${(x / 1024).toFixed(1)} KiB`);
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, tfjs backend ${backend}`;
const settings = `${rounds} rounds x ${epochs} epoch, batch 32, ${optimizer} 1e-3, MLP body (128) -> 64 features, linear head, dFLMoE alpha 0.2, fedavg-ft 1 fine-tuning epoch, fedrep 1 head epoch, seeds ${seeds.join(', ')}`;
let md = `Machine: ${machine}. Settings: ${settings}. Matrix wall time ${(wallSeconds / 60).toFixed(1)} min (${algorithms.length} algorithms, ${cells.length} cells, 2 at a time).\n\n`;
md += 'Accuracy is the mean personalized accuracy over sites (each site\'s model on its own test split), as mean +- std over seeds; "worst site" is the lowest site accuracy (mean over seeds); "to target" is the first round whose mean accuracy reaches 95% of the best final accuracy of any algorithm in that cell (mean over seeds; - if some seed never reaches it).\n';
for (const d of datasets) {
  md += `\n#### ${d.dataset} (${d.peers} sites${d.extra.length ? `, ${d.extra.join(' ')}` : ''})\n\n| partition | algorithm | accuracy % | worst site % | bytes/site/round | to target | seconds |\n|---|---|---|---|---|---|---|\n`;
  for (const r of rows.filter((x) => x.dataset === d.dataset)) {
    md += `| ${r.partition} | ${r.algorithm} | ${p(r.accMean)} +- ${p(r.accStd)} | ${p(r.worstPeer)} | ${kib(r.bytesPerPeerRound)} | ${r.roundsToTarget?.toFixed(1) ?? '-'} | ${r.seconds.toFixed(1)} |\n`;
  }
}
writeFileSync(join(outDir, quick ? 'matrix-quick.json' : 'matrix.json'), JSON.stringify({ date: new Date().toISOString(), machine, settings, wallSeconds, rows }, null, 2) + '\n');
writeFileSync(join(outDir, quick ? 'tables-quick.md' : 'tables.md'), md);
if (!quick && existsSync('benchmarks/README.md')) {
  const readme = readFileSync('benchmarks/README.md', 'utf8');
  const [a, b] = ['<!-- matrix:start -->', '<!-- matrix:end -->'];
  if (readme.includes(a) && readme.includes(b)) {
    writeFileSync('benchmarks/README.md', readme.slice(0, readme.indexOf(a) + a.length) + '\n' + md + readme.slice(readme.indexOf(b)));
  }
}

const ALG = algorithmColors(algorithms);
const charts: Chart[] = datasets.map((d) => {
  const data = rows.filter((r) => r.dataset === d.dataset).map((r) => ({ partition: r.partition, algorithm: r.algorithm, accuracy: r.accMean, lo: r.accMean - r.accStd, hi: r.accMean + r.accStd }));
  return {
    id: `accuracy-${d.dataset}`, title: `${d.dataset}: mean personalized accuracy by partition`,
    description: `Bars: mean over seeds; whiskers: +- one std. ${d.peers} sites, ${rounds} rounds.`,
    data,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json', width: { step: 26 }, height: 240, data: { values: data },
      encoding: { x: { field: 'partition', type: 'nominal', sort: partitions }, xOffset: { field: 'algorithm', type: 'nominal' }, color: { field: 'algorithm', type: 'nominal', scale: ALG } },
      layer: [
        { mark: 'bar', encoding: { y: { field: 'accuracy', type: 'quantitative', axis: { format: '.0%' }, scale: { domain: [0, 1] } } } },
        { mark: { type: 'rule', color: 'black' }, encoding: { y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
      ],
    } as Chart['spec'],
  };
});
const bytes = rows.filter((r) => r.bytesPerPeerRound > 0).map((r) => ({ dataset: r.dataset, algorithm: r.algorithm, bytes: r.bytesPerPeerRound }));
charts.push({
  id: 'bytes', title: 'Bytes per site per round', description: 'Mean over partitions and seeds (log scale); local-only sends nothing.', data: bytes,
  spec: {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json', width: { step: 30 }, height: 220, data: { values: bytes }, mark: 'bar',
    encoding: {
      x: { field: 'dataset', type: 'nominal' }, xOffset: { field: 'algorithm', type: 'nominal' },
      y: { aggregate: 'mean', field: 'bytes', type: 'quantitative', scale: { type: 'log' }, axis: { format: '~s' }, title: 'bytes' },
      color: { field: 'algorithm', type: 'nominal', scale: ALG },
    },
  } as Chart['spec'],
});
const table = [['dataset', 'partition', 'algorithm', 'accuracy', 'std', 'worst site', 'bytes/site/round', 'to target', 'seconds']].concat(
  rows.map((r) => [r.dataset, r.partition, r.algorithm, p(r.accMean), p(r.accStd), p(r.worstPeer), kib(r.bytesPerPeerRound), r.roundsToTarget?.toFixed(1) ?? '-', r.seconds.toFixed(1)]),
);
writeFileSync(join(outDir, 'report.html'), await renderPage({ title: `dflmoe benchmark${quick ? ' (quick)' : ''}`, intro: `${machine}. ${settings}.`, tables: [{ caption: 'All cells', rows: table }], charts }));
process.stdout.write(md + `\nwrote ${join(outDir, 'report.html')} and ${join(outDir, quick ? 'tables-quick.md' : 'tables.md')}; each cell's own report is in ${runsDir}/*/report.html\n`);
