/**
 * Self-contained HTML reports: charts rendered to SVG by Vega-Lite in Node
 * (no network, no browser needed to build them or to open them).
 */
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { DEFAULT_TRAIN, type SimulationResults, type SiteDescription } from '@dflmoe/core';
import { SITE_FILE, algorithmColors, getAlgorithm, isAlgorithmName, metricOf, oneClassification, taskKind, type AlgorithmName } from '@dflmoe/core/internal';
import type { PeerRunResult } from '@dflmoe/p2p';
import { collectResults } from './consortium.js';
import { formatBytes } from './format.js';

export interface Chart {
  id: string;
  title: string;
  description: string;
  spec: TopLevelSpec;
  /** The rows the chart plots (also embedded in the page as JSON). */
  data: Record<string, unknown>[];
}

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  // Loaded when a chart is drawn: every dflmoe process (a site, a server) would otherwise load them at start.
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** The colour scale of a chart's rows: each algorithm in its registry colour, and only the algorithms the rows hold (a legend lists what ran). */
function colorsOf(rows: { algorithm: string }[]): { domain: string[]; range: string[] } {
  const names = [...new Set(rows.map((x) => x.algorithm))];
  const all = algorithmColors(names);
  return { domain: names, range: names.map((n) => all.range[all.domain.indexOf(n)]) };
}

function lineChart(data: { algorithm: string }[], y: string, yTitle: string, yFormat: string, scale?: object): TopLevelSpec {
  const colors = colorsOf(data);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    width: 520,
    height: 260,
    data: { values: data },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'round', type: 'quantitative', title: 'round', axis: { tickMinStep: 1 } },
      y: { field: y, type: 'quantitative', title: yTitle, axis: { format: yFormat }, scale: scale ?? { zero: false } },
      color: { field: 'algorithm', type: 'nominal', scale: colors },
    },
  } as TopLevelSpec;
}

/**
 * What a report charts: accuracy when every site learns one classification
 * task (as before tasks had kinds), else each task's headline metric (a
 * regression's RMSE, in its units), one chart per task.
 */
function reportedMetrics(r: Pick<SimulationResults, 'algorithms'>): { field: string; title: string; format: string; task?: string }[] {
  const runs = Object.values(r.algorithms).filter((a) => a !== undefined);
  if (runs.every((a) => oneClassification(a.tasks))) return [{ field: 'accuracy', title: 'accuracy', format: '.1%' }];
  return Object.entries(runs[0].tasks).map(([task, t]) => {
    const metric = taskKind(t.kind).headline.metric;
    return { field: metric, title: `${metric} of task "${task}"`, format: taskKind(t.kind).shareMetrics.includes(metric) ? '.1%' : '.4~g', task };
  });
}

/** The charts of one simulation run (or of a consortium's site directories, gathered into the same shape). */
export function runCharts(r: Pick<SimulationResults, 'algorithms'>): Chart[] {
  const algs = Object.entries(r.algorithms).filter(([, a]) => a) as [string, NonNullable<SimulationResults['algorithms']['dflmoe']>][];
  const charts = reportedMetrics(r).flatMap((h, k) => metricCharts(algs, h, k === 0 ? '' : `:${h.task}`));
  const perRound = algs.flatMap(([algorithm, a]) => a.rounds.map((x) => ({ algorithm, round: x.round, bytes: x.bytesSent })));
  const sending = perRound.filter((x) => x.bytes > 0);
  charts.push({
    id: 'bytes-per-round',
    title: 'Bytes on the network per round',
    description:
      'All sites together: heads for dFLMoE, whole models to the other members for gossip, models (bodies for FedRep) up and down for the server algorithms (log scale; algorithms that send nothing are left out).',
    spec: lineChart(sending, 'bytes', 'bytes per round', '~s', { type: 'log' }),
    data: sending,
  });
  const d = r.algorithms.dflmoe;
  // Weights by expert (site by whose head), where the keys are heads; and by the experts' task or modality, where the sites learn or hold several.
  if (d && d.peers.some((p) => p.gateWeights && !Object.keys(p.gateWeights).some(isCrossKey))) charts.push(gateChart(d));
  const use = d ? gateUse(d.peers) : [];
  if (use.length) charts.push(gateUseChart(use));
  return charts;
}

