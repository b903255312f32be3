/**
 * Federated preprocessing as pure functions (no networking): every site
 * summarizes its training rows ({@link summarizeTable} or
 * {@link summarizeDataset}), the sites exchange the summaries (plain JSON),
 * each computes the same agreed schema with {@link mergeSummaries}, and
 * encodes its own table into the agreed layout with {@link encodeWithSchema},
 * standardized with the pooled statistics. A column that some sites lack is
 * kept: it reads as missing at those sites.
 *
 * A summary holds the site's label set and counts, its feature schema
 * (column names, kinds, vocabularies; or a fixed sample shape), and per
 * encoded feature the count of observed cells, the count of missing cells,
 * their sum and their sum of squares. Missing numeric cells are left out of
 * the sums (so the pooled mean is the mean of observed values, and an imputed
 * cell standardizes to 0); one-hot and indicator features are never missing.
 * Sums, not means, so that they add up across sites (and could be added
 * under secure aggregation). Variances come from the pooled sums of squares,
 * in float64: fine for features whose mean is not many orders of magnitude
 * above their spread.
 *
 * The agreed schema does not depend on the order of the summaries: they are
 * sorted by site name first, and the first site's column order is kept.
 */
import type { Standardizer } from './standardize.js';
import {
  encodeTable,
  featureLayout,
  inferTableSchema,
  regressionTargets,
  sortNames,
  takeTableRows,
  type ColumnSchema,
  type RawColumn,
  type RawTable,
  type TableSchema,
} from './table.js';
import { DataError } from './errors.js';
import { featureSize, quantileStrata, type Dataset } from './types.js';

/** Samples of a fixed shape (images, or features already encoded): no columns to agree on. */
export interface TensorSchema {
  /** Marks a tensor schema. */
  kind: 'tensor';
  /** The classes (sorted). */
  classNames: string[];
  /** Shape of one sample, e.g. `[28, 28, 1]`. */
  shape: number[];
}

/** How a site's samples are encoded: a table's columns (`TableSchema`) or a tensor's sample shape (`TensorSchema`). */
export type FeatureSchema = TableSchema | TensorSchema;

/** Per encoded feature: observed cells, missing cells, sum and sum of squares of the observed ones. */
export interface FeatureStats {
  /** Per feature, cells observed (not missing). */
  count: number[];
  /** Per feature, cells missing. */
  missing: number[];
  /** Per feature, the sum of the observed values. */
  sum: number[];
  /** Per feature, the sum of the squares of the observed values. */
  sumSq: number[];
}

/**
 * The task a summary's labels are for: its name and kind; a regression
 * target's sum and sum of squares over the rows (its rows are `numRows`;
 * the label counts and classes are then empty).
 */
export interface SummaryTask {
  /** The task's name (the label column's). */
  name: string;
  /** 'regression'; | Whether the labels are classes or numbers. */
  kind: 'classification' | 'regression';
  /** Regression: the sum of the target over the rows. */
  sum?: number;
  /** Regression: the sum of the target's squares over the rows. */
  sumSq?: number;
}

/**
 * One task of a multi-task site's summary (`LocalSummary.tasks`): the task,
 * over the site's training rows that carry its label.
 */
export interface SummaryTaskEntry extends SummaryTask {
  /** Training rows that carry this task's label. */
  numRows: number;
  /** Classification: the classes (sorted; with the declared ones); regression: empty. */
  classNames: string[];
  /** Rows per class, aligned with `classNames` (regression: empty). */
  labelCounts: number[];
  /** Classification: the label set the site declares for the task, in order, if it declares one. */
  declared?: string[];
}

/** What a site shares about its training rows. Plain JSON. */
export interface LocalSummary {
  /** The task the labels are for (absent: one classification task, named after the label column). */
  task?: SummaryTask;
  /**
   * A multi-task site: each of its tasks over the rows that carry its label
   * (`task` is then absent, and `schema.classNames` and `labelCounts` empty).
   */
  tasks?: SummaryTaskEntry[];
  /** Version of the summary's layout (1). */
  version: 1;
  /** The id of the site the summary is from (its peer ID over libp2p). */
  site: string;
  /** The site's training rows summarized. */
  numRows: number;
  /** The site's schema: its own classes (sorted), vocabularies and missing-value indicators. */
  schema: FeatureSchema;
  /** Rows per class, aligned with `schema.classNames`. */
  labelCounts: number[];
  /** Names of the encoded features in the site's own layout (tables; empty for tensors). */
  featureNames: string[];
  /** Aligned with the site's own encoded layout. */
  stats: FeatureStats;
}

