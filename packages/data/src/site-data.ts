/**
 * A real site's own data, from reading its files to tensors-ready arrays,
 * with the federated preprocessing in between (no row leaves the site):
 *
 * 1. {@link loadSiteData}: read the site's own source (`csv:<file>`,
 *    `images:<dir>`, a built-in dataset, or a simulated share) and split its
 *    rows into train and test (stratified, seeded).
 * 2. {@link siteStatement}: what the site tells the others: the summary of
 *    its training rows (`LocalSummary`: label set, schema, counts, sums and
 *    sums of squares) and the label set it declares, if any.
 * 3. {@link reconcileStatements}: every site computes, from every
 *    statement, the same agreed schema; a site whose schema cannot be
 *    reconciled with the others is left out, with the reason.
 * 4. {@link encodeSiteData}: encode the site's rows in the agreed layout
 *    and standardize them with the pooled (or its own) statistics.
 *
 * {@link readInputs} encodes new rows (a CSV file or an image folder) for a
 * trained site the same way.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { loadDataset, refuseContinuousLabels, subsample } from './datasets.js';
import {
  classificationEntry,
  encodeWithSchema,
  lackedColumns,
  mergeSummaries,
  summarizeDataset,
  summarizeMultiTask,
  summarizeTable,
  targetSums,
  validateSummary,
  type AgreedSchema,
  type FeatureSchema,
  type LocalSummary,
  type SummaryTaskEntry,
} from './federated.js';
import { datasetTaskEntry } from './multi-task.js';
import { decodeImages, listImageInputs, loadImageFolder } from './images.js';
import { partition, type PeerSplit } from './partition.js';
import { Rng } from './rng.js';
import { readShare } from './share.js';
import { fitStandardizer, type Standardizer } from './standardize.js';
import {
  caseClashes,
  detectDelimiter,
  encodeTable,
  quoteGroup,
  readCsvTable,
  regressionTargets,
  sortNames,
  takeTableRows,
  type RawTable,
  type TableSchema,
} from './table.js';
import { DataError } from './errors.js';
import { featureSize, quantileStrata, type Dataset, type DatasetTaskColumn } from './types.js';
import { modalityOf, type Modality } from './modality.js';

/** A site's `data` settings (paths already resolved). */
export interface SiteDataSpec {
  /** `csv:<file>`, `images:<dir>`, or a built-in dataset (`breast-cancer`, `digits`, `fashion-mnist[:<dir>]`, `synthetic[:...]`). */
  dataset: string;
  /** csv: the label column (default `label`). */
  labelColumn?: string;
  /** csv: what the label column holds (see `CsvOptions.taskKind`), and the task's name (default: the column's). */
  task?: { name?: string; kind?: 'classification' | 'regression' };
  /**
   * Several tasks (multi-task): each task's name, label column (csv;
   * default its name), kind and optionally its declared label set. A row
   * lacking a task's label (an empty cell) stays in the other tasks.
   */
  tasks?: { name: string; column?: string; kind: 'classification' | 'regression'; classes?: string[] }[];
  /** csv: where the user names the label column, for the error when it is missing (e.g. `data.labelColumn in the site config`). */
  labelColumnSetting?: string;
  /** csv: keep only these columns... */
  features?: string[];
  /** ...or drop these. */
  drop?: string[];
  /** csv: columns to treat as categories even when their cells are numbers. */
  categorical?: string[];
  /** The consortium's label set, in order: the site's labels must be among them, and every site that declares one must declare the same. */
  classes?: string[];
  /** images: [height, width] of every sample (default: the first image's size). */
  imageSize?: [number, number];
  /** images: 1 (grayscale, default) or 3 (RGB). */
  channels?: 1 | 3;
  /** images: how to reach imageSize (default fill: stretch). */
  fit?: 'fill' | 'cover' | 'contain';
  /** Seed of the site's train/test split (and the simulator's partition) and of `maxSamples`' subset. */
  seed: number;
  /** Share of the site's rows held out for its test split. */
  testFraction: number;
  /** A seeded random subset of at most this many rows. */
  maxSamples?: number;
  /** fashion-mnist: directory of the idx files. */
  dataDir?: string;
  /** The simulator's partition mode: this site is share `index` of `peers` of one dataset. */
  simulate?: {
    peers: number;
    index: number;
    partition: string;
    minSize: number;
    /** A share file written by the simulator: only this site's rows (else the whole dataset is read and partitioned). */
    share?: string;
  };
}

/** How new inputs are read for a trained site. */
export type InputSpec =
  | { kind: 'table'; labelColumn: string }
  | { kind: 'images'; fit?: 'fill' | 'cover' | 'contain' }
  /** Already-numeric features (built-in datasets): CSV columns named `featureNames` (or every column but the label, in order). */
  | { kind: 'features'; labelColumn: string; featureNames?: string[] };

/** What every {@link SiteData} holds, whatever its kind. */
export interface SiteDataBase {
  /** The site's train and test rows. */
  split: PeerSplit;
  /** Every class in the site's rows (and its declared ones). */
  classes: string[];
  /** The label set the site declares (ordered), if it declares one. */
  declared?: string[];
  /** How the site's inputs are read, and how new inputs must be (columns, image size, features). */
  input: InputSpec;
  /** One line on what the data is and where it came from. */
  description: string;
  /** Cells worth a look (stray text in a numeric column, ...). */
  warnings: string[];
  /** The task the site declared (its name and kind), if it declared one. */
  task?: { name: string; kind: 'classification' | 'regression' };
  /** A multi-task site: its tasks (`classes` and `declared` are then each task's). */
  tasks?: SiteTask[];
}

