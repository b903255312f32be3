/**
 * Classification: a label is one of the task's classes. Heads output one
 * logit per class; the loss is the softmax cross-entropy, experts mix their
 * class probabilities, and a prediction is the most probable class.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TaskKind, TaskMetrics } from './api.js';

/** Accuracy, balanced accuracy (the mean recall over the classes present) and macro F1 (over classes predicted or present). */
export function classificationMetrics(predicted: ArrayLike<number>, labels: ArrayLike<number>): TaskMetrics {
  const n = labels.length;
  if (n === 0) return { accuracy: NaN, balancedAccuracy: NaN, macroF1: NaN };
  const tp = new Map<number, number>();
  const actual = new Map<number, number>();
  const said = new Map<number, number>();
  let ok = 0;
  const bump = (m: Map<number, number>, k: number) => m.set(k, (m.get(k) ?? 0) + 1);
  for (let i = 0; i < n; i++) {
    bump(actual, labels[i]);
    bump(said, predicted[i]);
    if (predicted[i] === labels[i]) {
      ok++;
      bump(tp, labels[i]);
    }
  }
  const recalls = [...actual].map(([c, m]) => (tp.get(c) ?? 0) / m);
  const classes = new Set([...actual.keys(), ...said.keys()]);
  const f1 = [...classes].map((c) => {
    const t = tp.get(c) ?? 0;
    const denom = (actual.get(c) ?? 0) + (said.get(c) ?? 0);
    return denom > 0 ? (2 * t) / denom : 0;
  });
  return {
    accuracy: ok / n,
    balancedAccuracy: recalls.reduce((a, b) => a + b, 0) / recalls.length,
    macroF1: f1.reduce((a, b) => a + b, 0) / f1.length,
  };
}

export const classification: TaskKind = {
  name: 'classification',
  description: 'one of a set of classes: softmax cross-entropy; accuracy, balanced accuracy, macro F1',
  headline: { metric: 'accuracy', higherIsBetter: true },
  metricNames: ['accuracy', 'balancedAccuracy', 'macroF1'],
  shareMetrics: ['accuracy', 'balancedAccuracy', 'macroF1'],
  labelDtype: 'int32',
  probabilities: true,
  toUnits: (values) => values,
  fromDataset: (ds) => ({ name: ds.task?.name ?? ds.schema?.labelColumn ?? 'label', kind: 'classification', classNames: ds.classNames }),
  fitScale: () => undefined,
  labelsOf: (ds, rows) => Int32Array.from(rows, (r) => ds.labels[r]),
  outputDim: (task) => task.classNames.length,
  encode: (labels, task) => tf.cast(tf.oneHot(labels, task.classNames.length), 'float32') as tf.Tensor2D,
  activate: (outputs) => tf.softmax(outputs),
  loss: (logits, targets) => tf.losses.softmaxCrossEntropy(targets, logits) as tf.Scalar,
  mixtureLoss: (probs, targets) => tf.neg(tf.mean(tf.log(tf.add(tf.sum(tf.mul(probs, targets), 1), 1e-7)))) as tf.Scalar,
  distill: (logits, probs) => tf.neg(tf.mean(tf.sum(tf.mul(probs, tf.logSoftmax(logits)), 1))) as tf.Scalar,
  rowScores: (logits, labels) => tf.cast(tf.equal(tf.argMax(logits, 2), tf.expandDims(labels, 1)), 'float32') as tf.Tensor2D,
  predict: (probs) => tf.argMax(probs, 1) as tf.Tensor1D,
  metrics: (predicted, labels) => classificationMetrics(predicted, labels),
};