/** What every site computes from all the summaries: the same on every site. */
export interface AgreedSchema {
  /** Version of the agreement's layout (1). */
  version: 1;
  /** Union of the classes and vocabularies (sorted); numeric columns impute with the pooled mean. */
  schema: FeatureSchema;
  /** Encoded feature names (tables) in the agreed order; empty for tensors. */
  featureNames: string[];
  /** Pooled per-feature mean. */
  mean: number[];
  /** Pooled per-feature standard deviation (population; 1 for a constant feature). */
  std: number[];
  /** Pooled stats the mean and std came from. */
  stats: FeatureStats;
  /** Sites whose summaries were merged, sorted. */
  sites: string[];
  /** Training rows over all merged sites. */
  numRows: number;
  /** Rows per class over all sites, aligned with `schema.classNames`. */
  labelCounts: number[];
  /** The task the sites agreed on; a regression target's pooled mean and standard deviation. */
  task?: { name: string; kind: 'classification' | 'regression'; scale?: { mean: number; std: number } };
  /**
   * A multi-task agreement (some site learns several tasks): every task of
   * the merged sites, by name; `task` is then absent and the classes are each task's.
   */
  tasks?: AgreedTask[];
}

/** One task of a multi-task agreement: its kind, the sites that learn it, its label set or a regression target's pooled scale. */
export interface AgreedTask {
  /** The task's name. */
  name: string;
  /** Whether its labels are classes or numbers. */
  kind: 'classification' | 'regression';
  /** Classification: the union of the sites' classes (sorted), or the declared label set in its order; regression: empty. */
  classNames: string[];
  /** Rows per class over the sites that learn it, aligned with `classNames`. */
  labelCounts: number[];
  /** Training rows that carry its label, over those sites. */
  numRows: number;
  /** The sites that learn it, sorted. */
  sites: string[];
  /** Regression: the target's pooled mean and standard deviation. */
  scale?: { mean: number; std: number };
}

/** Guard used by every standardizer: a feature with a smaller spread gets std 1. */
const MIN_STD = 1e-6;

function emptyStats(d: number): FeatureStats {
  return { count: new Array(d).fill(0), missing: new Array(d).fill(0), sum: new Array(d).fill(0), sumSq: new Array(d).fill(0) };
}

/** Count a cell of feature j: missing when it is not a finite number, else into the sums. */
function observe(stats: FeatureStats, j: number, v: number): void {
  if (!Number.isFinite(v)) {
    stats.missing[j]++;
    return;
  }
  stats.count[j]++;
  stats.sum[j] += v;
  stats.sumSq[j] += v * v;
}

function countLabels(classNames: string[], labels: string[]): number[] {
  const index = new Map(classNames.map((c, i) => [c, i]));
  const counts = new Array<number>(classNames.length).fill(0);
  for (const l of labels) counts[index.get(l)!]++;
  return counts;
}

/** Summarize a site's table over `rows` (its training rows; default all). */
export function summarizeTable(table: RawTable, site: string, rows?: ArrayLike<number>, task?: SummaryTask): LocalSummary {
  const sub = rows ? takeTableRows(table, rows) : table;
  const regression = task?.kind === 'regression';
  const inferred = inferTableSchema(sub);
  const schema = regression ? { ...inferred, classNames: [] } : inferred;
  const { featureNames, stats } = tableStats(sub, schema, regression);
  const n = sub.labels.length;
  return {
    version: 1,
    site,
    numRows: n,
    schema,
    labelCounts: regression ? [] : countLabels(schema.classNames, sub.labels),
    featureNames,
    stats,
    ...(task ? { task: regression ? { ...task, ...targetSums(regressionTargets(sub)) } : { name: task.name, kind: task.kind } } : {}),
  };
}

/**
 * A multi-task site's summary (`LocalSummary.tasks`): its features over
 * `rows` (its training rows), with no classes of its own, and `tasks`, each
 * task's entry over those rows that carry its label.
 */
export function summarizeMultiTask(data: RawTable | Dataset, site: string, rows: ArrayLike<number>, tasks: SummaryTaskEntry[]): LocalSummary {
  if ('columns' in data) {
    const sub = takeTableRows(data, rows);
    const schema = { ...inferTableSchema(sub), classNames: [] };
    return { version: 1, site, numRows: sub.labels.length, schema, labelCounts: [], ...tableStats(sub, schema, true), tasks };
  }
  const idx = Array.from(rows);
  return {
    version: 1,
    site,
    numRows: idx.length,
    schema: { kind: 'tensor', classNames: [], shape: [...data.sampleShape] },
    labelCounts: [],
    featureNames: [],
    stats: datasetStats(data, idx),
    tasks,
  };
}

/** A table's per-feature statistics in the layout of `schema` (`unlabelled`: its labels are not classes). */
function tableStats(sub: RawTable, schema: TableSchema, unlabelled: boolean): { featureNames: string[]; stats: FeatureStats } {
  const slots = featureLayout(schema);
  const { features } = encodeTable(unlabelled ? { ...sub, labelled: false } : sub, schema);
  const n = sub.labels.length;
  const d = slots.length;
  const stats = emptyStats(d);
  const byName = new Map(sub.columns.map((c) => [c.name, c]));
  slots.forEach((slot, j) => {
    const raw = byName.get(schema.columns[slot.column].name)!;
    if (slot.role === 'value' && raw.kind === 'numeric') {
      for (let i = 0; i < n; i++) observe(stats, j, raw.values[i]);
    } else {
      stats.count[j] = n;
      for (let i = 0; i < n; i++) {
        const v = features[i * d + j];
        stats.sum[j] += v;
        stats.sumSq[j] += v * v;
      }
    }
  });
  return { featureNames: slots.map((s) => s.name), stats };
}

