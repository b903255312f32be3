/**
 * Multi-task datasets: several tasks over the same rows, each with its own
 * labels, and the built-in multi-task cells derived from digits and
 * Fashion-MNIST (`digits-tasks`, `fashion-mnist-tasks`).
 */
import { DataError } from './errors.js';
import { agreedTasks, classificationEntry, targetSums, type AgreedTask, type SummaryTaskEntry } from './federated.js';
import { quantileStrata, type Dataset, type DatasetTaskColumn } from './types.js';

/** The single-task dataset of task `name` of a multi-task `ds`: the same rows and features, that task's labels. */
export function taskDataset(ds: Dataset, name: string): Dataset {
  const col = ds.tasks?.find((t) => t.name === name);
  if (!col) {
    const known = ds.tasks?.map((t) => t.name).join(', ');
    throw new DataError(`${ds.name} has no task "${name}"${known ? `; its tasks are ${known}` : ' (it is not a multi-task dataset)'}`);
  }
  const { tasks: _tasks, siteTasks: _siteTasks, ...rest } = ds;
  return {
    ...rest,
    labels: col.labels,
    classNames: col.classNames,
    task: col.kind === 'regression' ? { name: col.name, kind: 'regression', values: col.values! } : { name: col.name, kind: 'classification' },
  };
}

/** Of `rows`, those that carry a label of `ds`'s task (every row, for a dataset whose loader dropped unlabelled ones). */
export function labelledRows(ds: Dataset, rows: Int32Array): Int32Array {
  const values = ds.task?.kind === 'regression' ? ds.task.values : undefined;
  const has = (r: number) => (values ? Number.isFinite(values[r]) : ds.labels[r] >= 0);
  return rows.every(has) ? rows : rows.filter(has);
}

/** A classification column from a class index per row. */
function classes(name: string, classNames: string[], labelOf: (row: number) => number, n: number): DatasetTaskColumn {
  return { name, kind: 'classification', classNames, labels: Int32Array.from({ length: n }, (_, r) => labelOf(r)) };
}

/** A regression column from a number per row. */
function target(name: string, valueOf: (row: number) => number, n: number): DatasetTaskColumn {
  const values = Float32Array.from({ length: n }, (_, r) => valueOf(r));
  return { name, kind: 'regression', values, ...quantileStrata(values) };
}

/** Fashion-MNIST's ten items in four groups: tops (with dresses), bottoms, footwear, bags. */
export const FASHION_MNIST_GROUPS = { names: ['tops', 'bottoms', 'footwear', 'bags'], ofItem: [0, 1, 0, 0, 0, 2, 0, 2, 3, 2] } as const;

/**
 * The built-in multi-task cells, from a loaded base dataset:
 *
 * - `digits-tasks`: four tasks of one digit image: `digit` (10 classes),
 *   `parity` (even, odd), `high` (below 5, 5 or more) and `value` (the
 *   digit as a number, a regression). Site i learns task i mod 4, and odd
 *   sites also the next one: 10 sites give the tasks 5, 3, 5 and 2 sites.
 * - `fashion-mnist-tasks`: `item` (the 10 kinds of clothing) at even sites
 *   and `group` (tops, bottoms, footwear, bags) at odd ones.
 */
export function withDerivedTasks(cell: 'digits-tasks' | 'fashion-mnist-tasks', base: Dataset): Dataset {
  const n = base.numSamples;
  const y = base.labels;
  if (cell === 'digits-tasks') {
    const names = ['digit', 'parity', 'high', 'value'];
    return {
      ...base,
      name: cell,
      description: `${base.description} Four tasks per image: the digit, its parity, whether it is 5 or more, and its value as a number.`,
      tasks: [
        classes('digit', base.classNames, (r) => y[r], n),
        classes('parity', ['even', 'odd'], (r) => y[r] % 2, n),
        classes('high', ['below 5', '5 or more'], (r) => (y[r] >= 5 ? 1 : 0), n),
        target('value', (r) => y[r], n),
      ],
      siteTasks: names.map((t, i) => (i % 2 === 1 ? [t, names[(i + 1) % names.length]] : [t])),
    };
  }
  return {
    ...base,
    name: cell,
    description: `${base.description} Two tasks: the item (10 classes) and its group (tops, bottoms, footwear, bags).`,
    tasks: [classes('item', base.classNames, (r) => y[r], n), classes('group', [...FASHION_MNIST_GROUPS.names], (r) => FASHION_MNIST_GROUPS.ofItem[y[r]], n)],
    siteTasks: [['item'], ['group']],
  };
}

/**
 * The summary entry of task `name` of the multi-task `ds` over `rows` (a
 * site's training rows; those that carry its label count): its classes
 * (with `declared`, the label set the site declares) and counts, or a
 * regression target's sums.
 */
export function datasetTaskEntry(ds: Dataset, name: string, rows: ArrayLike<number>, declared?: string[]): SummaryTaskEntry {
  const view = taskDataset(ds, name);
  const own = labelledRows(view, Int32Array.from(rows));
  if (view.task?.kind === 'regression') {
    const values = view.task.values;
    return { name, kind: 'regression', numRows: own.length, classNames: [], labelCounts: [], ...targetSums(Array.from(own, (r) => values[r])) };
  }
  return classificationEntry(
    name,
    Array.from(own, (r) => view.classNames[view.labels[r]]),
    declared ?? [],
    declared,
  );
}

/**
 * The tasks a consortium agrees on when site i holds rows `splits[i].train`
 * of the multi-task `ds` and learns the tasks `plan[i]`: each site's entries
 * merged per task (what site processes agree on from their summaries, to
 * the bit; the simulator takes a regression target's scale from it).
 */
export function federatedTaskAgreement(ds: Dataset, splits: { train: ArrayLike<number> }[], plan: string[][]): AgreedTask[] {
  return agreedTasks(
    splits.map((s, i) => ({
      site: `site-${i}`,
      tasks: plan[i].map((t) => datasetTaskEntry(ds, t, s.train, taskDataset(ds, t).task?.kind === 'regression' ? undefined : taskDataset(ds, t).classNames)),
    })),
  );
}
