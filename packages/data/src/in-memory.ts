/**
 * A site's data already in memory (rows the application holds, or arrays
 * and tensors of samples), as a {@link SiteData}: the same value
 * `loadSiteData` makes from files, so that the federated preprocessing
 * (`siteStatement`, `reconcileStatements`, `encodeSiteData`) applies
 * unchanged. Rows follow the rules of CSV files (`table.ts`): numbers and
 * strings, `null`, `undefined`, `NaN` and the missing tokens are missing
 * cells, a column is numeric or categorical by its cells (or `categorical`).
 */
import { DataError } from './errors.js';
import type { AgreedSchema } from './federated.js';
import { partition, type PeerSplit } from './partition.js';
import type { InputSpec, SiteData } from './site-data.js';
import { encodeTable, sortNames, tableFromRows, type RawTable, type TableOptions, type TableSchema } from './table.js';
import type { Dataset } from './types.js';

/** One cell of an in-memory row: `null`, `undefined`, `NaN`, `''`, `NA`, `NaN` and `?` are missing. */
export type Cell = number | string | null | undefined;

/** A row: an object keyed by column name, or an array of cells in the order of `columns`. */
export type Row = Readonly<Record<string, Cell>> | readonly Cell[];

/** How a site's rows or samples are split into train and test. */
export interface SplitOptions {
  /** Seed of the stratified train/test split (default 0). */
  seed?: number;
  /** Share of the rows held out for the site's test split (default 0.2). */
  testFraction?: number;
  /** The split itself, as row indices (instead of `seed` and `testFraction`). */
  split?: PeerSplit;
  /** The consortium's label set, in order: the site's labels must be among them (as `data.classes` of a site config). */
  classes?: string[];
  /** A name for messages (default `rows`, or `samples`). */
  name?: string;
}

/** How `siteDataFromRows` reads rows: the label column, the columns and their kinds, the split. */
export interface RowsOptions extends SplitOptions, Pick<TableOptions, 'features' | 'drop' | 'categorical' | 'mixedTolerance'> {
  /** The column holding the class label (default `label`). */
  labelColumn?: string;
  /** Column names in order: required for array rows; for object rows, the columns to read (default: the first row's keys). */
  columns?: string[];
}

/** How `siteDataFromSamples` reads samples: their shape, the class names, the split. */
export interface SamplesOptions extends SplitOptions {
  /** Shape of one sample (default: the nested arrays' or tensor's shape after the first axis, else one flat vector per sample). */
  sampleShape?: number[];
  /** Names of the classes that numeric labels index (default: the labels themselves, as text). */
  classNames?: string[];
}

/** Something holding samples along its first axis: a tfjs `Tensor` (read with `dataSync`), nested arrays, or a flat array with `sampleShape`. */
export type SamplesInput = { shape: number[]; dataSync(): ArrayLike<number> } | readonly (readonly unknown[])[] | ArrayLike<number>;

const cellText = (v: unknown, where: () => string): string => {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isNaN(v) ? '' : String(v);
  if (typeof v === 'string') return v;
  throw new DataError(`${where()} holds a ${Array.isArray(v) ? 'array' : typeof v}; cells are numbers, strings or null (missing)`);
};

