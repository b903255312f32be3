/**
 * Real tables: read a CSV into a raw table (columns typed as numeric or
 * categorical, missing cells marked), describe it with a schema, and encode
 * it into a flat feature layout.
 *
 * Policies, the same for a single file and for a consortium:
 *
 * - Missing cells are the empty string, `NA`, `NaN` and `?` (case-insensitive,
 *   surrounding spaces ignored).
 * - A numeric column's missing cells are imputed with the schema's `impute`
 *   value (the mean of the column's observed values: over the file for
 *   {@link inferTableSchema}, pooled over the consortium's training rows for
 *   `mergeSummaries`), and a 0/1 indicator feature `<col>_missing` follows
 *   the column whenever the schema says the column has missing values.
 * - A categorical column is one-hot encoded over its sorted vocabulary, one
 *   feature `<col>=<category>` per category. A missing cell, and a category
 *   the schema does not know (seen only in test rows, say), encode as all
 *   zeros: no extra category.
 * - A column is numeric when every observed cell is a number, categorical
 *   when none is (or when it is named in `categorical`). A column mixing both
 *   is accepted only when the minority kind makes up at most `mixedTolerance`
 *   of its observed cells (default 5%): stray text in a numeric column then
 *   counts as missing, stray numbers in a text column are categories; both
 *   are listed in the table's `warnings`. Anything more mixed is an error
 *   naming the line and the column.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { DataError } from './errors.js';

/** Cells that count as missing (compared trimmed and lower-cased). */
export const MISSING_TOKENS: readonly string[] = ['', 'na', 'nan', '?'];

export function isMissingCell(cell: string): boolean {
  return MISSING_TOKENS.includes(cell.trim().toLowerCase());
}

/** Parse a cell as a finite number, or `undefined` when it is not one. */
function parseNumber(cell: string): number | undefined {
  const s = cell.trim();
  if (s === '') return undefined;
  const v = Number(s);
  return Number.isFinite(v) ? v : undefined;
}

/** The largest magnitude a 32-bit float holds: features are float32, so a cell beyond it would read as infinite. */
export const MAX_CELL = 3.4028234663852886e38;

/**
 * Names that differ only in letter case (`Low`, `low`), in groups: they
 * count as different classes or categories, which is seldom what was meant.
 */
export function caseClashes(names: Iterable<string>): string[][] {
  const byKey = new Map<string, Set<string>>();
  for (const n of names) {
    const k = n.toLowerCase();
    if (!byKey.has(k)) byKey.set(k, new Set());
    byKey.get(k)!.add(n);
  }
  return [...byKey.values()].filter((g) => g.size > 1).map((g) => [...g].sort());
}

/** `"Low" and "low"` (or `"a", "A" and "á"`). */
export function quoteGroup(group: string[]): string {
  const q = group.map((x) => `"${x}"`);
  return q.length === 2 ? q.join(' and ') : `${q.slice(0, -1).join(', ')} and ${q.at(-1)}`;
}

/**
 * The delimiter of a CSV text, from its first line: a comma when the line
 * has one outside quotes, else a semicolon or a tab (whichever it has more
 * of), else a comma (a file of one column).
 */
export function detectDelimiter(text: string): ',' | ';' | '\t' {
  const counts = { ',': 0, ';': 0, '\t': 0 };
  let quoted = false;
  for (const ch of text.replace(/^\uFEFF/, '')) {
    if (ch === '"') quoted = !quoted;
    else if (!quoted && (ch === '\n' || ch === '\r')) break;
    else if (!quoted && ch in counts) counts[ch as keyof typeof counts]++;
  }
  if (counts[','] > 0) return ',';
  if (counts[';'] === 0 && counts['\t'] === 0) return ',';
  return counts[';'] >= counts['\t'] ? ';' : '\t';
}

/** Sort names the way class names and vocabularies are sorted: numerically when all are numbers, else by code unit. */
export function sortNames(names: Iterable<string>): string[] {
  const out = [...new Set(names)];
  const numeric = out.length > 0 && out.every((s) => parseNumber(s) !== undefined);
  return numeric ? out.sort((a, b) => Number(a) - Number(b) || (a < b ? -1 : a > b ? 1 : 0)) : out.sort();
}

