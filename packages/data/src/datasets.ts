import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { parseIdx } from './idx.js';
import { Rng } from './rng.js';
import { encodeTable, inferTableSchema, readCsvTable, regressionTargets, type RawTable, type TableOptions, type TableSchema } from './table.js';
import { withDerivedTasks } from './multi-task.js';
import { DataError } from './errors.js';
import { featureSize, quantileStrata, type Dataset } from './types.js';

/** Directory of the data files shipped with this package. */
export const SHIPPED_DATA_DIR = fileURLToPath(new URL('../datasets/', import.meta.url));
export const DEFAULT_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/**
 * How `loadDataset` reads a dataset: a CSV file's columns, a directory for
 * fashion-mnist, a seeded subset, the synthetic data's shape.
 */
export interface LoadOptions extends CsvOptions {
  /** fashion-mnist: directory with the four idx files (gzipped or not). */
  dataDir?: string;
  /** Keep a seeded random subset of at most this many samples. */
  maxSamples?: number;
  /** Seed for synthetic data and for `maxSamples`. */
  seed?: number;
  /** synthetic: the number of classes (default 4). */
  classes?: number;
  /** synthetic: the feature dimension (default 16). */
  dim?: number;
  /** synthetic: the sample count (default 1000). */
  samples?: number;
  /** synthetic: the scale of the random class centres, in units of the clusters' spread (default 1.5). */
  separation?: number;
}

/** The datasets `loadDataset` knows by name. */
export const BUILTIN_DATASETS = ['breast-cancer', 'diabetes', 'digits', 'digits-tasks', 'fashion-mnist', 'fashion-mnist-tasks', 'synthetic'] as const;

/**
 * Load a dataset by name: `breast-cancer`, `diabetes` (regression), `digits`, `fashion-mnist`
 * (optionally `fashion-mnist:<dir>`), the multi-task `digits-tasks` and
 * `fashion-mnist-tasks` (see `withDerivedTasks`), `synthetic` (optionally
 * `synthetic:classes=10,dim=32,samples=5000`) or `csv:<path>`. Image
 * folders (`images:<dir>`) decode asynchronously: use `loadDatasetAsync`.
 */
export function loadDataset(spec: string, opts: LoadOptions = {}): Dataset {
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const arg = colon < 0 ? undefined : spec.slice(colon + 1);
  let ds: Dataset;
  switch (kind) {
    case 'breast-cancer':
      ds = loadBreastCancer();
      break;
    case 'diabetes':
      ds = loadDiabetes();
      break;
    case 'digits':
    case 'digits-tasks':
      ds = loadDigits();
      break;
    case 'fashion-mnist':
    case 'fashion-mnist-tasks':
      ds = loadFashionMnist(arg ?? opts.dataDir);
      break;
    case 'csv':
      if (!arg) throw new DataError('csv dataset needs a path: use csv:<path-to-file.csv>');
      ds = loadCsv(arg, opts);
      break;
    case 'images':
      throw new DataError(`${spec}: image folders are decoded asynchronously; load them with loadDatasetAsync (or loadImageFolder)`);
    case 'synthetic':
      ds = makeSynthetic({ ...parseKeyValues(arg ?? ''), ...pick(opts, ['classes', 'dim', 'samples', 'separation', 'seed']) });
      break;
    default:
      throw new DataError(`Unknown dataset "${spec}". Use one of: ${BUILTIN_DATASETS.join(', ')}, or csv:<path> for your own table.`);
  }
  if (opts.maxSamples != null && opts.maxSamples < ds.numSamples) ds = subsample(ds, opts.maxSamples, opts.seed ?? 0);
  return kind === 'digits-tasks' || kind === 'fashion-mnist-tasks' ? withDerivedTasks(kind, ds) : ds;
}

function pick<T extends object, K extends keyof T>(o: T, keys: K[]): Partial<T> {
  const out: Partial<T> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

function parseKeyValues(s: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of s.split(',').filter(Boolean)) {
    const [k, v] = part.split('=');
    const n = Number(v);
    if (!k || v === undefined || !Number.isFinite(n)) {
      throw new DataError(`Bad synthetic option "${part}": expected key=number, e.g. synthetic:classes=10,dim=32,samples=5000`);
    }
    out[k.trim()] = n;
  }
  return out;
}

