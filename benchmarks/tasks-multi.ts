/**
 * Multi-task consortia (issue #27): sites that learn one or two of several
 * tasks on one body each.
 *
 * - `digits`: the built-in `digits-tasks` over 10 sites (the digit, 10
 *   classes; parity; digit >= 5; the digit's value as a regression target),
 *   each site one or two of them, 60 training rows per site, Dirichlet 0.5
 *   over the digit.
 * - `fashion`: `fashion-mnist-tasks` over 10 sites, the 10 items at even
 *   sites and the 4 groups (tops, bottoms, footwear, bags) at odd ones, 100
 *   training rows per site, Dirichlet 0.5 over the item.
 *
 * Columns: local-only, FedAvg multi-task (a server averages the body, each
 * task's head stays at its site: MELLODDY's design), fedrep-p2p (the same
 * without a server), dFLMoE with heads only (each task mixes that task's
 * heads from the other sites) and with shared bodies. Seeds 1-3.
 *
 *   npm run bench:tasks-multi                       # both cells, writes benchmarks/results/tasks-multi, updates benchmarks/README.md
 *   npm run bench:tasks-multi -- --cells digits --seeds 1
 *   npm run bench:cross                             # the cross-task cell (issue #28)
 *   npm run bench:modal                             # the modality cell: digits as images at some sites, tables at others (issue #28)
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { initBackend, silentLogger, simulate, taskKind, type SimulationConfig } from '@dflmoe/core/internal';
import { gateUse, renderPage, type Chart } from '@dflmoe/cli/internal';

const { values } = parseArgs({
  options: { seeds: { type: 'string', default: '1,2,3' }, cells: { type: 'string', default: 'digits,fashion' }, out: { type: 'string' } },
});
const seeds = values.seeds.split(',').map(Number);
// The cross-task cell and the modality cell (issue #28) have results and a README section of their own.
const own = ({ cross: 'tasks-cross', modal: 'tasks-modal' } as Record<string, string>)[values.cells] ?? 'tasks-multi';
const outDir = values.out ?? `benchmarks/results/${own}`;
mkdirSync(outDir, { recursive: true });
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

const ROUNDS = 30;
const LR = 3e-3;
type Run = Partial<SimulationConfig> & { algorithms: SimulationConfig['algorithms'] };
/** A cell: its data and the runs whose algorithms make its columns (a run of one algorithm names its column). */
interface Cell {
  label: string;
  cfg: Partial<SimulationConfig> & { dataset: string };
  runs: { column?: string; run: Run }[];
}
const STANDARD: Cell['runs'] = [
  { run: { algorithms: ['local', 'fedavg', 'fedrep-p2p', 'dflmoe'] } },
  { column: 'dflmoe+body', run: { algorithms: ['dflmoe'], shareBody: true } },
];
const CELLS: Record<string, Cell> = {
  digits: { label: 'digits, 4 tasks, 10 sites, 60 rows each', cfg: { dataset: 'digits-tasks', trainPerSite: 60 }, runs: STANDARD },
  fashion: {
    label: 'Fashion-MNIST, items at 5 sites and groups at 5, 100 rows each',
    cfg: { dataset: 'fashion-mnist-tasks', trainPerSite: 100, datasetOptions: { maxSamples: 6000 } },
    runs: STANDARD,
  },
  // Experts across tasks (issue #28): "high" (digit >= 5) is a new task at site 0 alone; the others learn the digit, its parity and its value.
  cross: {
    label: 'digits, a new task ("high") at one site, 30 rows per site',
    cfg: {
      dataset: 'digits-tasks',
      trainPerSite: 30,
      siteTasks: [['high'], ['digit'], ['parity'], ['digit', 'value'], ['digit'], ['parity', 'digit'], ['value'], ['digit'], ['parity'], ['digit']],
    },
    runs: [
      { run: { algorithms: ['local', 'dflmoe'] } },
      { column: 'cross 0.5', run: { algorithms: ['dflmoe'], crossTask: true } },
      { column: 'cross 0.3', run: { algorithms: ['dflmoe'], crossTask: true, crossTaskWeight: 0.3 } },
      // With shared bodies every site's body learns from all the tasks' rows, so that the other tasks' heads read features the new task's site also computes.
      { column: 'dflmoe+body', run: { algorithms: ['dflmoe'], shareBody: true } },
      { column: 'cross 0.5+body', run: { algorithms: ['dflmoe'], crossTask: true, shareBody: true } },
    ],
  },
  // Modalities (issue #28): the digits as 8x8 images (a CNN body) at even sites and as 64-column tables (an MLP body) at odd ones.
  modal: {
    label: 'digits held as images (cnn) at 5 sites and as tables (mlp) at 5, 30 rows per site',
    cfg: { dataset: 'digits', trainPerSite: 30, siteModalities: ['image', 'table'] },
    runs: [
      { run: { algorithms: ['local', 'dflmoe'] } },
      { column: 'dflmoe+body', run: { algorithms: ['dflmoe'], shareBody: true } },
      { column: 'local all-table', run: { algorithms: ['local'], siteModalities: ['table'] } },
      { column: 'dflmoe all-table', run: { algorithms: ['dflmoe'], siteModalities: ['table'] } },
      { column: 'dflmoe+body all-table', run: { algorithms: ['dflmoe'], siteModalities: ['table'], shareBody: true } },
    ],
  },
};
type Column = string;
const columnsOf = (cell: string) => CELLS[cell].runs.flatMap((r) => (r.column ? [r.column] : r.run.algorithms));
/** One (cell, seed, column, task): the headline metric over the task's sites, and each site's. */
interface Row {
  cell: string;
  seed: number;
  column: Column;
  task: string;
  metric: string;
  mean: number;
  perSite: Record<string, number>;
  bytesSent: number;
  seconds: number;
}