/** A feature column as read: numbers (NaN missing) or categories (null missing). */
export type RawColumn =
  | { name: string; kind: 'numeric'; /** NaN marks a missing cell. */ values: Float64Array }
  | { name: string; kind: 'categorical'; /** null marks a missing cell. */ values: (string | null)[] };

/** A table as read, before encoding: typed feature columns, raw labels, and where each row came from. */
export interface RawTable {
  /** The file (or a name for an in-memory table). */
  source: string;
  /** The label column's name. */
  labelColumn: string;
  /** The feature columns in file order, typed as numeric or categorical. */
  columns: RawColumn[];
  /** Label of each row, as written. */
  labels: string[];
  /** 1-based line in the file where each row starts (header is line 1 for in-memory tables); with `rowWord: 'row'`, the row's index. */
  lines: number[];
  /** How messages name a row: `line <n>` of a file (default) or `row <i>` of in-memory rows. */
  rowWord?: 'line' | 'row';
  /** Cells that were accepted but worth a look (stray text counted as missing, ...). */
  warnings: string[];
  /** False when the file has no label column (only with `labelsOptional`). */
  labelled?: boolean;
  /** With `invalidAsMissing`: the cells of schema-numeric columns that were not numbers and were read as missing. */
  invalid?: { row: number; column: string; cell: string }[];
  /**
   * A multi-task table (`TableOptions.taskColumns`): each label column's
   * label of every row, as written (trimmed), `''` where the row lacks it.
   */
  taskLabels?: Record<string, string[]>;
}

/**
 * How a table is read: the label column, the columns to keep or drop, which
 * are categorical, how mixed columns and bad cells are treated.
 */
export interface TableOptions {
  /** The column holding the class label (default `label`). */
  labelColumn?: string;
  /** Where the user names the label column, for the error when it is missing (default: the CLI's `--label-column`). */
  labelColumnSetting?: string;
  /** Keep only these feature columns, in this order. */
  features?: string[];
  /** Drop these columns. */
  drop?: string[];
  /** Treat these columns as categorical even when their cells are numbers (codes, zip codes). */
  categorical?: string[];
  /** Largest share of a column's observed cells that may be of the other kind (default 0.05). */
  mixedTolerance?: number;
  /**
   * Column kinds fixed in advance (from an agreed schema, for new rows):
   * a numeric column's cell that is not a number is an error naming its line
   * and column (see `invalidAsMissing`), a categorical column keeps its cells
   * as text, and a column whose every cell is missing is accepted.
   */
  kinds?: Record<string, 'numeric' | 'categorical'>;
  /** With `kinds`: read a numeric column's cells that are not numbers as missing instead, listing them in the table's `invalid`. */
  invalidAsMissing?: boolean;
  /** Accept a file without the label column (rows to predict); `labels` are then empty strings. */
  labelsOptional?: boolean;
  /**
   * A multi-task table: the label column of every task (the first is the
   * table's `labelColumn`). Each is a label, never a feature; a missing cell
   * means the row lacks that task's label (it stays for the others), and a
   * row without any label is left out (counted in one warning). With
   * `labelsOptional` (new rows to predict or evaluate) every row is kept, and
   * a task column the file lacks is absent from `taskLabels`.
   */
  taskColumns?: string[];
}

/**
 * A numeric column in the agreed schema: the value missing cells take, and
 * whether a missing-indicator feature follows it.
 */
export interface NumericColumnSchema {
  /** The column's name in the file. */
  name: string;
  /** Marks a numeric column. */
  kind: 'numeric';
  /** Value written for a missing cell. */
  impute: number;
  /** Whether a `<name>_missing` indicator feature follows the column. */
  indicator: boolean;
}

/** A categorical column in the agreed schema: its vocabulary, one feature per category. */
export interface CategoricalColumnSchema {
  /** The column's name in the file. */
  name: string;
  /** Marks a categorical column. */
  kind: 'categorical';
  /** Sorted vocabulary; each category is one one-hot feature `<name>=<category>`. */
  categories: string[];
}

/** A column of a table's schema: numeric or categorical. */
export type ColumnSchema = NumericColumnSchema | CategoricalColumnSchema;

/** How a table is encoded: feature columns in order, and the classes. */
export interface TableSchema {
  /** Marks a table schema. */
  kind: 'table';
  /** The label column's name. */
  labelColumn: string;
  /** Sorted class names; a label's class index is its position here. */
  classNames: string[];
  /** The feature columns, in encoding order. */
  columns: ColumnSchema[];
}

