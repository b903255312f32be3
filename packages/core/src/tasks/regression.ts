/**
 * Regression: a label is a number. Targets are standardized with the
 * consortium's pooled mean and standard deviation (`TaskInfo.scale`); heads
 * output one value, the loss is the mean squared error, experts mix their
 * predictions, and metrics are reported in the target's own units.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Dataset } from '@dflmoe/data';
import { DataError } from '@dflmoe/data';
import type { TargetScale, TaskKind, TaskMetrics } from './api.js';

/** A regression dataset's targets (an error for a dataset without them). */
function targetsOf(ds: Dataset): Float32Array {
  if (ds.task?.kind !== 'regression') throw new DataError(`${ds.name}: has no regression target`);
  return ds.task.values;
}

/** Mean and standard deviation of `values` at `rows` (std 1 for a constant target). */
export function fitTargetScale(values: ArrayLike<number>, rows: ArrayLike<number>): TargetScale {
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < rows.length; i++) sum += values[rows[i]];
  const mean = rows.length ? sum / rows.length : 0;
  for (let i = 0; i < rows.length; i++) sq += (values[rows[i]] - mean) ** 2;
  const std = rows.length ? Math.sqrt(sq / rows.length) : 0;
  return { mean, std: std > 1e-12 ? std : 1 };
}

/** RMSE, MAE and R^2 of predictions against labels (both standardized with `scale`), in the target's units. */
export function regressionMetrics(predicted: ArrayLike<number>, labels: ArrayLike<number>, scale: TargetScale = { mean: 0, std: 1 }): TaskMetrics {
  const n = labels.length;
  if (n === 0) return { rmse: NaN, mae: NaN, r2: NaN };
  let se = 0;
  let ae = 0;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = (predicted[i] - labels[i]) * scale.std;
    se += e * e;
    ae += Math.abs(e);
    sum += labels[i];
  }
  const mean = sum / n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += ((labels[i] - mean) * scale.std) ** 2;
  return { rmse: Math.sqrt(se / n), mae: ae / n, r2: ss > 0 ? 1 - se / ss : NaN };
}

export const regression: TaskKind = {
  name: 'regression',
  description: 'a number: mean squared error on the standardized target; RMSE, MAE and R^2 in its own units',
  headline: { metric: 'rmse', higherIsBetter: false },
  metricNames: ['rmse', 'mae', 'r2'],
  shareMetrics: [],
  labelDtype: 'float32',
  probabilities: false,
  toUnits: (values, task) => {
    const { mean, std } = task.scale ?? { mean: 0, std: 1 };
    return Float32Array.from(values, (v) => v * std + mean);
  },
  fromDataset: (ds) => ({ name: ds.task?.name ?? 'target', kind: 'regression', classNames: [] }),
  fitScale: (ds, rows) => fitTargetScale(targetsOf(ds), rows),
  labelsOf: (ds, rows, task) => {
    const v = targetsOf(ds);
    const { mean, std } = task.scale ?? { mean: 0, std: 1 };
    return Float32Array.from(rows, (r) => (v[r] - mean) / std);
  },
  outputDim: () => 1,
  encode: (labels) => tf.reshape(labels, [-1, 1]) as tf.Tensor2D,
  activate: (outputs) => outputs,
  loss: (outputs, targets) => tf.losses.meanSquaredError(targets, outputs) as tf.Scalar,
  mixtureLoss: (mixed, targets) => tf.losses.meanSquaredError(targets, mixed) as tf.Scalar,
  distill: (outputs, mixed) => tf.losses.meanSquaredError(mixed, outputs) as tf.Scalar,
  // exp(-e^2 / 2): 1 for a right prediction, 0.61 one standard deviation off.
  rowScores: (outputs, labels) => tf.exp(tf.mul(-0.5, tf.square(tf.sub(tf.squeeze(outputs, [2]), tf.expandDims(labels, 1))))) as tf.Tensor2D,
  predict: (outputs) => tf.reshape(outputs, [-1]) as tf.Tensor1D,
  metrics: (predicted, labels, task) => regressionMetrics(predicted, labels, task.scale),
};