/** A cross-task read-out's reliance: `<task> <- <other task>` (`MultiTaskSite.resultExtras`). */
const CROSS = ' <- ';
const isCrossKey = (k: string) => k.includes(CROSS);

/** One cell of the gate-use heatmap: how much a site's task leans on the experts of one task or modality. */
export interface GateUse {
  /** The site. */
  site: string;
  /** The site's task whose gate (or read-out) it is. */
  task: string;
  /** `<site> · <task>`: the heatmap's row. */
  row: string;
  /** The experts' task (a cross-task read-out) or modality (sites holding the data in several forms): the heatmap's column. */
  expert: string;
  /** The summed gate weight (or read-out reliance) of those experts, the site's own head among them. */
  weight: number;
}

/**
 * What each site's gate uses, by the experts' task and modality, from the
 * weights a run's results carry: a cross-task read-out's reliance on each
 * other task (`"high <- digit"`), and, where sites hold the data in several
 * forms (`PeerResult.modality`), the gate weights of each form's heads
 * summed. Empty when neither (every expert of one task and form).
 */
export function gateUse(
  peers: readonly Pick<NonNullable<SimulationResults['algorithms']['dflmoe']>['peers'][number], 'id' | 'tasks' | 'modality' | 'gateWeights'>[],
): GateUse[] {
  const formOf = new Map(peers.map((p) => [p.id, p.modality]));
  const forms = peers.some((p) => p.modality !== undefined);
  const out: GateUse[] = [];
  for (const p of peers) {
    const sums = new Map<string, GateUse>();
    for (const [key, weight] of Object.entries(p.gateWeights ?? {})) {
      const [task, expert] = isCrossKey(key) ? key.split(CROSS) : [Object.keys(p.tasks)[0], formOf.get(key)];
      if (expert === undefined || (!forms && !isCrossKey(key))) continue;
      const k = `${task}\u0000${expert}`;
      const cell = sums.get(k) ?? { site: p.id, task, row: `${p.id} · ${task}`, expert, weight: 0 };
      cell.weight += weight;
      sums.set(k, cell);
    }
    out.push(...sums.values());
  }
  return out;
}

/** The gate-use heatmap: a row per site and task, a column per expert task or modality. */
function gateUseChart(use: GateUse[]): Chart {
  return {
    id: 'gate-use',
    title: "What each site's gate uses, by the experts' task and modality",
    description:
      'Rows: a site and one of its tasks; columns: the task or modality of the experts it mixes (heads of sites that hold the data in that form, the own head among them; ' +
      'with experts across tasks, the share of the read-out that leans on each other task). Blank: no such expert.',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: { step: 48 },
      height: { step: 20 },
      data: { values: use },
      layer: [
        {
          mark: 'rect',
          encoding: {
            color: { field: 'weight', type: 'quantitative', scale: { scheme: 'blues', domain: [0, 1] }, legend: { format: '.0%', title: 'weight' } },
          },
        },
        {
          mark: { type: 'text', fontSize: 9 },
          encoding: {
            text: { field: 'weight', type: 'quantitative', format: '.2f' },
            color: { condition: { test: 'datum.weight > 0.5', value: 'white' }, value: 'black' },
          },
        },
      ],
      encoding: {
        x: { field: 'expert', type: 'nominal', axis: { labelAngle: 0 }, title: "experts' task or modality" },
        y: { field: 'row', type: 'nominal', sort: [...new Set(use.map((u) => u.row))], title: 'site · task' },
        tooltip: [{ field: 'site' }, { field: 'task' }, { field: 'expert' }, { field: 'weight', format: '.3f' }],
      },
    } as TopLevelSpec,
    data: use.map((u) => ({ ...u })),
  };
}