/** The sum and sum of squares of a regression target (float64). */
export function targetSums(values: Iterable<number>): { sum: number; sumSq: number } {
  let sum = 0;
  let sumSq = 0;
  for (const v of values) {
    sum += v;
    sumSq += v * v;
  }
  return { sum, sumSq };
}

/** Summarize a site's rows of a fixed-shape dataset (images, or features already encoded). */
export function summarizeDataset(ds: Dataset, site: string, rows?: ArrayLike<number>, task?: SummaryTask): LocalSummary {
  const idx = rows ? Array.from(rows) : Array.from({ length: ds.numSamples }, (_, i) => i);
  const stats = datasetStats(ds, idx);
  const present = new Set<number>();
  for (const r of idx) present.add(ds.labels[r]);
  // A regression target: its sums instead of classes (the labels are only its quintiles).
  const dsTask = ds.task;
  if (dsTask?.kind === 'regression') {
    return {
      version: 1,
      site,
      numRows: idx.length,
      schema: { kind: 'tensor', classNames: [], shape: [...ds.sampleShape] },
      labelCounts: [],
      featureNames: [],
      stats,
      task: { name: task?.name ?? dsTask.name, kind: 'regression', ...targetSums(Float32Array.from(idx, (r) => dsTask.values[r])) },
    };
  }
  const classNames = sortNames([...present].map((k) => ds.classNames[k]));
  return {
    version: 1,
    site,
    numRows: idx.length,
    schema: { kind: 'tensor', classNames, shape: [...ds.sampleShape] },
    labelCounts: countLabels(
      classNames,
      idx.map((r) => ds.classNames[ds.labels[r]]),
    ),
    featureNames: [],
    stats,
    ...(task ? { task: { name: task.name, kind: task.kind } } : {}),
  };
}

/** Per-feature statistics of a fixed-shape dataset's rows `idx`. */
function datasetStats(ds: Dataset, idx: number[]): FeatureStats {
  const d = featureSize(ds);
  const stats = emptyStats(d);
  for (const r of idx) for (let j = 0; j < d; j++) observe(stats, j, ds.features[r * d + j]);
  return stats;
}

/** Check a multi-task summary's tasks (`bad` makes the error naming the site). */
function validateTasks(s: LocalSummary, bad: (why: string) => DataError): void {
  const ts = s.tasks!;
  const isCount = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
  const isStrings = (a: unknown) => Array.isArray(a) && a.every((x) => typeof x === 'string');
  if (!Array.isArray(ts) || ts.length === 0) throw bad('tasks must list at least one task');
  if (s.task !== undefined || s.schema.classNames.length > 0) throw bad('a multi-task summary has its classes in its tasks');
  if (new Set(ts.map((t) => t?.name)).size !== ts.length) throw bad('a task is listed twice');
  for (const t of ts) {
    if (typeof t?.name !== 'string' || t.name === '') throw bad('a task has no name');
    if (t.kind !== 'classification' && t.kind !== 'regression') throw bad(`task "${t.name}": unknown kind`);
    if (!isCount(t.numRows) || t.numRows > s.numRows) throw bad(`task "${t.name}": numRows must be a count of at most the summary's rows`);
    if (!isStrings(t.classNames) || new Set(t.classNames).size !== t.classNames.length) throw bad(`task "${t.name}": classNames must be distinct strings`);
    if (!Array.isArray(t.labelCounts) || t.labelCounts.length !== t.classNames.length || !t.labelCounts.every(isCount))
      throw bad(`task "${t.name}": labelCounts must give a count per class`);
    if (t.declared !== undefined && (!isStrings(t.declared) || t.kind === 'regression')) throw bad(`task "${t.name}": bad declared classes`);
    if (t.kind === 'regression') {
      if (t.classNames.length > 0) throw bad(`task "${t.name}" is a regression: it has no classes`);
      if (!Number.isFinite(t.sum) || !Number.isFinite(t.sumSq) || t.sumSq! < 0) throw bad(`task "${t.name}": the target's sums must be finite numbers`);
    } else if (t.labelCounts.reduce((a, b) => a + b, 0) !== t.numRows) throw bad(`task "${t.name}": labelCounts do not add up to its numRows`);
  }
}