/** A seeded random subset of `n` samples (order shuffled). */
export function subsample(ds: Dataset, n: number, seed: number): Dataset {
  const keep = subsampleRows(ds.numSamples, n, seed);
  return { ...takeRows(ds, keep), name: ds.name, description: `${ds.description} (random subset of ${n})` };
}

/** The rows `subsample(ds, n, seed)` keeps, for a dataset of `numSamples` rows. */
export function subsampleRows(numSamples: number, n: number, seed: number): Int32Array {
  const idx = new Rng(seed).shuffle(Int32Array.from({ length: numSamples }, (_, i) => i)) as Int32Array;
  return idx.subarray(0, Math.min(n, numSamples));
}

/** Copy the given rows of a dataset into a new one. */
export function takeRows(ds: Dataset, rows: ArrayLike<number>): Dataset {
  const d = featureSize(ds);
  const features = new Float32Array(rows.length * d);
  const labels = new Int32Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    features.set(ds.features.subarray(r * d, (r + 1) * d), i * d);
    labels[i] = ds.labels[r];
  }
  const task =
    ds.task?.kind === 'regression' ? { ...ds.task, values: Float32Array.from(rows, (r) => (ds.task as { values: Float32Array }).values[r]) } : ds.task;
  const tasks = ds.tasks?.map((t) => ({
    ...t,
    labels: Int32Array.from(rows, (r) => t.labels[r]),
    ...(t.values ? { values: Float32Array.from(rows, (r) => t.values![r]) } : {}),
  }));
  return { ...ds, features, labels, numSamples: rows.length, ...(task ? { task } : {}), ...(tasks ? { tasks } : {}) };
}

/** How a CSV file becomes a dataset: the table's columns, and optionally a schema to encode it with. */
export interface CsvOptions extends TableOptions {
  /** Encode with this schema (a consortium's agreed one) instead of the one the file describes. */
  schema?: TableSchema;
  /**
   * What the label column holds: classes, or a number (`regression`: the
   * dataset gets a regression `task`). Unset: classes, refused with a hint
   * when the column looks like a number to predict.
   */
  taskKind?: 'classification' | 'regression';
}

/**
 * Load a CSV table with a header row. Numeric columns are kept as they are,
 * text columns are one-hot encoded, missing cells are imputed with an
 * indicator column (see `table.ts` for the policies). Without `schema`, the
 * schema comes from the file itself: its sorted classes (numerically when
 * all labels are numbers) and vocabularies, and column means over all rows
 * for imputation. The dataset carries the schema and the feature names.
 */
export function loadCsv(path: string, opts: CsvOptions = {}): Dataset {
  const table = readCsvTable(path, opts);
  if (opts.taskKind === 'regression') return regressionDataset(path, table, opts.schema ?? inferTableSchema(table));
  const schema = opts.schema ?? inferTableSchema(table);
  if (schema.classNames.length < 2) {
    throw new DataError(`${table.source}: the label column "${table.labelColumn}" holds a single class; need at least 2`);
  }
  if (opts.taskKind === undefined) refuseContinuousLabels(table, schema.classNames);
  const { features, labels, featureNames } = encodeTable(table, schema);
  return {
    ...describeTable(path, table, featureNames.length, labels.length),
    features,
    labels,
    classNames: schema.classNames,
    featureNames,
    schema,
  };
}

/** A label column of many distinct numbers for its rows (an age, a length of stay) is a number to predict, not classes. */
export function refuseContinuousLabels(table: RawTable, classNames: string[]): void {
  const n = table.labels.length;
  if (classNames.length < 20 || classNames.length < n / 10 || !classNames.every((c) => Number.isFinite(Number(c)))) return;
  throw new DataError(
    `${table.source}: the label column "${table.labelColumn}" holds ${classNames.length} distinct numbers in ${n} rows: it looks like a number to predict, ` +
      'not classes. Declare it a regression task (--label-kind regression, or "tasks": [{ "column": "' +
      table.labelColumn +
      '", "kind": "regression" }] ' +
      'in a site config), or classification if they are class codes',
  );
}