/** The per-round and per-site charts of one metric (`idSuffix` tells a multi-task run's further tasks apart). */
function metricCharts(
  algs: [string, NonNullable<SimulationResults['algorithms']['dflmoe']>][],
  h: ReturnType<typeof reportedMetrics>[number],
  idSuffix: string,
): Chart[] {
  const perRound = algs.flatMap(([algorithm, a]) =>
    a.rounds.map((x) => ({
      algorithm,
      round: x.round,
      [h.field]: h.task ? x.tasks[h.task].mean : x.accuracyMean,
      worst: h.task ? x.tasks[h.task].worst : x.accuracyMin,
    })),
  );
  const share = h.format.endsWith('%');
  // A multi-task run: the sites that learn the task.
  const perPeer = algs.flatMap(([algorithm, a]) =>
    a.peers
      .filter((p) => !h.task || p.tasks[h.task])
      .map((p) => ({ algorithm, peer: p.id, [h.field]: h.task ? metricOf(p.tasks[h.task], h.field) : p.accuracy })),
  );
  return [
    {
      id: `accuracy-per-round${idSuffix}`,
      title: `Mean personalized ${h.title} per round`,
      description: "Each site's model on its own test split, averaged over sites.",
      spec: lineChart(perRound, h.field, `mean ${h.title}`, h.format),
      data: perRound,
    },
    {
      id: `accuracy-per-peer${idSuffix}`,
      title: `Final ${h.title} per site`,
      description: `Personalized ${h.title} of every site after the last round.`,
      spec: {
        $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
        width: { step: 14 },
        height: 260,
        data: { values: perPeer },
        mark: 'bar',
        encoding: {
          x: { field: 'peer', type: 'nominal', title: 'site', sort: null },
          xOffset: { field: 'algorithm', type: 'nominal' },
          y: { field: h.field, type: 'quantitative', axis: { format: share ? '.0%' : '~g' }, scale: share ? { domain: [0, 1] } : { zero: true } },
          color: { field: 'algorithm', type: 'nominal', scale: colorsOf(perPeer) },
          tooltip: [{ field: 'peer' }, { field: 'algorithm' }, { field: h.field, format: share ? '.2%' : '.4~g' }],
        },
      } as TopLevelSpec,
      data: perPeer,
    },
  ];
}

/** dFLMoE's gate weights: site by expert. */
function gateChart(d: NonNullable<SimulationResults['algorithms']['dflmoe']>): Chart {
  const gates = d.peers.flatMap((p) => Object.entries(p.gateWeights ?? {}).map(([expert, weight]) => ({ peer: p.id, expert, weight })));
  return {
    id: 'gate-weights',
    title: 'dFLMoE gate weights',
    description:
      "Mean weight each site gives each expert on its test split. Rows: sites; columns: whose head; the diagonal is a site's own head; blank: not in the pool.",
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: { step: 34 },
      height: { step: 22 },
      data: { values: gates },
      layer: [
        {
          mark: 'rect',
          encoding: { color: { field: 'weight', type: 'quantitative', scale: { scheme: 'greens', domain: [0, 1] }, legend: { format: '.0%' } } },
        },
        {
          mark: { type: 'text', fontSize: 9 },
          encoding: {
            text: { field: 'weight', type: 'quantitative', format: '.2f' },
            color: { condition: { test: 'datum.weight > 0.5', value: 'white' }, value: 'black' },
          },
        },
      ],
      encoding: {
        x: { field: 'expert', type: 'nominal', sort: d.peers.map((p) => p.id), axis: { labelAngle: -40 }, title: 'expert (whose head)' },
        y: { field: 'peer', type: 'nominal', sort: d.peers.map((p) => p.id), title: 'site' },
      },
    } as TopLevelSpec,
    data: gates,
  };
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

export interface PageOptions {
  title: string;
  intro: string;
  tables?: { caption: string; rows: string[][] }[];
  charts: Chart[];
}

/** One HTML page with inline SVG charts and their data. */
export async function renderPage(o: PageOptions): Promise<string> {
  const figures = await Promise.all(
    o.charts.map(
      async (c) => `<figure data-chart="${esc(c.id)}">
  <figcaption><h2>${esc(c.title)}</h2><p>${esc(c.description)}</p></figcaption>
  ${await renderSvg(c.spec)}
  <script type="application/json" class="chart-data">${JSON.stringify(c.data).replace(/</g, '\\u003c')}</script>
</figure>`,
    ),
  );
  const tables = (o.tables ?? []).map(
    (t) => `<table><caption>${esc(t.caption)}</caption>
<thead><tr>${t.rows[0].map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>
<tbody>${t.rows
      .slice(1)
      .map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`)
      .join('\n')}</tbody></table>`,
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(o.title)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.1rem;margin:.2rem 0}figure{margin:2rem 0}figcaption p{color:#555;margin:.2rem 0 .6rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:right}
td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:600;padding:.3rem 0}
</style></head><body>
<h1>${esc(o.title)}</h1>
<p>${esc(o.intro)}</p>
${tables.join('\n')}
${figures.join('\n')}
</body></html>
`;
}