/** Check a summary received from elsewhere: structure, sizes, finite numbers. Errors name the site. */
export function validateSummary(s: LocalSummary): void {
  const site = typeof s?.site === 'string' && s.site !== '' ? s.site : undefined;
  const bad = (why: string) => new DataError(`summary from site ${site === undefined ? '(unnamed)' : `"${site}"`} is invalid: ${why}`);
  if (site === undefined) throw bad('no site name');
  if (s.version !== 1) throw bad(`unknown version ${String(s.version)}`);
  const isCount = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
  const isStrings = (a: unknown) => Array.isArray(a) && a.every((x) => typeof x === 'string');
  if (!isCount(s.numRows)) throw bad('numRows is not a non-negative integer');
  const sch = s.schema;
  if (!sch || !isStrings(sch.classNames) || new Set(sch.classNames).size !== sch.classNames.length) throw bad('classNames must be distinct strings');
  if (!Array.isArray(s.labelCounts) || s.labelCounts.length !== sch.classNames.length || !s.labelCounts.every(isCount)) {
    throw bad('labelCounts must give a count per class');
  }
  const t = s.task;
  if (s.tasks !== undefined) validateTasks(s, bad);
  else if (t !== undefined) {
    if (typeof t?.name !== 'string' || t.name === '') throw bad('the task has no name');
    if (t.kind !== 'classification' && t.kind !== 'regression') throw bad(`task "${t.name}": unknown kind`);
  }
  if (t?.kind === 'regression') {
    if (sch.classNames.length > 0) throw bad(`task "${t.name}" is a regression: it has no classes`);
    if (!Number.isFinite(t.sum) || !Number.isFinite(t.sumSq) || t.sumSq! < 0) throw bad(`task "${t.name}": the target's sums must be finite numbers`);
  } else if (s.tasks === undefined && s.labelCounts.reduce((a, b) => a + b, 0) !== s.numRows) throw bad('labelCounts do not add up to numRows');
  let d: number;
  if (sch.kind === 'tensor') {
    if (!Array.isArray(sch.shape) || sch.shape.length < 1 || !sch.shape.every((v) => Number.isInteger(v) && v > 0)) throw bad('bad shape');
    d = sch.shape.reduce((a, b) => a * b, 1);
  } else if (sch.kind === 'table') {
    if (!Array.isArray(sch.columns)) throw bad('no columns');
    for (const c of sch.columns as ColumnSchema[]) {
      if (typeof c?.name !== 'string' || c.name === '') throw bad('a column has no name');
      if (c.kind === 'numeric') {
        if (!Number.isFinite(c.impute) || typeof c.indicator !== 'boolean') throw bad(`column "${c.name}": bad impute or indicator`);
      } else if (c.kind === 'categorical') {
        if (!isStrings(c.categories) || new Set(c.categories).size !== c.categories.length)
          throw bad(`column "${c.name}": categories must be distinct strings`);
      } else throw bad(`column "${(c as { name: string }).name}": unknown kind`);
    }
    if (new Set(sch.columns.map((c) => c.name)).size !== sch.columns.length) throw bad('a column name appears twice');
    const names = featureLayout(sch).map((f) => f.name);
    if (!isStrings(s.featureNames) || s.featureNames.join('\u0000') !== names.join('\u0000')) throw bad('featureNames do not match the schema');
    d = names.length;
  } else throw bad('unknown schema kind');
  const st = s.stats;
  for (const key of ['count', 'missing', 'sum', 'sumSq'] as const) {
    const a = st?.[key];
    if (!Array.isArray(a) || a.length !== d) throw bad(`stats.${key} must hold ${d} numbers`);
    if (!a.every((v) => typeof v === 'number' && Number.isFinite(v))) throw bad(`stats.${key} holds a value that is not a finite number`);
  }
  for (let j = 0; j < d; j++) {
    if (!isCount(st.count[j]) || !isCount(st.missing[j]) || st.count[j] + st.missing[j] !== s.numRows) {
      throw bad(`stats for feature ${j}: count + missing must equal numRows`);
    }
    if (st.sumSq[j] < 0) throw bad(`stats for feature ${j}: negative sum of squares`);
  }
}

function meanStd(stats: FeatureStats): { mean: number[]; std: number[] } {
  const mean = stats.count.map((c, j) => (c > 0 ? stats.sum[j] / c : 0));
  const std = stats.count.map((c, j) => {
    if (c === 0) return 1;
    const s = Math.sqrt(Math.max(0, stats.sumSq[j] / c - mean[j] * mean[j]));
    return s > MIN_STD ? s : 1;
  });
  return { mean, std };
}

function list(names: string[]): string {
  return names.map((n) => `"${n}"`).join(', ');
}

/**
 * Merge every site's summary into the consortium's agreed schema and pooled
 * statistics. Classes and vocabularies are unions (sorted); a numeric column
 * gets an indicator when any site has a missing cell in it or lacks it (a
 * column a site lacks is all-missing there). Errors name the columns whose
 * kind differs between sites, and a site sharing no column with the others.
 */