/** The rows as cells of text under a header, refusing rows of the wrong shape with the row's index. */
function rowCells(rows: readonly Row[], o: RowsOptions, source: string, labelColumn?: string): { header: string[]; cells: string[][] } {
  if (!Array.isArray(rows)) throw new DataError(`${source}: rows must be an array of rows (objects or arrays of cells)`);
  const first = rows[0];
  const objects = first !== undefined && !Array.isArray(first);
  if (!objects && !o.columns && rows.length > 0) throw new DataError(`${source}: rows are arrays of cells, so give their column names (columns: [...])`);
  const header = o.columns ? [...o.columns] : first !== undefined ? Object.keys(first) : [];
  if (objects && labelColumn !== undefined && o.columns && !header.includes(labelColumn)) header.push(labelColumn);
  const cells = rows.map((r, i) => {
    if (r === null || typeof r !== 'object')
      throw new DataError(`${source}, row ${i}: a ${r === null ? 'null' : typeof r}, not a row (an object or an array of cells)`);
    if (Array.isArray(r) !== !objects) {
      throw new DataError(
        `${source}, row ${i}: an ${Array.isArray(r) ? 'array' : 'object'} where row 0 is an ${objects ? 'object' : 'array'}; give every row the same form`,
      );
    }
    if (Array.isArray(r)) {
      if (r.length !== header.length) {
        throw new DataError(`${source}, row ${i}: ${r.length} cells where there are ${header.length} columns (${header.join(', ')})`);
      }
      return r.map((v, c) => cellText(v, () => `${source}, row ${i}, column "${header[c]}"`));
    }
    const obj = r as Record<string, Cell>;
    const absent = header.filter((h) => !Object.hasOwn(obj, h));
    if (absent.length > 0) {
      throw new DataError(
        `${source}, row ${i}: lacks column${absent.length > 1 ? 's' : ''} ${absent.map((h) => `"${h}"`).join(', ')} (write null for a missing cell)`,
      );
    }
    if (!o.columns) {
      const extra = Object.keys(obj).filter((k) => !header.includes(k));
      if (extra.length > 0) {
        throw new DataError(
          `${source}, row ${i}: column${extra.length > 1 ? 's' : ''} ${extra.map((h) => `"${h}"`).join(', ')} that row 0 does not have (every row needs the same columns)`,
        );
      }
    }
    return header.map((h) => cellText(obj[h], () => `${source}, row ${i}, column "${h}"`));
  });
  return { header, cells };
}

/** The rows as a raw table (kinds as a CSV file's; messages name rows by index). */
export function tableFromRecords(rows: readonly Row[], o: RowsOptions & Pick<TableOptions, 'kinds' | 'labelsOptional' | 'invalidAsMissing'> = {}): RawTable {
  const source = o.name ?? 'rows';
  if (rows.length === 0) throw new DataError(`${source}: no rows`);
  const { header, cells } = rowCells(rows, o, source, o.labelsOptional ? undefined : (o.labelColumn ?? 'label'));
  return tableFromRows(header, cells, { ...o, labelColumnSetting: 'labelColumn', source, lines: cells.map((_, i) => i), rowWord: 'row' });
}

/** A stratified, seeded split, or the one given (checked). */
function siteSplit(labels: Int32Array, numClasses: number, o: SplitOptions, source: string): PeerSplit {
  if (o.split) {
    for (const r of [...o.split.train, ...o.split.test]) {
      if (!Number.isInteger(r) || r < 0 || r >= labels.length) throw new DataError(`${source}: split names row ${r}, but there are ${labels.length} rows`);
    }
    if (o.split.train.length === 0) throw new DataError(`${source}: the split has no training rows`);
    return o.split;
  }
  const s = partition(labels, numClasses, 1, 'iid', { seed: o.seed ?? 0, testFraction: o.testFraction ?? 0.2, minSize: 1 })[0];
  if (s.train.length === 0) throw new DataError(`${source}: no training rows (it has ${labels.length} rows)`);
  return s;
}

function checkClasses(declared: string[] | undefined, classes: string[], source: string): void {
  if (!declared) return;
  if (new Set(declared).size !== declared.length) throw new DataError(`classes lists a class twice: ${declared.join(', ')}`);
  const extra = classes.filter((c) => !declared.includes(c));
  if (extra.length > 0) {
    throw new DataError(
      `${source} has class${extra.length > 1 ? 'es' : ''} ${extra.map((c) => `"${c}"`).join(', ')} that classes (${declared.join(', ')}) does not list`,
    );
  }
}

/**
 * A site's rows held in memory, as its data: objects keyed by column name
 * (`{ age: 61, clinic: 'north', diagnosis: 'benign' }`) or arrays of cells
 * with `columns`. Cells are numbers or strings; `null`, `undefined`, `NaN`
 * and the CSV missing tokens (empty, `NA`, `NaN`, `?`) are missing. Columns
 * are typed and encoded as CSV columns are. A row of another shape (missing
 * a column, with a column the others lack, another number of cells, a cell
 * that is neither number nor string) is refused, naming the row's index.
 */
