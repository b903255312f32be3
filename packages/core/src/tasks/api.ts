/**
 * What a site learns: a task. A task kind (one file beside this one) knows
 * how its labels become training targets, how many outputs a head has, its
 * loss, how the outputs of several heads mix (dFLMoE), what a prediction is
 * and which metrics measure it. Everything outside `tasks/` asks the kind;
 * nothing else branches on what kind a task is.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { Dataset } from '@dflmoe/data';

/** The kinds of task: `classification` (one of a set of classes) and `regression` (a number). */
export type TaskKindName = (typeof TASK_KIND_NAMES)[number];
/** Every kind's name, in the order help and errors list them (each kind is a file beside this one, listed in `index.ts`). */
export const TASK_KIND_NAMES = ['classification', 'regression'] as const;

/** A regression target's standardization: training targets are `(y - mean) / std`, predictions are mapped back. */
export interface TargetScale {
  /** The target's pooled mean, in its own units. */
  mean: number;
  /** The target's pooled standard deviation, in its own units. */
  std: number;
}

/** One task as a site trains it: its name (the same across the consortium), kind, classes or target scale. */
export interface TaskInfo {
  /** The task's name: sites that share it learn the same thing (a label column's name, `label` for built-in data). */
  name: string;
  /** Whether the task is a classification or a regression. */
  kind: TaskKindName;
  /** Classification: the class names (a label's index is its position). Regression: empty. */
  classNames: string[];
  /** Regression: the pooled standardization of the target (identity when absent). */
  scale?: TargetScale;
}

/**
 * A task's metrics on some rows, in the target's own units: `accuracy`,
 * `balancedAccuracy`, `macroF1` for classification; `rmse`, `mae`, `r2`
 * for regression.
 */
export type TaskMetrics = Record<string, number>;

/** A task's metrics on a site's test rows, as round records and results.json report them: its kind, test rows and each metric. */
export interface TaskResult {
  /** The task's kind. */
  kind: TaskKindName;
  /** Test rows the metrics were computed on. */
  testRows: number;
  /** The metrics (`TaskKind.metricNames`): read them with `metricOf`. */
  [metric: string]: number | string;
}

/** A metric of a task result (NaN when absent). */
export function metricOf(r: TaskResult, metric: string): number {
  const v = r[metric];
  return typeof v === 'number' ? v : NaN;
}

/**
 * A kind of task. Heads output `outputDim` values per row ("outputs");
 * `activate` maps them to the space where experts mix (class probabilities,
 * or the prediction itself), and a mixture is a gate-weighted sum there.
 */
export interface TaskKind {
  /** The kind's name (`classification`, `regression`). */
  readonly name: TaskKindName;
  /** One line for docs and help. */
  readonly description: string;
  /** The metric a table shows first, and whether higher is better. */
  readonly headline: { metric: string; higherIsBetter: boolean };
  /** The metrics `metrics` returns, headline first. */
  readonly metricNames: readonly string[];
  /** Of those, the shares of rows (in [0, 1]; tables show them as percentages). */
  readonly shareMetrics: readonly string[];
  /** The dtype of a label tensor (`int32` class indexes, `float32` standardized targets). */
  readonly labelDtype: 'int32' | 'float32';
  /** A dataset's task of this kind (without a target scale). */
  fromDataset(ds: Dataset): TaskInfo;
  /** Statistics of the task's labels over `rows` that training needs (a regression target's scale); undefined when none. */
  fitScale(ds: Dataset, rows: ArrayLike<number>): TargetScale | undefined;
  /** The labels of `rows` in the label tensor's units (class indexes; targets standardized with `task.scale`). */
  labelsOf(ds: Dataset, rows: ArrayLike<number>, task: TaskInfo): Int32Array | Float32Array;
  /** Outputs per row of a head for `task`. */
  outputDim(task: TaskInfo): number;
  /** A batch of labels `[B]` as training targets `[B, outputDim]`. */
  encode(labels: tf.Tensor1D, task: TaskInfo): tf.Tensor2D;
  /** One head's outputs to the mixing space (along the last axis; any rank). */
  activate(outputs: tf.Tensor): tf.Tensor;
  /** The loss of one head's raw outputs `[B, outputDim]` against targets. */
  loss(outputs: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar;
  /** The loss of a mixture (a gate-weighted sum of activated outputs) against targets. */
  mixtureLoss(mixed: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar;
  /** Distillation: the loss that pulls one head's raw outputs towards a (fixed) mixture. */
  distill(outputs: tf.Tensor2D, mixed: tf.Tensor2D): tf.Scalar;
  /**
   * How well each of K experts does on each row, in [0, 1] (1: right):
   * `outputs` `[B, K, outputDim]` raw, `labels` `[B]`. A bounded mixture
   * scores its experts with the mean.
   */
  rowScores(outputs: tf.Tensor3D, labels: tf.Tensor1D): tf.Tensor2D;
  /** Predictions `[B]` from activated (or mixed) outputs `[B, outputDim]`, in the label tensor's units. */
  predict(activated: tf.Tensor2D): tf.Tensor1D;
  /** Whether the activated outputs are class probabilities (one per class), which predictions report; else each row's prediction is one value. */
  readonly probabilities: boolean;
  /** Values in the label tensor's units (class indexes, standardized targets) in the task's own units (class indexes, the target's units). */
  toUnits(values: Float32Array, task: TaskInfo): Float32Array;
  /** Metrics of predictions against labels (both in the label tensor's units), reported in the target's own units. */
  metrics(predicted: ArrayLike<number>, labels: ArrayLike<number>, task: TaskInfo): TaskMetrics;
}