/** A cell whose sites hold the data in several forms: each form's sites apart (as the cell gives them their forms, whatever form a column's run gives them). */
function modalityRows(cfg: Cell['cfg'], row: Row): Row[] {
  const forms = cfg.siteModalities;
  if (!forms) return [];
  return [...new Set(forms)].map((m) => {
    const perSite = Object.fromEntries(Object.entries(row.perSite).filter(([id]) => forms[Number(/\d+$/.exec(id)?.[0]) % forms.length] === m));
    return { ...row, task: `${row.task}, ${m} sites`, perSite, mean: mean(Object.values(perSite)) };
  });
}

await initBackend({ logger: silentLogger });
const rows: Row[] = [];
const otherForm: { cell: string; seed: number; column: Column; weight: number }[] = [];
const cells = values.cells.split(',');
const t0 = performance.now();
for (const cell of cells) {
  const { cfg } = CELLS[cell];
  for (const seed of seeds) {
    const base = { ...cfg, peers: 10, rounds: ROUNDS, partition: 'dirichlet:0.5', seed, learningRate: LR };
    for (const { column, run } of CELLS[cell].runs) {
      const r = await simulate({ ...base, ...run }, { logger: silentLogger });
      for (const [alg, a] of Object.entries(r.algorithms)) {
        for (const [task, t] of Object.entries(a!.tasks)) {
          const metric = taskKind(t.kind).headline.metric;
          const row = {
            cell,
            seed,
            column: column ?? alg,
            task,
            metric,
            mean: t.metrics[metric].mean,
            perSite: Object.fromEntries(a!.peers.filter((p) => p.tasks[task]).map((p) => [p.id, p.tasks[task][metric] as number])),
            bytesSent: a!.bytesSent,
            seconds: a!.wallSeconds,
          };
          rows.push(row, ...modalityRows(cfg, row));
        }
        // Sites in several forms: the gate weight each site gives the heads of the other forms.
        if (alg === 'dflmoe' && new Set(a!.peers.map((p) => p.modality)).size > 1) {
          const use = gateUse(a!.peers);
          otherForm.push({
            cell,
            seed,
            column: column ?? alg,
            weight: mean(a!.peers.map((p) => use.filter((u) => u.site === p.id && u.expert !== p.modality).reduce((w, u) => w + u.weight, 0))),
          });
        }
      }
    }
    process.stderr.write(`${cell} seed ${seed}: done (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  }
}
const wallSeconds = (performance.now() - t0) / 1000;

/** Per cell and task: each column's mean over seeds, and the site-seeds below their local-only model (accuracy < local - 0.5 pt, RMSE > 1.01 x local). */
const summary = cells.map((cell) => {
  const COLUMNS = columnsOf(cell);
  const tasks = [...new Set(rows.filter((r) => r.cell === cell).map((r) => r.task))];
  return {
    cell,
    label: CELLS[cell].label,
    tasks: tasks.map((task) => {
      const of = (col: Column) => rows.filter((r) => r.cell === cell && r.task === task && r.column === col);
      const metric = of('local')[0].metric;
      const higher = metric === 'accuracy';
      const local = of('local');
      return {
        task,
        metric,
        sites: Object.keys(local[0].perSite).length,
        columns: Object.fromEntries(
          COLUMNS.map((col) => {
            const rs = of(col);
            const below = rs.reduce(
              (n, r) =>
                n +
                Object.entries(r.perSite).filter(([site, v]) => {
                  const l = local.find((x) => x.seed === r.seed)!.perSite[site];
                  return higher ? v < l - 0.005 : v > 1.01 * l;
                }).length,
              0,
            );
            return [col, { mean: mean(rs.map((r) => r.mean)), belowLocal: below, bytesSent: mean(rs.map((r) => r.bytesSent)) }];
          }),
        ),
      };
    }),
  };
});

const fmt = (metric: string, v: number) => (metric === 'accuracy' ? `${(100 * v).toFixed(1)}%` : v.toFixed(3));
const md = [
  `${ROUNDS} rounds, Adam ${LR}, the simulator's default model (mlp body, feature size 64) unless a cell names its bodies, Dirichlet 0.5, seeds ${seeds.join(', ')}; ${wallSeconds.toFixed(0)} s on ${machine}.`,
  'Each task\'s headline metric over the sites that learn it, mean over seeds (accuracy: higher is better; RMSE, in the target\'s units: lower is better); "below local": site-seeds under their own local-only model (accuracy < local - 0.5 pt, RMSE > 1.01 x local).',
  ...summary.flatMap((s) => {
    const COLUMNS = columnsOf(s.cell);
    return [
      '',
      `**${s.label}**`,
      '',
      `| task (sites) | ${COLUMNS.join(' | ')} |`,
      `|---|${COLUMNS.map(() => '---').join('|')}|`,
      ...s.tasks.map((t) => `| ${t.task} (${t.sites}): ${t.metric} | ${COLUMNS.map((c) => fmt(t.metric, t.columns[c].mean)).join(' | ')} |`),
      ...s.tasks.map(
        (t) =>
          `| ${t.task}: below local | ${COLUMNS.map((c) => (c === 'local' ? '-' : `${t.columns[c].belowLocal} / ${t.sites * seeds.length}`)).join(' | ')} |`,
      ),
      `| bytes sent | ${COLUMNS.map((c) => `${(s.tasks[0].columns[c].bytesSent / 2 ** 20).toFixed(1)} MiB`).join(' | ')} |`,
      ...(otherForm.some((o) => o.cell === s.cell)
        ? [
            `| gate weight on the other form's heads | ${COLUMNS.map((c) => {
              const ws = otherForm.filter((o) => o.cell === s.cell && o.column === c).map((o) => o.weight);
              return ws.length ? `${(100 * mean(ws)).toFixed(1)}%` : '-';
            }).join(' | ')} |`,
          ]
        : []),
    ];
  }),
].join('\n');
process.stdout.write(`${md}\n`);

const chartRows = rows.map(({ perSite: _, ...r }) => ({ ...r, series: `${r.cell}: ${r.task}` }));
const chart = (metric: string, title: string): Chart => ({
  id: metric,
  title,
  description: 'Mean over the sites that learn each task and over seeds.',
  spec: {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    width: 560,
    height: 260,
    data: { values: chartRows.filter((r) => r.metric === metric) },
    mark: 'bar',
    encoding: {
      x: { field: 'series', type: 'nominal', title: null },
      xOffset: { field: 'column', type: 'nominal' },
      color: { field: 'column', type: 'nominal', title: 'algorithm' },
      y: {
        aggregate: 'mean',
        field: 'mean',
        type: 'quantitative',
        title: metric,
        scale: { zero: false },
        ...(metric === 'accuracy' ? { axis: { format: '.0%' } } : {}),
      },
      tooltip: [{ field: 'series' }, { field: 'column' }, { aggregate: 'mean', field: 'mean', format: '.4f' }],
    },
  },
  data: chartRows.filter((r) => r.metric === metric),
});
const charts = [
  chart('accuracy', 'Classification tasks: accuracy per algorithm'),
  ...(rows.some((r) => r.metric === 'rmse') ? [chart('rmse', 'Regression tasks: RMSE per algorithm')] : []),
];
writeFileSync(
  join(outDir, 'tasks-multi.json'),
  JSON.stringify(
    {
      date: new Date().toISOString(),
      machine,
      seeds,
      rounds: ROUNDS,
      learningRate: LR,
      wallSeconds,
      rows,
      summary,
      ...(otherForm.length ? { otherForm } : {}),
    },
    null,
    2,
  ) + '\n',
);
writeFileSync(join(outDir, 'report.html'), await renderPage({ title: 'dflmoe benchmark: multi-task sites', intro: machine, tables: [], charts }));
const readme = 'benchmarks/README.md';
const text = readFileSync(readme, 'utf8');
// The README's section of this set of cells: the standard two, the cross-task cell or the modality cell.
const marker = own;
const [a, b] = [`<!-- ${marker}:start -->`, `<!-- ${marker}:end -->`];
if (values.out === undefined && (marker !== 'tasks-multi' || cells.join() === 'digits,fashion') && seeds.length === 3 && text.includes(a) && text.includes(b)) {
  writeFileSync(readme, text.slice(0, text.indexOf(a) + a.length) + '\n' + md + '\n' + text.slice(text.indexOf(b)));
}