/** Read a CSV file with a header row into a {@link RawTable}. */
export function readCsvTable(path: string, opts: TableOptions = {}): RawTable {
  const file = resolve(path);
  if (!existsSync(file)) throw new DataError(`CSV file not found: ${file}`);
  const text = readFileSync(file, 'utf8');
  let records: { record: string[]; info: { lines: number } }[];
  try {
    records = parseCsv(text, { info: true, skip_empty_lines: true, trim: true, bom: true, delimiter: detectDelimiter(text) }) as unknown as typeof records;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new DataError(`${file}: malformed CSV: ${msg}`);
  }
  if (records.length < 2) throw new DataError(`${file}: needs a header row and at least one data row`);
  return tableFromRows(
    records[0].record,
    records.slice(1).map((r) => r.record),
    { ...opts, source: file, lines: records.slice(1).map((r) => r.info.lines) },
  );
}

/**
 * Build a {@link RawTable} from a header and rows of cells (what
 * {@link readCsvTable} does after parsing). `lines` gives each row's line
 * for error messages (default: row i is line i + 2).
 */
export function tableFromRows(
  header: string[],
  rows: string[][],
  opts: TableOptions & { source?: string; lines?: number[]; rowWord?: 'line' | 'row' } = {},
): RawTable {
  const source = opts.source ?? 'table';
  let lines = opts.lines ?? rows.map((_, i) => i + 2);
  const word = opts.rowWord ?? 'line';
  const head = word === 'line' ? 'line 1' : 'columns';
  const labelName = opts.taskColumns?.[0] ?? opts.labelColumn ?? 'label';
  const labelNames = opts.taskColumns ?? [labelName];
  const tolerance = opts.mixedTolerance ?? 0.05;
  if (!(tolerance >= 0 && tolerance < 0.5)) throw new DataError(`mixedTolerance must be in [0, 0.5), got ${tolerance}`);
  const seen = checkHeader(header, labelNames, opts, source, head);
  const labelCol = seen.get(labelName);
  const kinds = opts.kinds;
  let keep = opts.features ? [...opts.features] : header.filter((h) => !labelNames.includes(h) && (!kinds || Object.hasOwn(kinds, h)));
  if (opts.drop) keep = keep.filter((h) => !opts.drop!.includes(h));
  if (new Set(keep).size !== keep.length) throw new DataError(`${source}: a column is listed twice in features`);
  if (keep.length < 1) throw new DataError(`${source}: needs at least one feature column besides "${labelName}"`);

  rows.forEach((r, i) => {
    if (r.length !== header.length) {
      throw new DataError(`${source}, ${word} ${lines[i]}: ${r.length} cells where the header has ${header.length} columns`);
    }
  });
  const warnings: string[] = [];
  let taskLabels: Record<string, string[]> | undefined;
  if (opts.taskColumns && opts.labelsOptional) {
    // New rows: none is left out; a task's missing cell (or column) is that task's to skip.
    const present = opts.taskColumns.filter((c) => seen.has(c));
    taskLabels = Object.fromEntries(present.map((c) => [c, rows.map((r) => (isMissingCell(r[seen.get(c)!]) ? '' : r[seen.get(c)!].trim()))]));
  } else if (opts.taskColumns && labelCol !== undefined) {
    ({ rows, lines, taskLabels } = multiLabelRows(opts.taskColumns, seen, rows, lines, source, word, warnings));
  } else if (labelCol !== undefined) {
    ({ rows, lines } = labelledRows(rows, lines, labelCol, labelName, Boolean(opts.labelsOptional), source, word, warnings));
  }
  const labels = taskLabels?.[labelName] ?? rows.map((r) => (labelCol === undefined ? '' : r[labelCol].trim()));
  for (const [column, ls] of Object.entries(taskLabels ?? { [labelName]: labels })) {
    for (const g of caseClashes(ls.filter((l) => l !== ''))) {
      warnings.push(
        `labels ${quoteGroup(g)} in column "${column}" differ only in case and count as ${g.length} classes; write them alike if they are one class`,
      );
    }
  }
  const columns = keep.map((name) => {
    const fixed = kinds && Object.hasOwn(kinds, name) ? kinds[name] : undefined;
    const forced = fixed ?? (opts.categorical?.includes(name) ? 'categorical' : undefined);
    return typeColumn(name, seen.get(name)!, rows, lines, source, tolerance, forced, warnings, fixed !== undefined, word);
  });
  const invalid = kinds
    ? schemaNumericTextCells(
        columns,
        rows,
        keep.map((k) => seen.get(k)!),
        lines,
        source,
        Boolean(opts.invalidAsMissing),
        word,
      )
    : [];
  return {
    source,
    labelColumn: labelName,
    columns,
    labels,
    lines,
    ...(word === 'row' ? { rowWord: word } : {}),
    warnings,
    labelled: taskLabels ? Object.keys(taskLabels).length > 0 : labelCol !== undefined,
    ...(invalid.length ? { invalid } : {}),
    ...(taskLabels ? { taskLabels } : {}),
  };
}