/** One task of a multi-task site's data. */
export interface SiteTask {
  /** The task's name (what the sites that learn it share). */
  name: string;
  /** A classification or a regression. */
  kind: 'classification' | 'regression';
  /** A table: the task's label column. */
  column?: string;
  /** Classification: every class in the site's rows (and its declared ones); regression: empty. */
  classes: string[];
  /** The label set the site declares for the task (ordered), if it declares one. */
  declared?: string[];
}

/** A site's own data after {@link loadSiteData}: a table (`csv:`) or tensors (images, built-in datasets), with its split. */
export type SiteData = (SiteDataBase & { kind: 'table'; table: RawTable }) | (SiteDataBase & { kind: 'tensor'; dataset: Dataset });

/** What a site shares before training: its summary and the label set it declares. Plain JSON. */
export interface SiteStatement {
  /** The site's summary of its training rows. */
  summary: LocalSummary;
  /** The label set the site declares (`data.classes`), in order, if it declares one. */
  declaredClasses?: string[];
}

/** A stratified, seeded train/test split of all `labels` (class indices). */
function ownSplit(labels: Int32Array, numClasses: number, seed: number, testFraction: number): PeerSplit {
  return partition(labels, numClasses, 1, 'iid', { seed, testFraction, minSize: 1 })[0];
}

function checkDeclared(declared: string[] | undefined, classes: string[], where: string): void {
  if (!declared) return;
  if (new Set(declared).size !== declared.length) throw new DataError(`data.classes lists a class twice: ${declared.join(', ')}`);
  const extra = classes.filter((c) => !declared.includes(c));
  if (extra.length > 0) {
    throw new DataError(
      `${where} has class${extra.length > 1 ? 'es' : ''} ${extra.map((c) => `"${c}"`).join(', ')} that data.classes (${declared.join(', ')}) does not list`,
    );
  }
}

/** Read a site's own data and split it into train and test. */
export async function loadSiteData(spec: SiteDataSpec): Promise<SiteData> {
  const sim = spec.simulate;
  if (sim?.share) {
    const { dataset, split, info } = readShare(sim.share);
    if (info.index !== sim.index || info.peers !== sim.peers) {
      throw new DataError(`${sim.share} holds site ${info.index} of ${info.peers}, but this config is site ${sim.index} of ${sim.peers}`);
    }
    checkDeclared(spec.classes, dataset.classNames, sim.share);
    return tensorSite(dataset, split, spec, spec.classes ?? dataset.classNames);
  }
  if (spec.dataset.startsWith('csv:') && spec.tasks && spec.tasks.length > 1) return multiTaskTable(spec);
  if (spec.dataset.startsWith('csv:')) {
    const file = spec.dataset.slice(4);
    const table = cappedRows(readCsvTable(file, spec), spec);
    const task = spec.task ? { name: spec.task.name ?? table.labelColumn, kind: spec.task.kind ?? 'classification' } : undefined;
    const regression = task?.kind === 'regression';
    // A regression target's quintiles stand for classes where rows are split (stratified by the target's range).
    const strata = regression ? quantileStrata(regressionTargets(table)) : undefined;
    const classes = strata ? strata.classNames : sortNames(table.labels);
    if (!regression) checkDeclared(spec.classes, classes, table.source);
    if (!regression && task?.kind === undefined) refuseContinuousLabels(table, classes);
    const index = new Map(classes.map((c, i) => [c, i]));
    const labels = strata ? strata.labels : Int32Array.from(table.labels, (l) => index.get(l)!);
    const split = sim
      ? partition(labels, classes.length, sim.peers, sim.partition, { seed: spec.seed, testFraction: spec.testFraction, minSize: sim.minSize })[sim.index]
      : ownSplit(labels, classes.length, spec.seed, spec.testFraction);
    if (split.train.length === 0) throw new DataError(`${table.source}: no training rows (it has ${table.labels.length} rows)`);
    const siteClasses = regression ? [] : sortNames([...split.train, ...split.test].map((r) => table.labels[r]));
    return {
      kind: 'table',
      table,
      split,
      classes: regression ? [] : sortNames([...siteClasses, ...(spec.classes ?? [])]),
      declared: regression ? undefined : spec.classes,
      input: { kind: 'table', labelColumn: table.labelColumn },
      description:
        `${table.source}: ${split.train.length} training and ${split.test.length} test rows, ${table.columns.length} feature columns` +
        (task ? `, task "${task.name}" (${task.kind} of column "${table.labelColumn}")` : ''),
      warnings: table.warnings,
      ...(task ? { task } : {}),
    };
  }
  const ds = spec.dataset.startsWith('images:')
    ? await loadImageFolder(spec.dataset.slice('images:'.length), { imageSize: spec.imageSize, channels: spec.channels, fit: spec.fit })
    : loadDataset(spec.dataset, { seed: spec.seed, maxSamples: spec.maxSamples, dataDir: spec.dataDir, labelColumn: spec.labelColumn });
  const sub =
    spec.dataset.startsWith('images:') && spec.maxSamples !== undefined && spec.maxSamples < ds.numSamples ? subsample(ds, spec.maxSamples, spec.seed) : ds;
  if (spec.task?.kind === 'regression' && sub.task?.kind !== 'regression')
    throw new DataError(`${sub.name}: a regression task needs a table (csv:<file>) whose column holds the numbers`);
  checkDeclared(spec.classes, sub.classNames, sub.name);
  const split = sim
    ? partition(sub.labels, sub.classNames.length, sim.peers, sim.partition, { seed: spec.seed, testFraction: spec.testFraction, minSize: sim.minSize })[
        sim.index
      ]
    : ownSplit(sub.labels, sub.classNames.length, spec.seed, spec.testFraction);
  // A built-in dataset names its label set; an image folder's classes are its own sub-folders.
  const declared = spec.classes ?? (spec.dataset.startsWith('images:') ? undefined : sub.classNames);
  return tensorSite(sub, split, spec, declared);
}