export function siteDataFromRows(rows: readonly Row[], o: RowsOptions = {}): SiteData {
  const table = tableFromRecords(rows, o);
  const classes = sortNames(table.labels);
  checkClasses(o.classes, classes, table.source);
  const index = new Map(classes.map((c, i) => [c, i]));
  const labels = Int32Array.from(table.labels, (l) => index.get(l)!);
  const split = siteSplit(labels, classes.length, o, table.source);
  return {
    kind: 'table',
    table,
    split,
    classes: sortNames([...classes, ...(o.classes ?? [])]),
    ...(o.classes ? { declared: [...o.classes] } : {}),
    input: { kind: 'table', labelColumn: table.labelColumn },
    description: `${table.source}: ${split.train.length} training and ${split.test.length} test rows, ${table.columns.length} feature columns`,
    warnings: table.warnings,
  };
}

/** Flat values and the sample shape of samples given as a tensor, nested arrays or a flat array. */
function flatSamples(x: SamplesInput, shape: number[] | undefined, source: string): { values: Float32Array; n: number; sampleShape: number[] } {
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  if (x !== null && typeof x === 'object' && 'dataSync' in x && typeof x.dataSync === 'function') {
    const sampleShape = shape ?? x.shape.slice(1);
    const values = Float32Array.from(x.dataSync());
    const n = x.shape[0] ?? 0;
    if (sampleShape.length === 0) sampleShape.push(1);
    if (size(sampleShape) * n !== values.length) {
      throw new DataError(`${source}: a tensor of shape [${x.shape.join(', ')}] does not hold ${n} samples of shape [${sampleShape.join(', ')}]`);
    }
    return { values, n, sampleShape };
  }
  const arr = x as ArrayLike<unknown>;
  if (arr.length > 0 && typeof arr[0] === 'object' && arr[0] !== null) {
    // One (possibly nested) array per sample.
    const dims = (v: unknown): number[] =>
      Array.isArray(v) || ArrayBuffer.isView(v) ? [(v as ArrayLike<unknown>).length, ...dims((v as ArrayLike<unknown>)[0])] : [];
    const sampleShape = shape ?? dims(arr[0]);
    const d = size(sampleShape);
    const values = new Float32Array(arr.length * d);
    for (let i = 0; i < arr.length; i++) {
      const flat: unknown[] = [];
      const walk = (v: unknown) => {
        if (Array.isArray(v) || ArrayBuffer.isView(v)) for (const e of Array.from(v as ArrayLike<unknown>)) walk(e);
        else flat.push(v);
      };
      walk(arr[i]);
      if (flat.length !== d) {
        throw new DataError(`${source}, sample ${i}: ${flat.length} values where a sample of shape [${sampleShape.join(', ')}] has ${d}`);
      }
      flat.forEach((v, j) => {
        if (typeof v !== 'number') throw new DataError(`${source}, sample ${i}: value ${j} is a ${v === null ? 'null' : typeof v}, not a number`);
        values[i * d + j] = v;
      });
    }
    return { values, n: arr.length, sampleShape };
  }
  if (!shape) throw new DataError(`${source}: flat values need sampleShape (the shape of one sample)`);
  const d = size(shape);
  if (d < 1 || arr.length % d !== 0)
    throw new DataError(`${source}: ${arr.length} values are not a whole number of samples of shape [${shape.join(', ')}] (${d} values each)`);
  return { values: Float32Array.from(arr as ArrayLike<number>), n: arr.length / d, sampleShape: [...shape] };
}

/**
 * A site's samples held in memory (images, signals, features already
 * numeric), as its data: a tfjs tensor of shape `[n, ...sampleShape]`,
 * one array (or nested array) per sample, or a flat array with
 * `sampleShape`; and one label per sample, a class name or a number
 * (an index into `classNames` when given, else the class named by it).
 * Every sample must have the sample shape and finite values; the refusal
 * names the sample's index.
 */