export function mergeSummaries(summaries: LocalSummary[]): AgreedSchema {
  if (summaries.length === 0) throw new DataError('mergeSummaries needs at least one summary');
  for (const s of summaries) validateSummary(s);
  const sorted = [...summaries].sort((a, b) => (a.site < b.site ? -1 : a.site > b.site ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].site === sorted[i - 1].site) throw new DataError(`two summaries come from site "${sorted[i].site}"`);
  }
  const sites = sorted.map((s) => s.site);
  const kinds = new Set(sorted.map((s) => s.schema.kind));
  if (kinds.size > 1) {
    const tables = sorted.filter((s) => s.schema.kind === 'table').map((s) => s.site);
    const tensors = sorted.filter((s) => s.schema.kind === 'tensor').map((s) => s.site);
    throw new DataError(`sites ${list(tables)} summarize tables but ${list(tensors)} summarize fixed-shape samples (images)`);
  }
  const classNames = sortNames(sorted.flatMap((s) => s.schema.classNames));
  const labelCounts = new Array<number>(classNames.length).fill(0);
  const classIndex = new Map(classNames.map((c, i) => [c, i]));
  for (const s of sorted) s.schema.classNames.forEach((c, k) => (labelCounts[classIndex.get(c)!] += s.labelCounts[k]));
  const numRows = sorted.reduce((a, s) => a + s.numRows, 0);

  let schema: FeatureSchema;
  let featureNames: string[];
  let stats: FeatureStats;
  if (sorted[0].schema.kind === 'tensor') {
    const shape = sorted[0].schema.shape;
    for (const s of sorted) {
      const sh = (s.schema as TensorSchema).shape;
      if (sh.join('x') !== shape.join('x')) {
        throw new DataError(`site "${s.site}" has samples of shape ${sh.join('x')} but site "${sorted[0].site}" has ${shape.join('x')}: resize to one shape`);
      }
    }
    schema = { kind: 'tensor', classNames, shape: [...shape] };
    featureNames = [];
    stats = poolStats(
      sorted.map((s) => s.stats),
      shape.reduce((a, b) => a * b, 1),
      (_, j) => j,
    );
  } else {
    ({ schema, featureNames, stats } = mergeTables(sorted, classNames));
  }
  const { mean, std } = meanStd(stats);
  // Multi-task summaries: every task agreed over the sites that learn it (a one-task summary among them has its task in `tasks` too).
  const multi = sorted.some((s) => s.tasks);
  const task = multi ? undefined : agreedTask(sorted);
  const tasks = multi ? agreedTasks(sorted.map((s) => ({ site: s.site, tasks: s.tasks ?? [] }))) : undefined;
  return { version: 1, schema, featureNames, mean, std, stats, sites, numRows, labelCounts, ...(task ? { task } : {}), ...(tasks ? { tasks } : {}) };
}

/**
 * The task the sites agree on: every site's the same kind (the sites named
 * when not), and a regression target's pooled mean and standard deviation
 * from the sites' sums. Undefined when no site names a task.
 */
function agreedTask(sorted: LocalSummary[]): AgreedSchema['task'] {
  const named = sorted.filter((s) => s.task);
  if (named.length === 0) return undefined;
  const name = named[0].task!.name;
  const kind = agreedKind(
    name,
    sorted.map((s) => ({ site: s.site, kind: s.task?.kind ?? 'classification' })),
  );
  if (kind === 'classification') return { name, kind: 'classification' };
  return { name, kind: 'regression', scale: pooledScale(sorted.map((s) => ({ numRows: s.numRows, sum: s.task!.sum!, sumSq: s.task!.sumSq! }))) };
}

/** The one kind the sites give task `name`; throws naming the sites of each kind when they differ. */
function agreedKind(name: string, at: { site: string; kind: 'classification' | 'regression' }[]): 'classification' | 'regression' {
  const regression = at.filter((s) => s.kind === 'regression').map((s) => s.site);
  const classification = at.filter((s) => s.kind === 'classification').map((s) => s.site);
  if (regression.length > 0 && classification.length > 0) {
    throw new DataError(
      `the label is a regression target at ${list(regression)} but classes at ${list(classification)}: declare one kind for task "${name}" at every site`,
    );
  }
  return regression.length > 0 ? 'regression' : 'classification';
}

/** A regression target's pooled mean and standard deviation from the sites' row counts and sums. */
function pooledScale(parts: { numRows: number; sum: number; sumSq: number }[]): { mean: number; std: number } {
  const n = parts.reduce((a, s) => a + s.numRows, 0);
  // In ascending order, as the features' sums: the same bits whatever order the sites come in.
  const add = (xs: number[]) =>
    Float64Array.from(xs)
      .sort()
      .reduce((a, b) => a + b, 0);
  const mean = n > 0 ? add(parts.map((s) => s.sum)) / n : 0;
  const sd = n > 0 ? Math.sqrt(Math.max(0, add(parts.map((s) => s.sumSq)) / n - mean * mean)) : 0;
  return { mean, std: sd > MIN_STD ? sd : 1 };
}

/** A classification task's summary entry from the labels of its rows (`extra`: classes the site has beyond them, with no rows). */
export function classificationEntry(name: string, labels: string[], extra: string[], declared?: string[]): SummaryTaskEntry {
  const classNames = sortNames([...labels, ...extra]);
  return {
    name,
    kind: 'classification',
    numRows: labels.length,
    classNames,
    labelCounts: countLabels(classNames, labels),
    ...(declared ? { declared: [...declared] } : {}),
  };
}

/**
 * Every task of multi-task sites, agreed per task name over the sites that
 * learn it: one kind (a clash names the sites of each), the label set (the
 * union, sorted, or the one declared: every declaring site must declare the
 * same, and hold no class outside it), and a regression target's pooled
 * scale. Sorted by name; the same whatever order the sites come in.
 */