/** `table`, or a seeded random subset of `spec.maxSamples` of its rows. */
function cappedRows(table: RawTable, spec: SiteDataSpec): RawTable {
  if (spec.maxSamples === undefined || spec.maxSamples >= table.labels.length) return table;
  const idx = new Rng(spec.seed).shuffle(Int32Array.from(table.labels, (_, i) => i)) as Int32Array;
  return takeTableRows(table, idx.subarray(0, spec.maxSamples));
}

/**
 * A multi-task site's table: every task's column a label (never a
 * feature), a row lacking a task's label kept for the others; split
 * stratified by the first task's label.
 */
function multiTaskTable(spec: SiteDataSpec): SiteData {
  const sim = spec.simulate;
  const specs = spec.tasks!.map((t) => ({ ...t, column: t.column ?? t.name }));
  const table = cappedRows(readCsvTable(spec.dataset.slice(4), { ...spec, taskColumns: specs.map((t) => t.column) }), spec);
  const strata = taskStrata(table, specs[0]);
  const split = sim
    ? partition(strata.labels, strata.count, sim.peers, sim.partition, { seed: spec.seed, testFraction: spec.testFraction, minSize: sim.minSize })[sim.index]
    : ownSplit(strata.labels, strata.count, spec.seed, spec.testFraction);
  if (split.train.length === 0) throw new DataError(`${table.source}: no training rows (it has ${table.labels.length} rows)`);
  const rows = [...split.train, ...split.test];
  const tasks = specs.map((t): SiteTask => {
    const labels = table.taskLabels![t.column];
    if (t.kind === 'regression') {
      regressionTargets({ ...table, labelColumn: t.column, labels }, 'nan');
      return { name: t.name, kind: t.kind, column: t.column, classes: [] };
    }
    checkDeclared(t.classes, sortNames(labels.filter((l) => l !== '')), `${table.source} (task "${t.name}")`);
    const own = sortNames(rows.map((r) => labels[r]).filter((l) => l !== ''));
    return {
      name: t.name,
      kind: t.kind,
      column: t.column,
      classes: sortNames([...own, ...(t.classes ?? [])]),
      ...(t.classes ? { declared: [...t.classes] } : {}),
    };
  });
  return {
    kind: 'table',
    table,
    split,
    classes: [],
    input: { kind: 'table', labelColumn: table.labelColumn },
    description:
      `${table.source}: ${split.train.length} training and ${split.test.length} test rows, ${table.columns.length} feature columns, ` +
      `tasks ${tasks.map((t) => `"${t.name}" (${t.kind} of column "${t.column}")`).join(', ')}`,
    warnings: table.warnings,
    tasks,
  };
}

/** What a multi-task table's rows are split by: the first task's class (a row without it: a stratum of its own), or its target's quintile. */
function taskStrata(table: RawTable, task: { column: string; kind: 'classification' | 'regression' }): { labels: Int32Array; count: number } {
  const labels = table.taskLabels![task.column];
  if (task.kind === 'regression') return { labels: quantileStrata(regressionTargets({ ...table, labelColumn: task.column, labels }, 'nan')).labels, count: 5 };
  const classes = sortNames(labels.filter((l) => l !== ''));
  const index = new Map(classes.map((c, i) => [c, i]));
  return { labels: Int32Array.from(labels, (l) => index.get(l) ?? classes.length), count: classes.length + 1 };
}

function tensorSite(ds: Dataset, split: PeerSplit, spec: SiteDataSpec, declared: string[] | undefined): SiteData {
  if (ds.tasks) return multiTaskTensorSite(ds, split, spec);
  const present = new Set<number>();
  for (const r of [...split.train, ...split.test]) present.add(ds.labels[r]);
  const own = [...present].sort((a, b) => a - b).map((k) => ds.classNames[k]);
  const images = spec.dataset.startsWith('images:');
  const input: InputSpec = images
    ? { kind: 'images', ...(spec.fit ? { fit: spec.fit } : {}) }
    : { kind: 'features', labelColumn: ds.schema?.labelColumn ?? spec.labelColumn ?? 'label', ...(ds.featureNames ? { featureNames: ds.featureNames } : {}) };
  // A dataset with a regression target (the built-in diabetes table, or a share of one) is that task; else a named classification.
  const name = ds.task?.name ?? spec.task?.name;
  const kind = ds.task?.kind ?? 'classification';
  return {
    ...(name !== undefined ? { task: { name, kind } } : {}),
    kind: 'tensor',
    dataset: ds,
    split,
    ...(kind === 'regression' ? { classes: [], declared: undefined } : { classes: declared ? [...declared] : sortNames(own), declared }),
    input,
    description: `${ds.name}: ${split.train.length} training and ${split.test.length} test samples of shape ${ds.sampleShape.join('x')}`,
    warnings: [],
  };
}

/** A multi-task dataset's site (a simulator's share of `digits-tasks`, say): the tasks it learns (`spec.tasks`, default all), each declaring its classes. */
function multiTaskTensorSite(ds: Dataset, split: PeerSplit, spec: SiteDataSpec): SiteData {
  const wanted = spec.tasks?.map((t) => t.name);
  const cols = wanted
    ? wanted.map((name) => {
        const c = ds.tasks!.find((t) => t.name === name);
        if (!c) throw new DataError(`${ds.name} has no task "${name}"; its tasks are ${ds.tasks!.map((t) => t.name).join(', ')}`);
        return c;
      })
    : ds.tasks!;
  const tasks = cols.map((c): SiteTask =>
    c.kind === 'regression'
      ? { name: c.name, kind: 'regression', classes: [] }
      : { name: c.name, kind: 'classification', classes: [...c.classNames], declared: [...c.classNames] },
  );
  return {
    kind: 'tensor',
    dataset: { ...ds, tasks: cols },
    split,
    classes: [],
    input: { kind: 'features', labelColumn: spec.labelColumn ?? 'label', ...(ds.featureNames ? { featureNames: ds.featureNames } : {}) },
    description: `${ds.name}: ${split.train.length} training and ${split.test.length} test samples of shape ${ds.sampleShape.join('x')}, tasks ${tasks.map((t) => `"${t.name}" (${t.kind})`).join(', ')}`,
    warnings: [],
    tasks,
  };
}

