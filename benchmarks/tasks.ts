/**
 * Sites with their own tasks (issue #27). This first part: a regression
 * consortium on a real table shipped with the project (scikit-learn's
 * diabetes progression table: 442 patients, 10 features), over 5 sites,
 * iid and Dirichlet 0.5 over the target's quintiles (sites that see
 * different ranges of the disease's progression), seeds 1-3. Columns:
 * local-only, FedAvg (server), fedrep-p2p, dFLMoE with heads only and with
 * shared bodies, and the centralized bound: one model trained on every
 * site's training rows pooled, evaluated on each site's test rows.
 *
 *   npm run bench:tasks                  # writes benchmarks/results/tasks, updates benchmarks/README.md
 *   npm run bench:tasks -- --seeds 1     # one seed
 *   npm run bench:tasks -- --body mlp:32 --feature-dim 16   # a model sized for a small table (results apart, README untouched)
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  DEFAULT_SIMULATION,
  LocalPeer,
  disposePeerData,
  evaluateTask,
  fittedTask,
  initBackend,
  modelProbs,
  parseBodySpec,
  preparePeerData,
  silentLogger,
  simulate,
} from '@dflmoe/core/internal';
import { federatedStandardizer, loadDataset, parsePartition, partition } from '@dflmoe/data/internal';
import { renderPage, type Chart } from '@dflmoe/cli/internal';

const { values } = parseArgs({
  options: { seeds: { type: 'string', default: '1,2,3' }, body: { type: 'string' }, 'feature-dim': { type: 'string' }, out: { type: 'string' } },
});
const seeds = values.seeds.split(',').map(Number);
// The model: the simulator's defaults (sized for images), or one given (a smaller one suits a 10-feature table).
const BODY = values.body ?? DEFAULT_SIMULATION.bodies[0];
const FEATURE_DIM = Number(values['feature-dim'] ?? DEFAULT_SIMULATION.featureDim);
const defaults = values.body === undefined && values['feature-dim'] === undefined;
const outDir = values.out ?? (defaults ? 'benchmarks/results/tasks' : `benchmarks/results/tasks-${BODY.replace(/[^a-z0-9]+/gi, '-')}-f${FEATURE_DIM}`);
mkdirSync(outDir, { recursive: true });
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

const PEERS = 5;
const ROUNDS = 30;
const LR = 3e-3;
const PARTITIONS = ['iid', 'dirichlet:0.5'];
const COLUMNS = ['local', 'fedavg', 'fedrep-p2p', 'dflmoe', 'dflmoe+body', 'pooled'] as const;
type Column = (typeof COLUMNS)[number];
interface Row {
  partition: string;
  seed: number;
  column: Column;
  rmse: number;
  mae: number;
  r2: number;
  perSite: number[];
  bytesSent: number;
  seconds: number;
}

/** The centralized bound: one model on every site's training rows, each site's test rows evaluated apart (the simulator's splits and scaling). */
async function pooledBound(part: string, seed: number): Promise<Omit<Row, 'partition' | 'seed' | 'column'>> {
  const t0 = performance.now();
  const ds = loadDataset('diabetes');
  const c = DEFAULT_SIMULATION;
  const splits = partition(ds.labels, ds.classNames.length, PEERS, parsePartition(part), { seed, testFraction: c.testFraction, minSize: c.minSize });
  const st = federatedStandardizer(ds, splits);
  const train = Int32Array.from(splits.flatMap((s) => [...s.train]));
  const task = fittedTask(ds, train);
  const data = preparePeerData(ds, { train, test: new Int32Array(0) }, st, task);
  const peer = new LocalPeer({
    id: 'pooled',
    data,
    body: parseBodySpec(BODY),
    featureDim: FEATURE_DIM,
    headHidden: c.headHidden,
    train: { epochs: 1, batchSize: c.batchSize, learningRate: LR, optimizer: 'adam', seed },
  });
  try {
    for (let r = 1; r <= ROUNDS; r++) await peer.trainRound(r);
    const sites = splits.map((s) => {
      const d = preparePeerData(ds, { train: new Int32Array(0), test: s.test }, st, task);
      try {
        return evaluateTask(task, d.xTest, d.yTest, (xb) => modelProbs(peer, xb));
      } finally {
        disposePeerData(d);
      }
    });
    const rmse = sites.map((m) => m.rmse);
    return {
      rmse: mean(rmse),
      mae: mean(sites.map((m) => m.mae)),
      r2: mean(sites.map((m) => m.r2)),
      perSite: rmse,
      bytesSent: 0,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    peer.dispose();
    disposePeerData(data);
  }
}

await initBackend({ logger: silentLogger });
const rows: Row[] = [];
const t0 = performance.now();
for (const part of PARTITIONS) {
  for (const seed of seeds) {
    const base = { dataset: 'diabetes', peers: PEERS, rounds: ROUNDS, partition: part, seed, learningRate: LR, bodies: [BODY], featureDim: FEATURE_DIM };
    const runs = [
      await simulate({ ...base, algorithms: ['local', 'fedavg', 'fedrep-p2p', 'dflmoe'] }, { logger: silentLogger }),
      await simulate({ ...base, algorithms: ['dflmoe'], shareBody: true }, { logger: silentLogger }),
    ];
    for (const [k, r] of runs.entries()) {
      for (const [alg, a] of Object.entries(r.algorithms)) {
        const t = a!.tasks.progression.metrics;
        rows.push({
          partition: part,
          seed,
          column: (k === 1 ? 'dflmoe+body' : alg) as Column,
          rmse: t.rmse.mean,
          mae: t.mae.mean,
          r2: t.r2.mean,
          perSite: a!.peers.map((p) => p.tasks.progression.rmse as number),
          bytesSent: a!.bytesSent,
          seconds: a!.wallSeconds,
        });
      }
    }
    rows.push({ partition: part, seed, column: 'pooled', ...(await pooledBound(part, seed)) });
    process.stderr.write(`${part} seed ${seed}: done\n`);
  }
}
const wallSeconds = (performance.now() - t0) / 1000;

// Per cell: mean over seeds; the bars a site must clear (MELLODDY's: every site at least its local RMSE x 1.01) and the gap closed.
const cell = (part: string, col: Column) => rows.filter((r) => r.partition === part && r.column === col);
const summary = PARTITIONS.map((part) => {
  const local = cell(part, 'local');
  const pooled = mean(cell(part, 'pooled').map((r) => r.rmse));
  const localMean = mean(local.map((r) => r.rmse));
  return {
    partition: part,
    pooled,
    local: localMean,
    columns: Object.fromEntries(
      COLUMNS.map((col) => {
        const rs = cell(part, col);
        const rmse = mean(rs.map((r) => r.rmse));
        // Sites (over seeds) whose RMSE is above 1.01 x their own local-only RMSE.
        const worse =
          col === 'pooled' ? 0 : rs.reduce((n, r) => n + r.perSite.filter((v, i) => v > 1.01 * local.find((l) => l.seed === r.seed)!.perSite[i]).length, 0);
        return [
          col,
          {
            rmse,
            r2: mean(rs.map((r) => r.r2)),
            gapClosed: localMean - pooled !== 0 ? (localMean - rmse) / (localMean - pooled) : NaN,
            sitesWorseThanLocal: worse,
            bytesPerSite: mean(rs.map((r) => r.bytesSent)) / PEERS,
          },
        ];
      }),
    ),
  };
});

const md = [
  `Diabetes progression (442 rows, 10 features; target's standard deviation 77.0), ${PEERS} sites, ${ROUNDS} rounds, Adam ${LR}, body ${BODY}, feature size ${FEATURE_DIM}, seeds ${seeds.join(', ')}; ${wallSeconds.toFixed(0)} s on ${machine}.`,
  'RMSE in the target\'s units (lower is better), mean over sites and seeds; "gap closed": the share of the distance from local-only to the pooled (centralized) bound; "sites > 1.01 local": site-seeds whose RMSE is above 1.01 x their own local-only RMSE.',
  '',
  `| partition | ${COLUMNS.join(' | ')} |`,
  `|---|${COLUMNS.map(() => '---').join('|')}|`,
  ...summary.map((s) => `| ${s.partition} | ${COLUMNS.map((c) => s.columns[c].rmse.toFixed(2)).join(' | ')} |`),
  ...summary.map((s) => `| ${s.partition}: R^2 | ${COLUMNS.map((c) => s.columns[c].r2.toFixed(3)).join(' | ')} |`),
  ...summary.map(
    (s) =>
      `| ${s.partition}: gap closed | ${COLUMNS.map((c) => (c === 'local' || c === 'pooled' ? '-' : `${(100 * s.columns[c].gapClosed).toFixed(0)}%`)).join(' | ')} |`,
  ),
  ...summary.map(
    (s) =>
      `| ${s.partition}: sites > 1.01 local | ${COLUMNS.map((c) => (c === 'local' || c === 'pooled' ? '-' : `${s.columns[c].sitesWorseThanLocal} / ${PEERS * seeds.length}`)).join(' | ')} |`,
  ),
].join('\n');
process.stdout.write(`${md}\n`);

const chartRows = rows.map(({ perSite: _, ...r }) => r);
const charts: Chart[] = [
  {
    id: 'rmse',
    title: 'RMSE per algorithm (diabetes, 5 sites)',
    description: 'Mean over sites and seeds. Lower is better; "pooled" is the centralized bound (one model on every site\'s training rows).',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: 520,
      height: 280,
      data: { values: chartRows },
      mark: 'bar',
      encoding: {
        x: { field: 'column', type: 'nominal', sort: [...COLUMNS], title: null },
        xOffset: { field: 'partition', type: 'nominal' },
        color: { field: 'partition', type: 'nominal' },
        y: { aggregate: 'mean', field: 'rmse', type: 'quantitative', title: 'RMSE (mean over sites and seeds)', scale: { zero: false } },
        tooltip: [{ field: 'column' }, { field: 'partition' }, { aggregate: 'mean', field: 'rmse', format: '.2f' }],
      },
    },
    data: chartRows,
  },
];
writeFileSync(
  join(outDir, 'tasks.json'),
  JSON.stringify({ date: new Date().toISOString(), machine, seeds, peers: PEERS, rounds: ROUNDS, learningRate: LR, wallSeconds, rows, summary }, null, 2) +
    '\n',
);
writeFileSync(
  join(outDir, 'report.html'),
  await renderPage({
    title: 'dflmoe benchmark: tasks',
    intro: machine,
    tables: [
      { caption: 'Diabetes', rows: [['partition', ...COLUMNS], ...summary.map((s) => [s.partition, ...COLUMNS.map((c) => s.columns[c].rmse.toFixed(2))])] },
    ],
    charts,
  }),
);
const readme = 'benchmarks/README.md';
const text = readFileSync(readme, 'utf8');
const [a, b] = ['<!-- tasks:start -->', '<!-- tasks:end -->'];
if (defaults && text.includes(a) && text.includes(b))
  writeFileSync(readme, text.slice(0, text.indexOf(a) + a.length) + '\n' + md + '\n' + text.slice(text.indexOf(b)));