export function siteDataFromSamples(x: SamplesInput, labels: ArrayLike<number | string>, o: SamplesOptions = {}): SiteData {
  const source = o.name ?? 'samples';
  const { values, n, sampleShape } = flatSamples(x, o.sampleShape, source);
  if (labels.length !== n) throw new DataError(`${source}: ${labels.length} labels for ${n} samples`);
  if (n === 0) throw new DataError(`${source}: no samples`);
  const d = values.length / n;
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) throw new DataError(`${source}, sample ${Math.floor(i / d)}: value ${i % d} is ${values[i]}, not a finite number`);
  }
  let classNames: string[];
  let idx: Int32Array;
  if (o.classNames) {
    classNames = [...o.classNames];
    const byName = new Map(classNames.map((c, k) => [c, k]));
    idx = Int32Array.from(Array.from(labels), (l, i) => {
      const k = typeof l === 'number' ? l : byName.get(l);
      if (k === undefined || !Number.isInteger(k) || k < 0 || k >= classNames.length) {
        throw new DataError(`${source}, sample ${i}: label ${JSON.stringify(l)} is not one of the classes ${classNames.join(', ')} (or their indices)`);
      }
      return k;
    });
  } else {
    const names = Array.from(labels, (l, i) => {
      if ((typeof l !== 'number' || !Number.isFinite(l)) && (typeof l !== 'string' || l.trim() === '')) {
        throw new DataError(`${source}, sample ${i}: label ${JSON.stringify(l)} is not a class (a name or a number)`);
      }
      return String(l).trim();
    });
    classNames = sortNames(names);
    const byName = new Map(classNames.map((c, k) => [c, k]));
    idx = Int32Array.from(names, (l) => byName.get(l)!);
  }
  const present = sortNames([...new Set(idx)].map((k) => classNames[k]));
  checkClasses(o.classes, present, source);
  const dataset: Dataset = {
    name: source,
    features: values,
    labels: idx,
    numSamples: n,
    sampleShape,
    classNames,
    description: `${n} samples of shape ${sampleShape.join('x')} held in memory`,
    source: 'in memory',
  };
  const split = siteSplit(idx, classNames.length, o, source);
  const declared = o.classes ?? (o.classNames ? classNames : undefined);
  const input: InputSpec = { kind: 'features', labelColumn: 'label' };
  return {
    kind: 'tensor',
    dataset,
    split,
    classes: declared ? [...declared] : present,
    ...(declared ? { declared: [...declared] } : {}),
    input,
    description: `${source}: ${split.train.length} training and ${split.test.length} test samples of shape ${sampleShape.join('x')}`,
    warnings: [],
  };
}

/**
 * New rows (objects or arrays of cells, as for {@link siteDataFromRows}),
 * encoded in the agreed layout to predict or evaluate (not standardized:
 * a learner standardizes what it is given). Column kinds come from the
 * agreement: text in a numeric column is an error naming the row and the
 * column, unless `invalidAsMissing`. The label column may be absent.
 */
export function encodeRows(
  rows: readonly Row[],
  agreed: AgreedSchema,
  o: { columns?: string[]; invalidAsMissing?: boolean; name?: string } = {},
): { features: Float32Array; labels?: Int32Array } {
  if (agreed.schema.kind !== 'table') throw new DataError('these sites agreed on samples of a fixed shape, not on rows: give samples to predict');
  const schema: TableSchema = agreed.schema;
  const kinds = Object.fromEntries(schema.columns.map((c) => [c.name, c.kind]));
  // Object rows: the schema's columns, and the label column when the rows have it (extra keys are ignored).
  const first = rows[0];
  const columns =
    o.columns ??
    (first !== undefined && !Array.isArray(first)
      ? [...schema.columns.map((c) => c.name), ...(Object.hasOwn(first, schema.labelColumn) ? [schema.labelColumn] : [])]
      : undefined);
  const table = tableFromRecords(rows, { ...o, ...(columns ? { columns } : {}), labelColumn: schema.labelColumn, kinds, labelsOptional: true });
  const enc = encodeTable(table, schema);
  return { features: enc.features, ...(table.labelled === false ? {} : { labels: enc.labels }) };
}