/** `summary` with `classes` added to its label set (with no rows), sorted as label sets are. */
export function withClasses(summary: LocalSummary, classes: string[]): LocalSummary {
  const names = sortNames([...summary.schema.classNames, ...classes]);
  if (names.length === summary.schema.classNames.length) return summary;
  const counts = new Map(summary.schema.classNames.map((c, k) => [c, summary.labelCounts[k]]));
  return { ...summary, schema: { ...summary.schema, classNames: names }, labelCounts: names.map((c) => counts.get(c) ?? 0) };
}

/** The site's statement: the summary of its training rows under the name `site`, with its whole label set. */
export function siteStatement(data: SiteData, site: string): SiteStatement {
  if (data.tasks) {
    const train = data.split.train;
    return {
      summary: summarizeMultiTask(
        data.kind === 'table' ? data.table : data.dataset,
        site,
        train,
        data.tasks.map((t) => taskEntry(data, t, train)),
      ),
    };
  }
  const summary =
    data.kind === 'table' ? summarizeTable(data.table, site, data.split.train, data.task) : summarizeDataset(data.dataset, site, data.split.train, data.task);
  return { summary: withClasses(summary, data.classes), ...(data.declared ? { declaredClasses: [...data.declared] } : {}) };
}

/** A multi-task site's summary entry of task `t` over its rows `train` (those that carry its label count). */
function taskEntry(data: SiteData, t: SiteTask, train: Int32Array): SummaryTaskEntry {
  if (data.kind === 'tensor') return datasetTaskEntry(data.dataset, t.name, train, t.declared);
  const labels = data.table.taskLabels![t.column!];
  const own = Array.from(train).filter((r) => labels[r] !== '');
  if (t.kind === 'regression') {
    const values = regressionTargets({ ...data.table, labelColumn: t.column!, labels }, 'nan');
    return { name: t.name, kind: t.kind, numRows: own.length, classNames: [], labelCounts: [], ...targetSums(own.map((r) => values[r])) };
  }
  return classificationEntry(
    t.name,
    own.map((r) => labels[r]),
    t.classes,
    t.declared,
  );
}

/** What `reconcileStatements` agreed: the schema, the sites merged, those left out with the reason, and warnings. */
export interface Reconciled {
  /** The agreed schema and pooled statistics. */
  agreed: AgreedSchema;
  /** Sites whose statements were merged, sorted. */
  included: string[];
  /** Sites left out, with the reason (naming the columns or classes). */
  excluded: { site: string; reason: string }[];
  /** Things that merge but look wrong (a site sharing no class with the others). */
  warnings: string[];
  /**
   * Seen from site `self`: sites that hold the data in another form (tables
   * beside images), which agree on a schema of their own; set apart, not
   * left out (their heads are experts here).
   */
  otherForms?: { site: string; form: Modality }[];
}

const quote = (xs: string[]) => xs.map((x) => `"${x}"`).join(', ');

/** Throws a DataError when these statements cannot make one schema. */
function checkGroup(group: SiteStatement[]): AgreedSchema {
  const declaring = group.filter((s) => s.declaredClasses);
  const first = declaring[0];
  for (const s of declaring.slice(1)) {
    if (s.declaredClasses!.join('\u0000') !== first.declaredClasses!.join('\u0000')) {
      throw new DataError(
        `site "${s.summary.site}" declares the classes ${quote(s.declaredClasses!)} but site "${first.summary.site}" declares ${quote(first.declaredClasses!)}`,
      );
    }
  }
  if (first) {
    for (const s of group) {
      const extra = s.summary.schema.classNames.filter((c) => !first.declaredClasses!.includes(c));
      if (extra.length > 0) {
        throw new DataError(
          `site "${s.summary.site}" has class${extra.length > 1 ? 'es' : ''} ${quote(extra)}, not among the declared classes ${quote(first.declaredClasses!)}`,
        );
      }
    }
  }
  const agreed = mergeSummaries(group.map((s) => s.summary));
  if (!first) return agreed;
  // The declared order (with every declared class) instead of the sorted union.
  const counts = new Map(agreed.schema.classNames.map((c, k) => [c, agreed.labelCounts[k]]));
  const classNames = [...first.declaredClasses!];
  return { ...agreed, schema: { ...agreed.schema, classNames }, labelCounts: classNames.map((c) => counts.get(c) ?? 0) };
}

/**
 * The consortium's agreed schema from every site's statement. The same
 * statements give the same result at every site, in any order. Sites that
 * fit together are merged; a site whose schema cannot join them (columns
 * missing or of another kind, another sample shape, tables versus images,
 * classes outside a declared label set) is left out with the reason. Sites
 * that fit with the most others go first, then by name. Given `self` (the
 * site reconciling), sites naming another task than its own are left out
 * first: a site merges with the sites that learn its task.
 */