/**
 * Check a table's header against its options: every column named once, the
 * label column(s) present (unless labels are optional), the columns named in
 * `features`, `drop`, `categorical` and the schema's `kinds` present and not
 * labels. Returns each column's index by name.
 */
function checkHeader(header: string[], labelNames: string[], opts: TableOptions, source: string, head: string): Map<string, number> {
  const seen = new Map<string, number>();
  header.forEach((h, c) => {
    if (h === '') throw new DataError(`${source}, ${head}: column ${c + 1} has no name`);
    if (seen.has(h)) throw new DataError(`${source}, ${head}: column "${h}" appears twice (columns ${seen.get(h)! + 1} and ${c + 1})`);
    seen.set(h, c);
  });
  for (const l of labelNames) {
    if (seen.get(l) !== undefined || opts.labelsOptional) continue;
    throw new DataError(
      `${source}: no label column "${l}". Columns are: ${header.join(', ')}. Name the label column with ${opts.labelColumnSetting ?? '--label-column'}.`,
    );
  }
  const unknown = (list: string[] | undefined, what: string) => {
    for (const name of list ?? []) {
      if (!seen.has(name)) throw new DataError(`${source}, ${head}: column "${name}" in ${what} is not in the header. Columns are: ${header.join(', ')}`);
      if (labelNames.includes(name))
        throw new DataError(`${source}, ${head}: column "${name}" in ${what} is ${labelNames.length > 1 ? 'a' : 'the'} label column`);
    }
  };
  unknown(opts.features, 'features');
  unknown(opts.drop, 'drop');
  unknown(opts.categorical, 'categorical');
  if (opts.kinds) {
    const absent = Object.keys(opts.kinds)
      .filter((k) => !seen.has(k))
      .map((k) => `"${k}"`);
    if (absent.length > 0) {
      throw new DataError(`${source}: lacks column${absent.length > 1 ? 's' : ''} ${absent.join(', ')} of the schema. Columns are: ${header.join(', ')}`);
    }
  }
  return seen;
}

/**
 * The rows of a one-label table that have their label: a row without one
 * teaches nothing, so it is left out and counted in a warning. New rows to
 * predict or evaluate (`labelsOptional`) are never left out: a missing label
 * there is an error naming the line.
 */
function labelledRows(
  rows: string[][],
  lines: number[],
  labelCol: number,
  labelName: string,
  labelsOptional: boolean,
  source: string,
  word: string,
  warnings: string[],
): { rows: string[][]; lines: number[] } {
  const unlabelled = rows.flatMap((r, i) => (isMissingCell(r[labelCol]) ? [i] : []));
  if (labelsOptional && unlabelled.length > 0) {
    const i = unlabelled[0];
    throw new DataError(`${source}, ${word} ${lines[i]}: missing label ("${rows[i][labelCol].trim()}") in column "${labelName}"`);
  }
  if (unlabelled.length === rows.length) throw new DataError(`${source}: every row's label in column "${labelName}" is missing`);
  if (unlabelled.length === 0) return { rows, lines };
  const shown = unlabelled
    .slice(0, 5)
    .map((i) => lines[i])
    .join(', ');
  warnings.push(`${unlabelled.length} row(s) without a label in column "${labelName}" left out (${word} ${shown}${unlabelled.length > 5 ? ', ...' : ''})`);
  const drop = new Set(unlabelled);
  return { rows: rows.filter((_, i) => !drop.has(i)), lines: lines.filter((_, i) => !drop.has(i)) };
}

