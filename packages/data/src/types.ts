import type { TableSchema } from './table.js';

/** A labelled dataset held in flat typed arrays (no tensor library needed). */
export interface Dataset {
  /** Short name, e.g. `breast-cancer` or `csv:/path/to/file.csv`. */
  name: string;
  /** Row-major features, `numSamples * prod(sampleShape)` values. */
  features: Float32Array;
  /**
   * Class index per sample, in `[0, classNames.length)`. With a regression
   * `task`, the quintile of the sample's target instead (what partitions a
   * dataset among sites and shows how they differ), named in `classNames`.
   */
  labels: Int32Array;
  /** Number of samples (rows). */
  numSamples: number;
  /** Shape of one sample: `[30]` for a table, `[28, 28, 1]` for an image. */
  sampleShape: number[];
  /** The classes, by label index (regression: the target's quintiles). */
  classNames: string[];
  /** One or two sentences: what it is and where it comes from. */
  description: string;
  /** Where the data comes from, with its licence and citation when known. */
  source: string;
  /** Name of each encoded feature, when the features have names (tables). */
  featureNames?: string[];
  /** How a table was encoded: columns, kinds, vocabularies, imputation. */
  schema?: TableSchema;
  /** Things read that are worth a look (rows left out for a missing label, stray text in a numeric column, ...). */
  warnings?: string[];
  /** What the samples are labelled with; absent: one classification task over `labels`, named after the label column (`label`). */
  task?: DatasetTask;
  /**
   * A multi-task dataset: every task its rows are labelled for, each with
   * its own labels (see `multi-task.ts`); absent: the one task of `task`.
   */
  tasks?: DatasetTaskColumn[];
  /** A multi-task dataset: the tasks each site learns by default, by site number (cycled). */
  siteTasks?: string[][];
}

/**
 * One task of a multi-task dataset: its name and kind, and its label of
 * every row (a row may lack it).
 */
export interface DatasetTaskColumn {
  /** The task's name (what sites that learn it share). */
  name: string;
  /** A classification or a regression. */
  kind: 'classification' | 'regression';
  /** Class index per row, -1 where the row has no label; a regression: the target's quintile (-1: missing). */
  labels: Int32Array;
  /** The classes, by index (a regression: its quintiles). */
  classNames: string[];
  /** A regression: the target per row (NaN: missing). */
  values?: Float32Array;
}

/**
 * A dataset's task: its name (shared across a consortium) and kind; a
 * regression task's target per sample (NaN: missing).
 */
export type DatasetTask = { name: string; kind: 'classification' } | { name: string; kind: 'regression'; values: Float32Array };

/** Quintile bins of `values` (NaN: bin 0): the strata a regression dataset is partitioned by, and the bins' names. */
export function quantileStrata(values: Float32Array, bins = 5): { labels: Int32Array; classNames: string[] } {
  const sorted = Float32Array.from(values.filter((v) => Number.isFinite(v))).sort();
  const cuts = Array.from({ length: bins - 1 }, (_, k) => sorted[Math.floor(((k + 1) * sorted.length) / bins)] ?? 0);
  const labels = Int32Array.from(values, (v) => (Number.isFinite(v) ? cuts.filter((c) => v >= c).length : 0));
  const fmt = (v: number) => String(Number(v.toPrecision(4)));
  const classNames = Array.from({ length: bins }, (_, k) =>
    k === 0 ? `< ${fmt(cuts[0])}` : k === bins - 1 ? `>= ${fmt(cuts[k - 1])}` : `${fmt(cuts[k - 1])}..${fmt(cuts[k])}`,
  );
  return { labels, classNames };
}

/** The number of values in one sample (the product of `sampleShape`). */
export function featureSize(ds: Pick<Dataset, 'sampleShape'>): number {
  return ds.sampleShape.reduce((a, b) => a * b, 1);
}