export function reconcileStatements(statements: SiteStatement[], self?: string): Reconciled {
  if (statements.length === 0) throw new DataError('no statements to reconcile');
  if (statements.some((s) => s.summary?.tasks !== undefined)) return reconcileMultiTask(statements, self);
  const excluded: Reconciled['excluded'] = [];
  const valid: SiteStatement[] = [];
  // Seen from site `self`: sites that name another task than its own learn something else, and are not merged.
  const own = statements.find((s) => s.summary?.site === self)?.summary.task?.name;
  const taskWarnings: string[] = [];
  if (own !== undefined) {
    const others = statements.filter((s) => s.summary?.site !== self && typeof s.summary?.task?.name === 'string' && s.summary.task.name !== own);
    for (const s of others)
      excluded.push({
        site: s.summary.site,
        reason: `site "${s.summary.site}" learns task "${s.summary.task!.name}", this site "${own}": sites merge with those that learn their task`,
      });
    if (others.length > 0 && others.length === statements.length - 1) taskWarnings.push(`no other site learns task "${own}": this site trains alone on it`);
    statements = statements.filter((s) => !others.includes(s));
  }
  for (const s of statements) {
    try {
      validateSummary(s.summary);
      valid.push(s);
    } catch (e) {
      excluded.push({ site: String(s.summary?.site), reason: (e as Error).message });
    }
  }
  const { same, otherForms } = splitForms(valid, self);
  const { accepted, agreed } = acceptFitting(same, checkGroup, excluded);
  const warnings = [...taskWarnings, ...groupWarnings(accepted, agreed)];
  return { agreed, included: accepted.map((s) => s.summary.site).sort(), excluded, warnings, ...(otherForms.length ? { otherForms } : {}) };
}

/** The form of a statement's data: a table (columns, or fixed-shape samples of one axis, such as a simulator's share of pixels), or images. */
export const statementForm = (s: SiteStatement): Modality =>
  s.summary.schema.kind === 'table' ? 'table' : (modalityOf({ sampleShape: s.summary.schema.shape }) ?? 'image');

/**
 * Seen from site `self` (when it is among them): the valid statements of its
 * own form, and the sites of the other form, which agree apart.
 */
function splitForms(valid: SiteStatement[], self: string | undefined): { same: SiteStatement[]; otherForms: NonNullable<Reconciled['otherForms']> } {
  const mine = valid.find((s) => s.summary.site === self);
  if (!mine) return { same: valid, otherForms: [] };
  const form = statementForm(mine);
  return {
    same: valid.filter((s) => statementForm(s) === form),
    otherForms: valid.filter((s) => statementForm(s) !== form).map((s) => ({ site: s.summary.site, form: statementForm(s) })),
  };
}

/**
 * Of the valid statements, those that fit together under `check` (the
 * sites that fit with the most others first, then by name), and their
 * agreement; each one that does not fit is added to `excluded` with the reason.
 */
function acceptFitting(
  valid: SiteStatement[],
  check: (group: SiteStatement[]) => AgreedSchema,
  excluded: Reconciled['excluded'],
): { accepted: SiteStatement[]; agreed: AgreedSchema } {
  const checkGroup = check;
  const sites = [...valid].sort((a, b) => (a.summary.site < b.summary.site ? -1 : a.summary.site > b.summary.site ? 1 : 0));
  const fits = (group: SiteStatement[]): string | undefined => {
    try {
      checkGroup(group);
      return undefined;
    } catch (e) {
      if (e instanceof DataError) return e.message;
      throw e;
    }
  };
  const degree = sites.map((a, i) => sites.filter((b, j) => i !== j && fits([a, b]) === undefined).length);
  const order = sites
    .map((s, i) => ({ s, d: degree[i], i }))
    .sort((x, y) => y.d - x.d || x.i - y.i)
    .map((x) => x.s);
  const accepted: SiteStatement[] = [];
  for (const s of order) {
    const why = fits([...accepted, s]);
    if (why === undefined) accepted.push(s);
    else {
      const others = accepted.map((a) => a.summary.site);
      excluded.push({
        site: s.summary.site,
        reason: `site "${s.summary.site}" cannot join ${others.length ? `sites ${quote(others)}` : 'the consortium'}: ${why}`,
      });
    }
  }
  if (accepted.length === 0) throw new DataError(`no site has a usable summary: ${excluded.map((e) => e.reason).join('; ')}`);
  return { accepted, agreed: checkGroup(accepted) };
}

/**
 * `reconcileStatements` when some site learns several tasks: every site
 * whose data fits is merged (the features, and a body shared across tasks,
 * are the consortium's), and each task is agreed over the sites that learn
 * it (`AgreedSchema.tasks`: its kind, a clash naming the sites; its label
 * set; a regression target's pooled scale). A one-task site's statement
 * takes part as a site with that one task. Given `self`, a task of its own
 * that no other merged site learns is said (once) to train alone.
 */
function reconcileMultiTask(statements: SiteStatement[], self?: string): Reconciled {
  const excluded: Reconciled['excluded'] = [];
  const valid: SiteStatement[] = [];
  for (const s of statements.map(asMultiTask)) {
    try {
      validateSummary(s.summary);
      if (s.summary.tasks === undefined) throw new DataError(`summary from site "${s.summary.site}" is invalid: it names no task`);
      valid.push(s);
    } catch (e) {
      excluded.push({ site: String(s.summary?.site), reason: (e as Error).message });
    }
  }
  const { accepted, agreed } = acceptFitting(valid, (group) => mergeSummaries(group.map((g) => g.summary)), excluded);
  const own = accepted.find((s) => s.summary.site === self)?.summary.tasks ?? [];
  const alone = accepted.length > 1 ? own.filter((t) => agreed.tasks!.find((a) => a.name === t.name)!.sites.length === 1) : [];
  const warnings = [...alone.map((t) => `no other site learns task "${t.name}": this site trains alone on it`), ...groupWarnings(accepted, agreed)];
  return { agreed, included: accepted.map((s) => s.summary.site).sort(), excluded, warnings };
}

/** A one-task statement as a multi-task one (its task in `summary.tasks`); a multi-task (or malformed) one as it is. */
function asMultiTask(st: SiteStatement): SiteStatement {
  const s = st.summary;
  if (s?.tasks !== undefined || !s?.schema || !Array.isArray(s.labelCounts)) return st;
  const kind = s.task?.kind ?? 'classification';
  const name = s.task?.name ?? (s.schema.kind === 'table' ? s.schema.labelColumn : 'label');
  const entry: SummaryTaskEntry = {
    name,
    kind,
    numRows: s.numRows,
    classNames: s.schema.classNames,
    labelCounts: s.labelCounts,
    ...(kind === 'regression' ? { sum: s.task?.sum, sumSq: s.task?.sumSq } : {}),
    ...(st.declaredClasses ? { declared: st.declaredClasses } : {}),
  };
  const { task: _task, ...rest } = s;
  return { summary: { ...rest, schema: { ...s.schema, classNames: [] }, labelCounts: [], tasks: [entry] } };
}