/**
 * The rows of a multi-task table and each task column's labels (`''`
 * where a row lacks one): a row without any label is left out, counted in
 * one warning, and each column's missing labels are counted in another.
 */
function multiLabelRows(
  columns: string[],
  seen: Map<string, number>,
  rows: string[][],
  lines: number[],
  source: string,
  word: string,
  warnings: string[],
): { rows: string[][]; lines: number[]; taskLabels: Record<string, string[]> } {
  const at = columns.map((c) => seen.get(c)!);
  const none = rows.flatMap((r, i) => (at.every((c) => isMissingCell(r[c])) ? [i] : []));
  if (none.length === rows.length) throw new DataError(`${source}: no row has a label in any of the columns ${columns.map((c) => `"${c}"`).join(', ')}`);
  if (none.length > 0) {
    const shown = none
      .slice(0, 5)
      .map((i) => lines[i])
      .join(', ');
    warnings.push(
      `${none.length} row(s) without a label in any of the columns ${columns.map((c) => `"${c}"`).join(', ')} left out (${word} ${shown}${none.length > 5 ? ', ...' : ''})`,
    );
    const drop = new Set(none);
    rows = rows.filter((_, i) => !drop.has(i));
    lines = lines.filter((_, i) => !drop.has(i));
  }
  const taskLabels: Record<string, string[]> = {};
  columns.forEach((column, k) => {
    const ls = rows.map((r) => (isMissingCell(r[at[k]]) ? '' : r[at[k]].trim()));
    const lacking = ls.filter((l) => l === '').length;
    if (lacking === ls.length) throw new DataError(`${source}: every row's label in column "${column}" is missing`);
    if (lacking > 0) warnings.push(`${lacking} row(s) without a label in column "${column}": left out of that task only`);
    taskLabels[column] = ls;
  });
  return { rows, lines, taskLabels };
}

/**
 * New rows read with a schema's column kinds: a cell that is not a number in
 * a numeric column would change the prediction silently if it counted as
 * missing, so it is an error naming its line and column, unless
 * `asMissing`; then the cells are returned (row order) and stay missing.
 */
function schemaNumericTextCells(
  columns: RawColumn[],
  rows: string[][],
  at: number[],
  lines: number[],
  source: string,
  asMissing: boolean,
  word = 'line',
): { row: number; column: string; cell: string }[] {
  const found: { row: number; column: string; cell: string }[] = [];
  rows.forEach((r, i) => {
    columns.forEach((col, j) => {
      const cell = r[at[j]].trim();
      if (col.kind !== 'numeric' || isMissingCell(cell) || parseNumber(cell) !== undefined) return;
      if (!asMissing) {
        throw new DataError(
          `${source}, ${word} ${lines[i]}: column "${col.name}" holds "${cell}", which is not a number (the model reads numbers there). ` +
            'Fix the cell, write NA if it is missing, or read such cells as missing (--invalid-as-missing), which marks their rows.',
        );
      }
      found.push({ row: i, column: col.name, cell });
    });
  });
  return found;
}

