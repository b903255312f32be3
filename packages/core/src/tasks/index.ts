/**
 * The task kinds, by name: a new kind is one file in this folder and a line
 * here. See `api.ts` for what a kind provides.
 */
import type { Dataset } from '@dflmoe/data';
import { TASK_KIND_NAMES, type TargetScale, type TaskInfo, type TaskKind, type TaskKindName } from './api.js';
export { metricOf } from './api.js';
import { classification } from './classification.js';
import { regression } from './regression.js';

export type { TargetScale, TaskInfo, TaskKind, TaskKindName, TaskMetrics, TaskResult } from './api.js';
export { classificationMetrics } from './classification.js';
export { fitTargetScale, regressionMetrics } from './regression.js';

const KINDS: Readonly<Record<TaskKindName, TaskKind>> = { classification, regression };

/** Every task kind's name. */
export const TASK_KINDS = TASK_KIND_NAMES;

/** The kind of `task` (or of that name). */
export function taskKind(task: Pick<TaskInfo, 'kind'> | TaskKindName): TaskKind {
  const name = typeof task === 'string' ? task : task.kind;
  const k = (KINDS as Record<string, TaskKind | undefined>)[name];
  if (!k) throw new Error(`unknown task kind "${name}"; choose from ${TASK_KINDS.join(', ')}`);
  return k;
}

/** Whether these are a site's (or a run's) tasks when it learns one classification task (what accuracy columns describe alone, as before tasks had kinds). */
export function oneClassification(tasks: Record<string, { kind: TaskKindName }>): boolean {
  const t = Object.values(tasks);
  return t.length <= 1 && t.every((x) => x.kind === classification.name);
}

/** One classification task over `classNames` (what a site learnt before tasks had kinds). */
export function classificationTask(name: string, classNames: string[]): TaskInfo {
  return { name, kind: classification.name, classNames };
}

/** The task `ds` is labelled for (one classification over its labels when it names none), without a target scale. */
export function datasetTask(ds: Dataset): TaskInfo {
  return taskKind(ds.task?.kind ?? 'classification').fromDataset(ds);
}

/** `datasetTask(ds)` with the scale its labels need, fitted on `rows` (the pooled training rows, in a simulation). */
export function fittedTask(ds: Dataset, rows: ArrayLike<number>): TaskInfo {
  const task = datasetTask(ds);
  const scale = taskKind(task).fitScale(ds, rows);
  return scale ? { ...task, scale } : task;
}

/** `datasetTask(ds)` with the scale `given` (a consortium's pooled one), else fitted on `rows`. */
export function scaledTask(ds: Dataset, rows: ArrayLike<number>, given?: TargetScale): TaskInfo {
  if (!given) return fittedTask(ds, rows);
  const task = datasetTask(ds);
  return taskKind(task).fitScale(ds, rows) ? { ...task, scale: given } : task;
}