function pct(x: number): string {
  return Number.isFinite(x) ? `${(x * 100).toFixed(2)}%` : '-';
}

/** What `report` takes, for its errors. */
const REPORT_TAKES =
  "report takes the directory a dflmoe simulate (or bench) run wrote, its --out, which holds results.json with every algorithm; or the out directories of a consortium's sites (dflmoe peer), or a directory holding them";

const isSiteDir = (dir: string) => existsSync(join(dir, SITE_FILE));

/** The site directories `dirs` name: each one that is a site, and the sites directly inside each one that is not. */
export function siteDirectories(dirs: string[]): string[] {
  return dirs.flatMap((d) => {
    if (isSiteDir(d)) return [d];
    if (!existsSync(d) || !statSync(d).isDirectory()) return [];
    return readdirSync(d)
      .sort()
      .map((n) => join(d, n))
      .filter((p) => statSync(p).isDirectory() && isSiteDir(p));
  });
}

function readJsonFile<T>(file: string, what: string): T {
  if (!existsSync(file)) throw new Error(`${file} is missing: ${what}`);
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (e) {
    throw new Error(`${file} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The report of a consortium from its sites' directories (each `dflmoe
 * peer`'s out): the same charts as a simulation's, from each site's
 * results.json, grouped by algorithm. Written to `output` (default: the
 * report.html of the one directory given, else of the first site's parent).
 */
export async function writeSitesReport(dirs: string[], output?: string): Promise<string> {
  const sites = siteDirectories(dirs);
  if (sites.length === 0) throw new Error(`${dirs.join(', ')}: no results.json of a run and no site directory (with ${SITE_FILE}): ${REPORT_TAKES}`);
  const byAlg = new Map<AlgorithmName, { dir: string; desc: SiteDescription; result: PeerRunResult }[]>();
  for (const dir of sites) {
    const desc = readJsonFile<SiteDescription>(join(dir, SITE_FILE), 'the site description');
    if (!isAlgorithmName(desc.algorithm)) throw new Error(`${join(dir, SITE_FILE)} is not a dflmoe site description (no algorithm)`);
    const result = readJsonFile<PeerRunResult>(join(dir, 'results.json'), 'the site has not finished its run (report draws finished sites)');
    byAlg.set(desc.algorithm, [...(byAlg.get(desc.algorithm) ?? []), { dir, desc, result }]);
  }
  const algorithms: SimulationResults['algorithms'] = {};
  for (const [alg, list] of byAlg) {
    // The settings the first site ran with, as its site description holds them.
    const d = list[0].desc;
    const settings = { ...d.algorithmOptions, epochs: d.model.train.epochs ?? DEFAULT_TRAIN.epochs };
    algorithms[alg] = collectResults(
      alg,
      { sites: list.map((s) => ({ out: s.dir })) },
      Math.max(...list.map((s) => s.result.wallSeconds)),
      list.map((s) => s.desc.model.body),
      settings,
    );
  }
  const all = [...byAlg.values()].flat();
  const rows = [['site', 'algorithm', 'accuracy', 'rounds', 'train rows', 'test rows', 'bytes sent', 'bytes received', 'seconds', 'directory']];
  for (const s of all) {
    const r = s.result;
    rows.push([
      r.name ?? r.peerId,
      s.desc.algorithm,
      pct(r.accuracy),
      String(r.rounds.length),
      String(r.trainSamples),
      String(r.testSamples),
      formatBytes(r.bytesSent),
      formatBytes(r.bytesReceived),
      r.wallSeconds.toFixed(1),
      s.dir,
    ]);
  }
  const names = [...byAlg.keys()].map((a) => getAlgorithm(a).label);
  const html = await renderPage({
    title: `dflmoe: a consortium of ${all.length} site${all.length > 1 ? 's' : ''} (${names.join(', ')})`,
    intro:
      "From the sites' own directories (each dflmoe peer's results.json). Metrics are personalized: each site's model on its own held-out split. " +
      "Bytes are what the sites counted (a server algorithm's server is not among them).",
    tables: [{ caption: 'Sites', rows }],
    charts: runCharts({ algorithms }),
  });
  const out = output ? resolve(output) : join(dirs.length === 1 ? dirs[0] : dirname(sites[0]), 'report.html');
  writeFileSync(out, html);
  return out;
}

/**
 * Write the report of `dirs`: `<dir>/report.html` for a simulation run
 * directory (one holding results.json with every algorithm), else the report
 * of the consortium whose site directories they are or hold.
 */
export async function writeReport(dirs: string[], output?: string): Promise<string> {
  if (dirs.length === 1 && !isSiteDir(dirs[0]) && existsSync(join(dirs[0], 'results.json'))) return writeRunReport(dirs[0], output);
  return writeSitesReport(dirs, output);
}

/** Write `<dir>/report.html` (or `output`) for a simulation run directory (one holding results.json). */
export async function writeRunReport(dir: string, output?: string): Promise<string> {
  const file = join(dir, 'results.json');
  if (!existsSync(file)) throw new Error(`${file} not found: ${REPORT_TAKES}`);
  let r: SimulationResults;
  try {
    r = JSON.parse(readFileSync(file, 'utf8')) as SimulationResults;
  } catch (e) {
    throw new Error(`${file} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (!r || typeof r !== 'object' || !r.algorithms || !r.config) throw new Error(`${file} does not hold dflmoe simulation results: ${REPORT_TAKES}`);
  // Sites that share bodies: how many of the bytes were bodies.
  const withBodies = Object.values(r.algorithms).some((a) => a?.bodyBytesSent !== undefined);
  const hs = reportedMetrics(r);
  const one = hs.length === 1;
  const h0 = hs[0];
  const rows = [
    [
      'algorithm',
      ...(one ? [h0.task ? `mean ${h0.title}` : 'mean acc'] : ['task', 'metric', 'mean']),
      'std',
      'worst site',
      'bytes sent',
      ...(withBodies ? ['of which bodies'] : []),
      'seconds',
    ],
  ];
  for (const [name, a] of Object.entries(r.algorithms)) {
    if (!a) continue;
    const label = name === 'dflmoe' && r.config.shareBody ? 'dflmoe (shared bodies)' : name;
    const bodies = withBodies ? [a.bodyBytesSent !== undefined ? formatBytes(a.bodyBytesSent) : '-'] : [];
    hs.forEach((h, k) => {
      const m = h.task ? a.tasks[h.task].metrics[h.field] : a.accuracy;
      const f = (v: number) => (h.task ? v.toPrecision(4) : pct(v));
      const worst = f(h.task && !taskKind(a.tasks[h.task].kind).headline.higherIsBetter ? m.max : m.min);
      const traffic = k === 0 ? [formatBytes(a.bytesSent), ...bodies, a.wallSeconds.toFixed(1)] : ['', ...bodies.map(() => ''), ''];
      rows.push([k === 0 ? label : '', ...(one ? [] : [h.task!, h.field]), f(m.mean), f(m.std), worst, ...traffic]);
    });
  }
  const c = r.config;
  const html = await renderPage({
    title: `dflmoe: ${r.dataset.name}, ${c.peers} sites, ${c.partition}`,
    intro:
      `${c.rounds} rounds${c.epochs !== undefined ? ` x ${c.epochs} epoch(s)` : ''}, bodies ${c.bodies.join(', ')}, feature size ${c.featureDim}, seed ${c.seed}, backend ${r.backend}. ` +
      `Metrics are personalized: each site's model on its own held-out split. Data: ${r.dataset.source}`,
    tables: [{ caption: 'Summary', rows }],
    charts: runCharts(r),
  });
  const out = output ? resolve(output) : join(dir, 'report.html');
  writeFileSync(out, html);
  return out;
}