export function agreedTasks(sites: { site: string; tasks: SummaryTaskEntry[] }[]): AgreedTask[] {
  const sorted = [...sites].sort((a, b) => (a.site < b.site ? -1 : a.site > b.site ? 1 : 0));
  const names = [...new Set(sorted.flatMap((s) => s.tasks.map((t) => t.name)))].sort();
  return names.map((name): AgreedTask => {
    const at = sorted.flatMap((s) => s.tasks.filter((t) => t.name === name).map((t) => ({ site: s.site, t })));
    const kind = agreedKind(
      name,
      at.map((a) => ({ site: a.site, kind: a.t.kind })),
    );
    const base = { name, kind, numRows: at.reduce((a, x) => a + x.t.numRows, 0), sites: at.map((a) => a.site) };
    if (kind === 'regression')
      return { ...base, classNames: [], labelCounts: [], scale: pooledScale(at.map((a) => ({ numRows: a.t.numRows, sum: a.t.sum!, sumSq: a.t.sumSq! }))) };
    const declaring = at.filter((a) => a.t.declared);
    const first = declaring[0];
    for (const d of declaring.slice(1)) {
      if (d.t.declared!.join('\u0000') !== first.t.declared!.join('\u0000')) {
        throw new DataError(
          `site "${d.site}" declares the classes ${list(d.t.declared!)} of task "${name}" but site "${first.site}" declares ${list(first.t.declared!)}`,
        );
      }
    }
    const classNames = first ? [...first.t.declared!] : sortNames(at.flatMap((a) => a.t.classNames));
    for (const a of at) {
      const extra = a.t.classNames.filter((c) => !classNames.includes(c));
      if (extra.length > 0)
        throw new DataError(
          `site "${a.site}" has class${extra.length > 1 ? 'es' : ''} ${list(extra)} of task "${name}", not among the declared classes ${list(classNames)}`,
        );
    }
    const index = new Map(classNames.map((c, k) => [c, k]));
    const labelCounts = new Array<number>(classNames.length).fill(0);
    for (const a of at) a.t.classNames.forEach((c, k) => (labelCounts[index.get(c)!] += a.t.labelCounts[k]));
    return { ...base, classNames, labelCounts };
  });
}

/**
 * The table part of `mergeSummaries`: columns in the first site's order
 * (then those only later sites have), kinds checked, vocabularies merged.
 * A column a site lacks is all-missing there: numeric, it is imputed with
 * the pooled mean of the sites that have it and gets an indicator; it adds
 * nothing to the pooled sums of its value and 1 per row to its indicator's.
 */
function mergeTables(sorted: LocalSummary[], classNames: string[]): { schema: TableSchema; featureNames: string[]; stats: FeatureStats } {
  const sites = sorted.map((s) => s.site);
  const tables = sorted.map((s) => s.schema as TableSchema);
  const order: string[] = [];
  const seen = new Set<string>();
  for (const c of tables.flatMap((t) => t.columns)) {
    if (seen.has(c.name)) continue;
    seen.add(c.name);
    order.push(c.name);
  }
  const has = tables.map((t) => new Map(t.columns.map((c) => [c.name, c])));
  if (tables.length > 1) {
    const alone = tables
      .map((t, i) => (t.columns.some((c) => has.some((h, k) => k !== i && h.has(c.name))) ? undefined : sites[i]))
      .filter((x) => x !== undefined);
    if (alone.length > 0)
      throw new DataError(
        `site${alone.length > 1 ? 's' : ''} ${list(alone)} share${alone.length > 1 ? '' : 's'} no column with the others: check that every site reads the same kind of table`,
      );
  }
  const clashes: string[] = [];
  for (const name of order) {
    const at = { numeric: [] as string[], categorical: [] as string[] };
    has.forEach((h, i) => h.get(name) && at[h.get(name)!.kind].push(sites[i]));
    if (at.numeric.length > 0 && at.categorical.length > 0) {
      clashes.push(`column "${name}" is numeric at ${list(at.numeric)} but categorical at ${list(at.categorical)}`);
    }
  }
  if (clashes.length > 0) throw new DataError(`${clashes.join('; ')}: list such columns in categorical at every site, or fix the cells`);
  const columns = order.map((name): ColumnSchema => {
    const cols = has.map((h) => h.get(name));
    if (cols.find((c) => c)!.kind === 'categorical') {
      return { name, kind: 'categorical', categories: sortNames(cols.flatMap((c) => (c?.kind === 'categorical' ? c.categories : []))) };
    }
    // Indicator when any site has a missing cell (or lacks the column); impute is filled in below from the pooled mean.
    const anyMissing = sorted.some((s, i) => !cols[i] || s.stats.missing[s.featureNames.indexOf(name)] > 0);
    return { name, kind: 'numeric', impute: 0, indicator: anyMissing };
  });
  const schema: TableSchema = { kind: 'table', labelColumn: tables[0].labelColumn, classNames, columns };
  const slots = featureLayout(schema);
  // Three features every site has beyond its own: all zeros (a category it never saw, an indicator for a column
  // with no missing cell), and for a column it lacks, a value never observed and an indicator always 1.
  const locals = sorted.map((s) => new Map(s.featureNames.map((name, j) => [name, j])));
  const withAbsent = sorted.map((s) => ({
    count: [...s.stats.count, s.numRows, 0, s.numRows],
    missing: [...s.stats.missing, 0, s.numRows, 0],
    sum: [...s.stats.sum, 0, 0, s.numRows],
    sumSq: [...s.stats.sumSq, 0, 0, s.numRows],
  }));
  const at = (i: number, j: number) => {
    const d = sorted[i].featureNames.length;
    const slot = slots[j];
    if (!has[i].has(columns[slot.column].name)) return slot.role === 'value' ? d + 1 : slot.role === 'missing' ? d + 2 : d;
    return locals[i].get(slot.name) ?? d;
  };
  const stats = poolStats(withAbsent, slots.length, at);
  slots.forEach((slot, j) => {
    const col = columns[slot.column];
    if (slot.role === 'value' && col.kind === 'numeric') col.impute = stats.count[j] > 0 ? stats.sum[j] / stats.count[j] : 0;
  });
  return { schema, featureNames: slots.map((s) => s.name), stats };
}