function typeColumn(
  name: string,
  c: number,
  rows: string[][],
  lines: number[],
  source: string,
  tolerance: number,
  forced: 'numeric' | 'categorical' | undefined,
  warnings: string[],
  fromSchema = false,
  word = 'line',
): RawColumn {
  const cells = rows.map((r) => r[c].trim());
  let observed = 0;
  let numbers = 0;
  let firstText = -1;
  let firstNumber = -1;
  cells.forEach((s, i) => {
    if (isMissingCell(s)) return;
    observed++;
    if (parseNumber(s) !== undefined) {
      numbers++;
      if (firstNumber < 0) firstNumber = i;
    } else if (firstText < 0) firstText = i;
  });
  const texts = observed - numbers;
  const numeric = (): RawColumn => {
    if (texts > 0) {
      warnings.push(
        `column "${name}": ${texts} of ${observed} cells are not numbers (first at ${word} ${lines[firstText]}: "${cells[firstText]}") and count as missing`,
      );
    }
    const values = Float64Array.from(cells, (s) => (isMissingCell(s) ? NaN : (parseNumber(s) ?? NaN)));
    const huge = values.findIndex((v) => Math.abs(v) > MAX_CELL);
    if (huge >= 0) {
      throw new DataError(
        `${source}, ${word} ${lines[huge]}: column "${name}" holds ${cells[huge]}, beyond the largest number the model reads (±3.4e38, a 32-bit float). ` +
          'Fix the cell, or write NA if it is missing.',
      );
    }
    return { name, kind: 'numeric', values };
  };
  if (forced === 'numeric') return numeric();
  if (observed === 0 && !fromSchema) {
    throw new DataError(`${source}, ${word}s ${lines[0]}-${lines[lines.length - 1]}: column "${name}" has no values (every cell is missing); drop it`);
  }
  const categorical = (): RawColumn => {
    const values = cells.map((s) => (isMissingCell(s) ? null : s));
    for (const g of caseClashes(values.filter((v) => v !== null))) {
      warnings.push(`column "${name}": ${quoteGroup(g)} differ only in case and count as ${g.length} categories; write them alike if they are one`);
    }
    return { name, kind: 'categorical', values };
  };
  if (forced === 'categorical') return categorical();
  if (texts === 0 || (texts > 0 && numbers > 0 && texts / observed <= tolerance)) return numeric();
  if (numbers === 0 || numbers / observed <= tolerance) {
    if (numbers > 0) {
      warnings.push(
        `column "${name}": ${numbers} of ${observed} cells are numbers in a text column (first at ${word} ${lines[firstNumber]}: "${cells[firstNumber]}") and count as categories`,
      );
    }
    return categorical();
  }
  // Too mixed to guess: name the first cell of the minority kind.
  const i = numbers >= texts ? firstText : firstNumber;
  const what = numbers >= texts ? 'which is not a number' : 'a number';
  throw new DataError(
    `${source}, ${word} ${lines[i]}: column "${name}" holds "${cells[i]}", ${what}, but ${numbers} of its ${observed} observed cells are numbers ` +
      `and ${texts} are text. Fix the cell, write NA if it is missing, or list the column in categorical (--categorical).`,
  );
}

/** The rows of a raw table, as a new table. */
export function takeTableRows(table: RawTable, rows: ArrayLike<number>): RawTable {
  const idx = Array.from(rows);
  return {
    ...table,
    columns: table.columns.map((col) =>
      col.kind === 'numeric' ? { ...col, values: Float64Array.from(idx, (r) => col.values[r]) } : { ...col, values: idx.map((r) => col.values[r]) },
    ),
    labels: idx.map((r) => table.labels[r]),
    lines: idx.map((r) => table.lines[r]),
    ...(table.taskLabels ? { taskLabels: Object.fromEntries(Object.entries(table.taskLabels).map(([c, ls]) => [c, idx.map((r) => ls[r])])) } : {}),
  };
}

/**
 * The schema a table describes on its own (over `rows`, default all):
 * sorted classes and vocabularies, numeric columns imputed with the mean of
 * their observed cells, an indicator for each column with a missing cell.
 */
export function inferTableSchema(table: RawTable, rows?: ArrayLike<number>): TableSchema {
  const idx = rows ? Array.from(rows) : table.labels.map((_, i) => i);
  const columns = table.columns.map((col): ColumnSchema => {
    if (col.kind === 'categorical') {
      const cats = new Set<string>();
      for (const r of idx) if (col.values[r] !== null) cats.add(col.values[r]!);
      return { name: col.name, kind: 'categorical', categories: sortNames(cats) };
    }
    let sum = 0;
    let count = 0;
    for (const r of idx) {
      const v = col.values[r];
      if (Number.isNaN(v)) continue;
      sum += v;
      count++;
    }
    return { name: col.name, kind: 'numeric', impute: count > 0 ? sum / count : 0, indicator: count < idx.length };
  });
  return { kind: 'table', labelColumn: table.labelColumn, classNames: sortNames(idx.map((r) => table.labels[r])), columns };
}

/** One feature of an encoded table. */
export interface FeatureSlot {
  name: string;
  /** Index of the schema column it comes from. */
  column: number;
  role: 'value' | 'missing' | 'category';
  category?: string;
}