/** The name, sizes, description and source of a dataset read from a table. */
function describeTable(path: string, table: RawTable, d: number, n: number): Pick<Dataset, 'name' | 'numSamples' | 'sampleShape' | 'description' | 'source'> {
  const kinds = table.columns.map((c) => c.kind);
  const numeric = kinds.filter((k) => k === 'numeric').length;
  return {
    name: `csv:${path}`,
    numSamples: n,
    sampleShape: [d],
    description:
      `User table ${table.source}: ${n} rows, ${table.columns.length} columns (${numeric} numeric, ` +
      `${kinds.length - numeric} categorical) encoded as ${d} features, label column "${table.labelColumn}".`,
    source: table.source,
    ...(table.warnings.length ? { warnings: table.warnings } : {}),
  };
}

/** A table whose label column is a regression target: the target per row, its quintiles as `labels`. */
function regressionDataset(path: string, table: RawTable, schema: TableSchema): Dataset {
  const values = regressionTargets(table);
  const { features, featureNames } = encodeTable({ ...table, labelled: false }, { ...schema, classNames: [] });
  const strata = quantileStrata(values);
  return {
    ...describeTable(path, table, featureNames.length, values.length),
    features,
    ...strata,
    featureNames,
    schema: { ...schema, classNames: [] },
    task: { name: table.labelColumn, kind: 'regression', values },
  };
}

export function loadBreastCancer(): Dataset {
  const ds = loadCsv(join(SHIPPED_DATA_DIR, 'breast-cancer.csv'), { labelColumn: 'diagnosis' });
  return {
    ...ds,
    name: 'breast-cancer',
    description: 'Breast Cancer Wisconsin (Diagnostic): 569 tumours, 30 features computed from digitized images of fine needle aspirates; benign vs malignant.',
    source:
      'W. Wolberg, O. Mangasarian, N. Street, W. Street. Breast Cancer Wisconsin (Diagnostic). UCI Machine Learning Repository, 1993. doi:10.24432/C5DW2B. CC BY 4.0.',
  };
}

/** Diabetes progression (a regression table): 442 patients, 10 baseline measurements, the disease's progression one year later. */
export function loadDiabetes(): Dataset {
  const ds = loadCsv(join(SHIPPED_DATA_DIR, 'diabetes.csv'), { labelColumn: 'progression', taskKind: 'regression' });
  return {
    ...ds,
    name: 'diabetes',
    description:
      'Diabetes: 442 patients, 10 baseline variables (age, sex, body mass index, blood pressure, six blood serum measurements); the target is a quantitative measure of disease progression one year after baseline.',
    source:
      'B. Efron, T. Hastie, I. Johnstone, R. Tibshirani. Least Angle Regression. Annals of Statistics 32(2), 2004. The unscaled table as shipped by scikit-learn (BSD-3-Clause).',
  };
}

export function loadDigits(): Dataset {
  const file = join(SHIPPED_DATA_DIR, 'digits.csv.gz');
  const text = gunzipSync(readFileSync(file)).toString('utf8').trim();
  const lines = text.split('\n');
  const n = lines.length;
  const features = new Float32Array(n * 64);
  const labels = new Int32Array(n);
  lines.forEach((line, i) => {
    const cells = line.split(',').map(Number);
    if (cells.length !== 65 || cells.some((v) => !Number.isFinite(v))) {
      throw new DataError(`${file}, line ${i + 1}: expected 65 numbers (shipped file damaged? reinstall the package)`);
    }
    features.set(cells.slice(0, 64), i * 64);
    labels[i] = cells[64];
  });
  return {
    name: 'digits',
    features,
    labels,
    numSamples: n,
    sampleShape: [8, 8, 1],
    classNames: Array.from({ length: 10 }, (_, i) => String(i)),
    description: '1797 handwritten digits as 8x8 images of counts 0-16 (the test part of the UCI optical digits set).',
    source: 'E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning Repository, 1998. doi:10.24432/C50P49. CC BY 4.0.',
  };
}

export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

function readMaybeGz(dir: string, base: string): Uint8Array {
  for (const name of [base, `${base}.gz`]) {
    const p = join(dir, name);
    if (existsSync(p)) {
      const buf = readFileSync(p);
      return name.endsWith('.gz') ? gunzipSync(buf) : buf;
    }
  }
  throw new DataError(
    `Fashion-MNIST file ${base}(.gz) not found in ${dir}. On Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist ` +
      `(installs to ${DEFAULT_FASHION_MNIST_DIR}); or download the four idx files from ` +
      'https://github.com/zalandoresearch/fashion-mnist and pass their directory (fashion-mnist:<dir> or --data-dir).',
  );
}