/** The columns of `agreed` (a table schema) that a site's summary lacks. */
export function lackedColumns(summary: LocalSummary, agreed: TableSchema): ColumnSchema[] {
  const own = summary.schema.kind === 'table' ? new Set(summary.schema.columns.map((c) => c.name)) : new Set<string>();
  return agreed.columns.filter((c) => !own.has(c.name));
}

/**
 * How a site's own summary fits an agreement made without it (it came after
 * the others had agreed): `problems` are what the agreement would leave out
 * (its classes, columns or categories; the site cannot train on it),
 * `notes` what it takes in differently (a column it lacks reads as missing,
 * the statistics are the others').
 */
export function agreementFit(own: LocalSummary, agreed: AgreedSchema): { problems: string[]; notes: string[] } {
  const problems: string[] = [];
  const notes: string[] = [];
  const s = (n: number, one: string, more: string) => (n > 1 ? more : one);
  const newClasses = own.schema.classNames.filter((c) => !agreed.schema.classNames.includes(c));
  if (newClasses.length > 0)
    problems.push(`${s(newClasses.length, 'class', 'classes')} ${list(newClasses)} (the agreed classes are ${list(agreed.schema.classNames)})`);
  const sch = agreed.schema;
  if (own.schema.kind !== sch.kind) {
    problems.push(own.schema.kind === 'table' ? 'a table (the agreement is for fixed-shape samples)' : 'fixed-shape samples (the agreement is for tables)');
  } else if (own.schema.kind === 'tensor' && sch.kind === 'tensor') {
    if (own.schema.shape.join('x') !== sch.shape.join('x'))
      problems.push(`samples of shape ${own.schema.shape.join('x')} (the agreement's are ${sch.shape.join('x')})`);
  } else if (own.schema.kind === 'table' && sch.kind === 'table') {
    const agreedCols = new Map(sch.columns.map((c) => [c.name, c]));
    const extra = own.schema.columns.filter((c) => !agreedCols.has(c.name)).map((c) => c.name);
    if (extra.length > 0) problems.push(`${s(extra.length, 'column', 'columns')} ${list(extra)} (not in the agreement)`);
    for (const c of own.schema.columns) {
      const a = agreedCols.get(c.name);
      if (!a) continue;
      if (a.kind !== c.kind) problems.push(`column "${c.name}", ${c.kind} here but ${a.kind} in the agreement`);
      else if (c.kind === 'categorical' && a.kind === 'categorical') {
        const cats = c.categories.filter((x) => !a.categories.includes(x));
        if (cats.length > 0) problems.push(`${s(cats.length, 'category', 'categories')} ${list(cats)} of column "${c.name}"`);
      } else if (c.kind === 'numeric' && a.kind === 'numeric' && !a.indicator) {
        const k = own.featureNames.indexOf(c.name);
        if (own.stats.missing[k] > 0)
          notes.push(
            `column "${c.name}" has ${own.stats.missing[k]} missing training cells here, imputed with the agreed mean and no "${c.name}_missing" indicator`,
          );
      }
    }
    for (const c of lackedColumns(own, sch)) notes.push(`this site lacks column "${c.name}": its rows read as missing there`);
  }
  notes.push(`inputs are standardized with the statistics of ${list(agreed.sites)} (${agreed.numRows} training rows), without this site's own ${own.numRows}`);
  return { problems, notes };
}

/**
 * Pool per-site statistics into `d` features; feature j of site i is
 * `at(i, j)` in that site's arrays. Sums add the sites' values in ascending
 * order, so that the result has the same bits whatever order the sites
 * come in (sites sort by name here, and names differ between a simulation
 * and a real network).
 */
function poolStats(sites: FeatureStats[], d: number, at: (i: number, j: number) => number): FeatureStats {
  const out = emptyStats(d);
  const parts = new Float64Array(sites.length);
  const canonical = (get: (s: FeatureStats, k: number) => number, j: number) => {
    sites.forEach((s, i) => (parts[i] = get(s, at(i, j))));
    parts.sort();
    let t = 0;
    for (const v of parts) t += v;
    return t;
  };
  for (let j = 0; j < d; j++) {
    for (let i = 0; i < sites.length; i++) {
      const k = at(i, j);
      out.count[j] += sites[i].count[k];
      out.missing[j] += sites[i].missing[k];
    }
    out.sum[j] = canonical((s, k) => s.sum[k], j);
    out.sumSq[j] = canonical((s, k) => s.sumSq[k], j);
  }
  return out;
}