/** The encoded features of a schema, in order: `<col>`, `<col>_missing`, `<col>=<category>`. */
export function featureLayout(schema: TableSchema): FeatureSlot[] {
  const slots: FeatureSlot[] = [];
  schema.columns.forEach((col, c) => {
    if (col.kind === 'numeric') {
      slots.push({ name: col.name, column: c, role: 'value' });
      if (col.indicator) slots.push({ name: `${col.name}_missing`, column: c, role: 'missing' });
    } else {
      for (const cat of col.categories) slots.push({ name: `${col.name}=${cat}`, column: c, role: 'category', category: cat });
    }
  });
  const names = new Set<string>();
  for (const s of slots) {
    if (names.has(s.name)) throw new DataError(`two encoded features are both named "${s.name}": rename a column`);
    names.add(s.name);
  }
  return slots;
}

/** Encoded features and class indices of a table under a schema. */
export interface EncodedTable {
  features: Float32Array;
  /** Class index per row; -1 for every row of a table without labels. */
  labels: Int32Array;
  featureNames: string[];
}

/**
 * Encode a raw table with a schema (see the policies at the top of this
 * file). Columns are matched by name; the table may hold them in any order.
 * Errors name the column, and the line for a label the schema lacks.
 */
export function encodeTable(table: RawTable, schema: TableSchema): EncodedTable {
  const byName = new Map(table.columns.map((c) => [c.name, c]));
  const missing = schema.columns.filter((c) => !byName.has(c.name)).map((c) => `"${c.name}"`);
  if (missing.length > 0) throw new DataError(`${table.source} lacks column${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of the schema`);
  for (const c of schema.columns) {
    const have = byName.get(c.name)!.kind;
    if (have !== c.kind) {
      throw new DataError(
        `${table.source}: column "${c.name}" is ${have} here but ${c.kind} in the schema${c.kind === 'categorical' ? ' (list it in categorical)' : ''}`,
      );
    }
  }
  const slots = featureLayout(schema);
  const d = slots.length;
  const n = table.labels.length;
  const features = new Float32Array(n * d);
  const catIndex = schema.columns.map((c) => (c.kind === 'categorical' ? new Map(c.categories.map((v, k) => [v, k])) : undefined));
  const firstSlot = schema.columns.map((_, c) => slots.findIndex((s) => s.column === c));
  schema.columns.forEach((col, c) => {
    const raw = byName.get(col.name)!;
    const base = firstSlot[c];
    if (col.kind === 'numeric' && raw.kind === 'numeric') {
      for (let i = 0; i < n; i++) {
        const v = raw.values[i];
        const miss = Number.isNaN(v);
        features[i * d + base] = miss ? col.impute : v;
        if (col.indicator) features[i * d + base + 1] = miss ? 1 : 0;
      }
    } else if (col.kind === 'categorical' && raw.kind === 'categorical') {
      if (base < 0) return; // empty vocabulary: no features
      const index = catIndex[c]!;
      for (let i = 0; i < n; i++) {
        const v = raw.values[i];
        const k = v === null ? undefined : index.get(v);
        if (k !== undefined) features[i * d + base + k] = 1;
      }
    }
  });
  const classOf = new Map(schema.classNames.map((l, i) => [l, i]));
  const labels = new Int32Array(n);
  if (table.labelled === false) labels.fill(-1);
  else
    for (let i = 0; i < n; i++) {
      const k = classOf.get(table.labels[i]);
      if (k === undefined) {
        throw new DataError(
          `${table.source}, ${table.rowWord ?? 'line'} ${table.lines[i]}: label "${table.labels[i]}" in column "${table.labelColumn}" is not one of the classes ${schema.classNames.join(', ')}`,
        );
      }
      labels[i] = k;
    }
  return { features, labels, featureNames: slots.map((s) => s.name) };
}

/** The target of each row of a regression table: a finite number, or an error naming the line and the column (`nan`: an empty cell, a row that lacks it, is NaN). */
export function regressionTargets(table: RawTable, missing: 'error' | 'nan' = 'error'): Float32Array {
  return Float32Array.from(table.labels, (cell, i) => {
    if (cell === '' && missing === 'nan') return NaN;
    const v = Number(cell);
    if (cell === '' || !Number.isFinite(v) || Math.abs(v) > MAX_CELL) {
      throw new DataError(
        `${table.source}, ${table.rowWord ?? 'line'} ${table.lines[i]}: "${cell}" in column "${table.labelColumn}" is not a finite number (the column is a regression target)`,
      );
    }
    return v;
  });
}