/** What merges but deserves a look: a site sharing no class with the others, a column a site lacks, names differing only in case. */
function groupWarnings(accepted: SiteStatement[], agreed: AgreedSchema): string[] {
  const warnings: string[] = [];
  if (agreed.schema.kind === 'table') {
    for (const s of accepted) {
      for (const c of lackedColumns(s.summary, agreed.schema)) {
        warnings.push(
          `site "${s.summary.site}" lacks column "${c.name}": its rows read as missing there` +
            `${c.kind === 'numeric' ? ` (imputed with the others' pooled mean, with the indicator "${c.name}_missing")` : ''}; ` +
            `to leave the column out instead, drop it at every site ("drop": ["${c.name}"])`,
        );
      }
    }
    for (const c of agreed.schema.columns) {
      if (c.kind !== 'categorical') continue;
      for (const g of caseClashes(c.categories))
        warnings.push(`column "${c.name}": the sites' categories ${quoteGroup(g)} differ only in case and count as ${g.length}`);
    }
  }
  for (const g of caseClashes(agreed.schema.classNames)) {
    const at = g.map((c) => `"${c}" at ${quote(accepted.filter((s) => s.summary.schema.classNames.includes(c)).map((s) => s.summary.site))}`);
    warnings.push(
      `classes ${quoteGroup(g)} differ only in case and count as ${g.length} classes (${at.join('; ')}); write them alike at every site if they are one class`,
    );
  }
  if (accepted.length > 1) {
    for (const s of accepted) {
      const others = new Set(accepted.filter((o) => o !== s).flatMap((o) => o.summary.schema.classNames.filter((_, k) => o.summary.labelCounts[k] > 0)));
      const own = s.summary.schema.classNames.filter((_, k) => s.summary.labelCounts[k] > 0);
      if (own.length > 0 && !own.some((c) => others.has(c))) {
        warnings.push(`site "${s.summary.site}" shares no class with the others (its classes: ${quote(own)}); check that every site labels the same way`);
      }
    }
  }
  return warnings;
}

/** A site's rows encoded in the agreed layout, with the split and the standardizer to apply. */
export interface EncodedSite {
  /** The site's rows in the agreed layout (not standardized). */
  dataset: Dataset;
  /** Which rows are the site's training and test splits. */
  split: PeerSplit;
  /** The statistics to standardize with: the pooled ones (`federated`) or the site's own (`local`). */
  standardizer: Standardizer;
  /** A regression target's pooled mean and standard deviation (`federated`; with `local` the site fits its own). */
  targetScale?: { mean: number; std: number };
  /** A multi-task site: each regression task's pooled scale, by task name (`federated`). */
  targetScales?: Record<string, { mean: number; std: number }>;
}

/**
 * Encode the site's rows with the agreed schema; standardize with the
 * pooled statistics (`federated`) or the site's own training rows (`local`).
 * Throws a DataError when the agreement has fewer than two classes.
 */
export function encodeSiteData(data: SiteData, agreed: AgreedSchema, standardize: 'federated' | 'local'): EncodedSite {
  if (agreed.tasks) return encodeMultiTask(data, agreed, standardize);
  // A classifier needs two classes: one class among all the sites is a clear error here, not the tensor library's later.
  const classes = agreed.schema.classNames;
  if (agreed.task?.kind !== 'regression' && classes.length < 2) {
    const n = agreed.sites.length;
    throw new DataError(
      `the label column holds only the class ${quote(classes)} at ${n > 1 ? `all ${n} sites` : 'this site'}: ` +
        'a classifier needs at least two classes (check data.labelColumn, or declare every class in data.classes)',
    );
  }
  const { dataset, standardizer } = encodeWithSchema(data.kind === 'table' ? data.table : data.dataset, agreed);
  return {
    dataset,
    split: data.split,
    standardizer: standardize === 'federated' ? standardizer : fitStandardizer(dataset.features, featureSize(dataset), data.split.train),
    ...(standardize === 'federated' && agreed.task?.scale ? { targetScale: agreed.task.scale } : {}),
  };
}

/**
 * `encodeSiteData` under a multi-task agreement: the features in the agreed
 * layout, and a label column per task of the site (`Dataset.tasks`, in the
 * agreed classes; -1 or NaN where a row lacks the label), with each
 * regression target's pooled scale (`federated`).
 */
function encodeMultiTask(data: SiteData, agreed: AgreedSchema, standardize: 'federated' | 'local'): EncodedSite {
  const { dataset, standardizer } = encodeWithSchema(data.kind === 'table' ? data.table : data.dataset, agreed);
  const tasks = (data.tasks ?? [oneTask(data)]).map((t): DatasetTaskColumn => {
    const at = agreed.tasks!.find((a) => a.name === t.name);
    if (!at) throw new DataError(`the consortium's agreement has no task "${t.name}" (its tasks are ${agreed.tasks!.map((a) => `"${a.name}"`).join(', ')})`);
    const labels = rowLabels(data, t);
    if (at.kind === 'regression') {
      const values = labels as Float32Array;
      return { name: t.name, kind: 'regression', values, ...quantileStrata(values) };
    }
    if (at.classNames.length < 2) {
      throw new DataError(
        `task "${t.name}" has only the class ${quote(at.classNames)} at ${at.sites.length > 1 ? `all ${at.sites.length} sites that learn it` : 'this site'}: a classifier needs at least two classes`,
      );
    }
    const index = new Map(at.classNames.map((c, k) => [c, k]));
    return {
      name: t.name,
      kind: 'classification',
      classNames: [...at.classNames],
      labels: Int32Array.from(labels as string[], (l) => (l === '' ? -1 : (index.get(l) ?? -1))),
    };
  });
  const scales = Object.fromEntries(agreed.tasks!.filter((a) => a.scale && tasks.some((t) => t.name === a.name)).map((a) => [a.name, a.scale!]));
  const { task: _task, ...rest } = dataset;
  return {
    dataset: { ...rest, tasks, labels: tasks[0].labels, classNames: tasks[0].classNames },
    split: data.split,
    standardizer: standardize === 'federated' ? standardizer : fitStandardizer(dataset.features, featureSize(dataset), data.split.train),
    ...(standardize === 'federated' && Object.keys(scales).length > 0 ? { targetScales: scales } : {}),
  };
}

/** A one-task site's task, as a multi-task agreement takes it. */
function oneTask(data: SiteData): SiteTask {
  const kind = data.task?.kind ?? (data.kind === 'tensor' && data.dataset.task?.kind === 'regression' ? 'regression' : 'classification');
  const fallback = data.kind === 'table' ? data.table.labelColumn : (data.dataset.task?.name ?? data.dataset.schema?.labelColumn ?? 'label');
  return {
    name: data.task?.name ?? fallback,
    kind,
    ...(data.kind === 'table' ? { column: data.table.labelColumn } : {}),
    classes: data.classes,
    ...(data.declared ? { declared: data.declared } : {}),
  };
}

/** Each row's label of task `t`: a class name (`''`: the row lacks it) or a regression target (NaN: it lacks it). */
function rowLabels(data: SiteData, t: SiteTask): string[] | Float32Array {
  if (data.kind === 'table') {
    const labels = data.table.taskLabels?.[t.column!] ?? data.table.labels;
    return t.kind === 'regression' ? regressionTargets({ ...data.table, labelColumn: t.column!, labels }, 'nan') : labels;
  }
  const ds = data.dataset;
  const col = ds.tasks?.find((c) => c.name === t.name);
  if (t.kind === 'regression') return col?.values ?? (ds.task?.kind === 'regression' ? ds.task.values : new Float32Array(ds.numSamples).fill(NaN));
  const [labels, names] = col ? [col.labels, col.classNames] : [ds.labels, ds.classNames];
  return Array.from(labels, (l) => (l >= 0 ? names[l] : ''));
}

/** New rows for a trained site: features in the agreed layout (not standardized), where each row came from, and labels when known. */
export interface EncodedInputs {
  /** Row-major features, `numSamples * prod(sampleShape)` values. */
  features: Float32Array;
  /** Number of rows read. */
  numSamples: number;
  /** Shape of one sample (`[features]` for a table). */
  sampleShape: number[];
  /** Per row: `line <n>` of the CSV, or the image file relative to the folder. */
  ids: string[];
  /** Class indices in the agreed classes, or a regression's targets in their units (only when the input is labelled; read with `tasks`: absent). */
  labels?: Int32Array | Float32Array;
  /**
   * Read with `tasks` (a multi-task site): each task's labels, by task name,
   * for the tasks whose label column the input has: class indices in the
   * task's classes (-1 where a row lacks its label), or targets in their
   * units (NaN where it lacks one).
   */
  taskLabels?: Record<string, Int32Array | Float32Array>;
  /**
   * With `invalidAsMissing`: per row, the cells of numeric columns that were
   * not numbers and were read as missing (`age="sixty"`, `; `-separated;
   * empty for a row without any). Absent when no row has one.
   */
  invalid?: string[];
}

/** One task of a trained multi-task site, as {@link readInputs} reads its labels: its name, label column, kind and classes. */
export interface InputTask {
  /** The task's name. */
  name: string;
  /** The column that holds its labels (a table; for images, the one task's labels are the sub-folders). */
  column: string;
  /** A classification or a regression. */
  kind: 'classification' | 'regression';
  /** Classification: its classes, in the order of the model's outputs (regression: empty). */
  classNames: string[];
}

/** How {@link readInputs} reads new inputs. */
export interface ReadInputsOptions {
  /** `required` (evaluation): the input must be labelled (with `tasks`: have the label column of at least one task). */
  labels: 'required' | 'optional';
  /** Read a cell that is not a number in a numeric column as missing (and mark its row in `invalid`) instead of refusing the file. */
  invalidAsMissing?: boolean;
  /** A multi-task site: read each task's labels from its column into `taskLabels` (a row may lack some); its columns are never features. */
  tasks?: InputTask[];
}

/**
 * Read `path` (a CSV file, or an image folder) as the site's new inputs,
 * encoded with the agreed schema. `labels: 'required'` (for evaluation)
 * needs a label column (or one sub-folder per class); every label must be
 * one of the agreed classes. A cell that is not a number in a numeric
 * column is an error naming its line and column, unless `invalidAsMissing`
 * (then it is missing, and `invalid` marks its row). With `tasks`, each
 * task's labels are read from its own column (`taskLabels`).
 */
export async function readInputs(path: string, agreed: AgreedSchema, input: InputSpec, o: ReadInputsOptions): Promise<EncodedInputs> {
  const schema = agreed.schema;
  if (input.kind === 'images') return readImageInputs(path, schema, input, o);
  if (existsSync(path) && statSync(path).isDirectory()) {
    throw new DataError(`${resolve(path)} is a folder, but this site was trained on a table: give a CSV file with the columns it trained on`);
  }
  const columns = o.tasks?.map((t) => t.column);
  let tableSchema: TableSchema;
  if (input.kind === 'table') {
    if (schema.kind !== 'table') throw new DataError('this site was not trained on a table');
    tableSchema = schema;
  } else {
    const d = schema.kind === 'tensor' ? featureSize({ sampleShape: schema.shape }) : agreed.featureNames.length;
    const names = input.featureNames ?? csvHeader(path).filter((h) => h !== input.labelColumn && !columns?.includes(h));
    if (names.length !== d) {
      const besides = [...new Set([input.labelColumn, ...(columns ?? [])])].map((c) => `"${c}"`).join(', ');
      throw new DataError(`${resolve(path)} has ${names.length} feature columns (besides ${besides}); this site's model reads ${d}`);
    }
    tableSchema = {
      kind: 'table',
      labelColumn: input.labelColumn,
      classNames: schema.classNames,
      columns: names.map((name, j) => ({ name, kind: 'numeric' as const, impute: agreed.mean[j], indicator: false })),
    };
  }
  const kinds = Object.fromEntries(tableSchema.columns.map((c) => [c.name, c.kind]));
  const table = readCsvTable(path, {
    labelColumn: tableSchema.labelColumn,
    ...(columns ? { taskColumns: columns } : {}),
    kinds,
    labelsOptional: true,
    invalidAsMissing: o.invalidAsMissing,
  });
  if (o.labels === 'required' && table.labelled === false) {
    const wanted = o.tasks
      ? `a label column of one of its tasks (${o.tasks.map((t) => `"${t.column}" for ${t.name}`).join(', ')})`
      : `the label column "${tableSchema.labelColumn}"`;
    throw new DataError(`${table.source}: evaluation needs ${wanted}`);
  }
  const regression = agreed.task?.kind === 'regression';
  const enc = encodeTable(regression || o.tasks ? { ...table, labelled: false } : table, tableSchema);
  const d = enc.featureNames.length;
  let invalid: string[] | undefined;
  if (table.invalid) {
    invalid = table.labels.map(() => '');
    for (const c of table.invalid) invalid[c.row] += `${invalid[c.row] ? '; ' : ''}${c.column}=${JSON.stringify(c.cell)}`;
  }
  const labels = o.tasks
    ? { taskLabels: tableTaskLabels(table, o.tasks) }
    : table.labelled === false
      ? {}
      : { labels: regression ? regressionTargets(table) : enc.labels };
  return {
    features: enc.features,
    numSamples: table.labels.length,
    sampleShape: [d],
    ids: table.lines.map((l) => `line ${l}`),
    ...labels,
    ...(invalid ? { invalid } : {}),
  };
}

/** Each task's labels of a table read with its task columns (see `EncodedInputs.taskLabels`); a class no model output has is an error naming its line. */
function tableTaskLabels(table: RawTable, tasks: InputTask[]): Record<string, Int32Array | Float32Array> {
  const out: Record<string, Int32Array | Float32Array> = {};
  for (const t of tasks) {
    const cells = table.taskLabels?.[t.column];
    if (!cells) continue;
    if (t.kind === 'regression') {
      out[t.name] = regressionTargets({ ...table, labelColumn: t.column, labels: cells }, 'nan');
      continue;
    }
    const index = new Map(t.classNames.map((c, k) => [c, k]));
    out[t.name] = Int32Array.from(cells, (cell, i) => {
      if (cell === '') return -1;
      const k = index.get(cell);
      if (k === undefined) {
        throw new DataError(
          `${table.source}, ${table.rowWord ?? 'line'} ${table.lines[i]}: label "${cell}" in column "${t.column}" is not one of the classes of task "${t.name}" (${t.classNames.join(', ')})`,
        );
      }
      return k;
    });
  }
  return out;
}

/** `readInputs` of an image folder: its images, and its sub-folders as the classes (of the one task, with `tasks`). */
async function readImageInputs(path: string, schema: FeatureSchema, input: InputSpec & { kind: 'images' }, o: ReadInputsOptions): Promise<EncodedInputs> {
  if (schema.kind !== 'tensor' || schema.shape.length !== 3) throw new DataError('this site was not trained on images');
  if (o.tasks && o.tasks.length !== 1) throw new DataError(`this site learns ${o.tasks.length} tasks: an image folder's sub-folders label one`);
  const classNames = o.tasks?.[0].classNames ?? schema.classNames;
  const classIndex = new Map(classNames.map((c, i) => [c, i]));
  const root = resolve(path);
  const items = listImageInputs(root);
  const [h, w, c] = schema.shape;
  const { features } = await decodeImages(
    items.map((i) => i.file),
    { imageSize: [h, w], channels: c as 1 | 3, fit: input.fit },
  );
  const ids = items.map((i) => i.file.slice(root.length + 1));
  let labels: Int32Array | undefined;
  if (items.every((i) => i.label !== undefined)) {
    labels = Int32Array.from(items, (i) => {
      const k = classIndex.get(i.label!);
      if (k === undefined) throw new DataError(`${root}: class folder "${i.label}" is not one of the classes ${classNames.join(', ')}`);
      return k;
    });
  } else if (o.labels === 'required') {
    throw new DataError(`${root}: evaluation needs labelled images, one sub-folder per class (${classNames.join(', ')})`);
  }
  const out = { features, numSamples: items.length, sampleShape: schema.shape, ids };
  if (!labels) return out;
  return o.tasks ? { ...out, taskLabels: { [o.tasks[0].name]: labels } } : { ...out, labels };
}

/** The header row of a CSV file. */
function csvHeader(path: string): string[] {
  const file = resolve(path);
  let rows: string[][];
  try {
    const text = readFileSync(file, 'utf8');
    rows = parseCsv(text, { to_line: 1, trim: true, bom: true, delimiter: detectDelimiter(text) }) as string[][];
  } catch (e) {
    throw new DataError(`${file}: cannot read its header: ${(e as Error).message}`);
  }
  if (!rows[0]) throw new DataError(`${file} is empty: it needs a header row`);
  return rows[0];
}