/** Fashion-MNIST: the 60k training and 10k test images, pooled (partitioners make the splits). */
export function loadFashionMnist(dir: string = process.env.DFLMOE_FASHION_MNIST_DIR ?? DEFAULT_FASHION_MNIST_DIR): Dataset {
  if (!existsSync(dir)) {
    throw new DataError(
      `Fashion-MNIST directory ${dir} does not exist. On Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist; ` +
        'or download the idx files from https://github.com/zalandoresearch/fashion-mnist and pass their directory.',
    );
  }
  const parts = [
    ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte'],
    ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'],
  ].map(([img, lab]) => {
    const images = parseIdx(readMaybeGz(dir, img), img);
    const labels = parseIdx(readMaybeGz(dir, lab), lab);
    if (images.dims.length !== 3 || images.dims[1] !== 28 || images.dims[2] !== 28) {
      throw new DataError(`${img}: expected 28x28 images, got dims ${images.dims.join('x')}`);
    }
    if (labels.dims.length !== 1 || labels.dims[0] !== images.dims[0]) {
      throw new DataError(`${lab}: ${labels.dims[0]} labels for ${images.dims[0]} images`);
    }
    return { images, labels };
  });
  const n = parts.reduce((a, p) => a + p.labels.dims[0], 0);
  const features = new Float32Array(n * 784);
  const labels = new Int32Array(n);
  let off = 0;
  for (const p of parts) {
    const m = p.labels.dims[0];
    for (let i = 0; i < m * 784; i++) features[off * 784 + i] = p.images.data[i] / 255;
    for (let i = 0; i < m; i++) {
      const l = p.labels.data[i];
      if (l > 9) throw new DataError(`Fashion-MNIST label ${l} out of range at index ${i}`);
      labels[off + i] = l;
    }
    off += m;
  }
  return {
    name: 'fashion-mnist',
    features,
    labels,
    numSamples: n,
    sampleShape: [28, 28, 1],
    classNames: FASHION_MNIST_CLASSES,
    description: '70,000 28x28 grayscale images of 10 kinds of clothing (60k train + 10k test, pooled), scaled to [0, 1].',
    source:
      'H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017. MIT licence.',
  };
}

export interface SyntheticOptions {
  classes?: number;
  dim?: number;
  samples?: number;
  /** Distance scale between class means in units of the noise std (default 1.5). */
  separation?: number;
  seed?: number;
}

/** Gaussian class clusters: seeded, any size, for tests and scale runs. */
export function makeSynthetic(o: SyntheticOptions = {}): Dataset {
  const classes = o.classes ?? 4;
  const dim = o.dim ?? 16;
  const samples = o.samples ?? 1000;
  const sep = o.separation ?? 1.5;
  const seed = o.seed ?? 0;
  for (const [k, v, min] of [
    ['classes', classes, 2],
    ['dim', dim, 1],
    ['samples', samples, classes],
  ] as const) {
    if (!Number.isInteger(v) || v < min) throw new DataError(`synthetic: ${k} must be an integer >= ${min}, got ${v}`);
  }
  const rng = new Rng(seed);
  const means = Array.from({ length: classes }, () => Float32Array.from({ length: dim }, () => rng.normal() * sep));
  const features = new Float32Array(samples * dim);
  const labels = new Int32Array(samples);
  for (let i = 0; i < samples; i++) {
    const c = i % classes;
    labels[i] = c;
    for (let j = 0; j < dim; j++) features[i * dim + j] = means[c][j] + rng.normal();
  }
  return {
    name: 'synthetic',
    features,
    labels,
    numSamples: samples,
    sampleShape: [dim],
    classNames: Array.from({ length: classes }, (_, i) => `class ${i}`),
    description: `Synthetic Gaussian clusters: ${classes} classes, ${dim} features, ${samples} samples, separation ${sep}, seed ${seed}.`,
    source: 'Generated by dflmoe (seeded).',
  };
}