/** The pooled standardizer of an agreed schema. */
export function agreedStandardizer(agreed: AgreedSchema): Standardizer {
  return { mean: Float32Array.from(agreed.mean), std: Float32Array.from(agreed.std) };
}

/**
 * Encode a site's data into the agreed layout: a raw table is encoded
 * column by column (same columns in the same order at every site, one-hot
 * over the union vocabulary, missing numeric cells imputed with the pooled
 * mean, indicator columns); a fixed-shape dataset keeps its features and has
 * its labels renumbered to the agreed classes. Returns the dataset (all of
 * the site's rows, train and test, in their order) and the pooled
 * standardizer.
 */
export function encodeWithSchema(data: RawTable | Dataset, agreed: AgreedSchema): { dataset: Dataset; standardizer: Standardizer } {
  const schema = agreed.schema;
  const standardizer = agreedStandardizer(agreed);
  if ('columns' in data) {
    if (schema.kind !== 'table') throw new DataError(`${data.source} is a table but the agreed schema is for samples of shape ${schema.shape.join('x')}`);
    // A column of the agreement this site lacks is all-missing here (the agreement gave it an indicator).
    const rows = data.labels.length;
    const absent = schema.columns
      .filter((c) => !data.columns.some((d) => d.name === c.name))
      .map((c): RawColumn =>
        c.kind === 'numeric'
          ? { name: c.name, kind: 'numeric', values: new Float64Array(rows).fill(NaN) }
          : { name: c.name, kind: 'categorical', values: new Array<string | null>(rows).fill(null) },
      );
    const full = absent.length > 0 ? { ...data, columns: [...data.columns, ...absent] } : data;
    const regression = agreed.task?.kind === 'regression';
    // Multi-task: the labels are each task's (encoded by the caller).
    const { features, labels, featureNames } = encodeTable(regression || agreed.tasks ? { ...full, labelled: false } : full, schema);
    const n = labels.length;
    // A regression target: its values, and their quintiles where classes would be.
    const target = regression ? regressionTargets(data) : undefined;
    const strata = target ? quantileStrata(target) : { labels, classNames: [...schema.classNames] };
    return {
      dataset: {
        name: data.source,
        features,
        ...strata,
        numSamples: n,
        sampleShape: [featureNames.length],
        description: `${data.source}: ${n} rows encoded with the consortium's schema of sites ${agreed.sites.join(', ')} (${featureNames.length} features).`,
        source: data.source,
        featureNames,
        schema,
        ...(target
          ? { task: { name: agreed.task!.name, kind: 'regression' as const, values: target } }
          : agreed.task
            ? { task: { name: agreed.task.name, kind: 'classification' as const } }
            : {}),
      },
      standardizer,
    };
  }
  if (schema.kind !== 'tensor') throw new DataError(`${data.name} holds fixed-shape samples but the agreed schema is for tables`);
  if (data.sampleShape.join('x') !== schema.shape.join('x')) {
    throw new DataError(`${data.name} has samples of shape ${data.sampleShape.join('x')} but the consortium agreed on ${schema.shape.join('x')}`);
  }
  // A regression target travels as it is (its quintiles stay the labels); a multi-task site's labels are encoded per task.
  if (agreed.tasks) return { dataset: data, standardizer };
  if (agreed.task?.kind === 'regression') {
    if (data.task?.kind !== 'regression')
      throw new DataError(`${data.name} has no regression target, but the consortium agreed on the regression task "${agreed.task.name}"`);
    return { dataset: data, standardizer };
  }
  const index = new Map(schema.classNames.map((c, i) => [c, i]));
  const labels = Int32Array.from(data.labels, (l, i) => {
    const k = index.get(data.classNames[l]);
    if (k === undefined)
      throw new DataError(`${data.name}, sample ${i}: class "${data.classNames[l]}" is not one of the agreed classes ${schema.classNames.join(', ')}`);
    return k;
  });
  return { dataset: { ...data, labels, classNames: [...schema.classNames] }, standardizer };
}

/**
 * The standardizer a consortium agrees on when site i holds rows
 * `splits[i].train` of `ds`: each site's summary of its training rows,
 * merged (what the simulator does in place of an exchange over the network).
 */
export function federatedStandardizer(ds: Dataset, splits: { train: ArrayLike<number> }[]): Standardizer {
  return agreedStandardizer(federatedAgreement(ds, splits));
}

/** The agreement a consortium makes when site i holds rows `splits[i].train` of `ds` (its standardizer, and a regression target's pooled scale). */
export function federatedAgreement(ds: Dataset, splits: { train: ArrayLike<number> }[]): AgreedSchema {
  return mergeSummaries(splits.map((s, i) => summarizeDataset(ds, `site-${i}`, s.train)));
}
