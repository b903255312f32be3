/**
 * The two models whose training throughput the backend benchmarks time
 * (bench:backend, bench:threads): a 784-256-128-10 dense net and a small CNN
 * on 28x28 images, trained with Adam on one fixed random batch.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { Rng } from '@dflmoe/data/internal';

export type ModelKind = 'dense' | 'cnn';

/** The layers of `kind` (bench:peer builds the same nets with its own optimizers). */
export function modelLayers(kind: ModelKind): tfl.layers.Layer[] {
  return kind === 'dense'
    ? [
        tfl.layers.dense({ inputShape: [784], units: 256, activation: 'relu' }),
        tfl.layers.dense({ units: 128, activation: 'relu' }),
        tfl.layers.dense({ units: 10, activation: 'softmax' }),
      ]
    : [
        tfl.layers.conv2d({ inputShape: [28, 28, 1], filters: 16, kernelSize: 3, activation: 'relu', padding: 'same' }),
        tfl.layers.maxPooling2d({ poolSize: 2 }),
        tfl.layers.conv2d({ filters: 32, kernelSize: 3, activation: 'relu', padding: 'same' }),
        tfl.layers.maxPooling2d({ poolSize: 2 }),
        tfl.layers.flatten(),
        tfl.layers.dense({ units: 10, activation: 'softmax' }),
      ];
}

export function build(kind: ModelKind): tfl.LayersModel {
  const m = tfl.sequential({ layers: modelLayers(kind) });
  m.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
  return m;
}

/** What `measure` found: samples per second, the steps timed, and a checksum of the weights after them. */
export interface Throughput {
  samplesPerSec: number;
  steps: number;
  seconds: number;
  /** Sum of every weight after two warm-up steps and `fixedSteps` more (the same number whatever the speed): equal sums say the same arithmetic. */
  checksum?: number;
}

/** Samples per second of `trainOnBatch` after two warm-up steps, within `budgetMs` (at most 2000 steps); `fixedSteps` for a checksum instead. */
export async function measure(kind: ModelKind, batch: number, budgetMs: number, fixedSteps?: number): Promise<Throughput> {
  const rng = new Rng(1);
  const shape = kind === 'dense' ? [batch, 784] : [batch, 28, 28, 1];
  const n = shape.reduce((a, b) => a * b, 1);
  const x = tf.tensor(
    Float32Array.from({ length: n }, () => rng.uniform()),
    shape,
  );
  const y = tf.oneHot(
    tf.tensor1d(
      Int32Array.from({ length: batch }, () => rng.int(10)),
      'int32',
    ),
    10,
  );
  // Seeded weights, so that two processes start from the same model.
  const model = build(kind);
  model.setWeights(
    model.getWeights().map((w) =>
      tf.tensor(
        Float32Array.from({ length: w.size }, () => (rng.uniform() - 0.5) * 0.1),
        w.shape,
      ),
    ),
  );
  for (let i = 0; i < 2; i++) await model.trainOnBatch(x, y);
  let steps = 0;
  const t0 = performance.now();
  while (fixedSteps !== undefined ? steps < fixedSteps : performance.now() - t0 < budgetMs && steps < 2000) {
    await model.trainOnBatch(x, y);
    steps++;
  }
  const seconds = (performance.now() - t0) / 1000;
  const checksum = fixedSteps !== undefined ? model.getWeights().reduce((a, w) => a + tf.sum(w).dataSync()[0], 0) : undefined;
  model.dispose();
  x.dispose();
  y.dispose();
  return { samplesPerSec: (steps * batch) / seconds, steps, seconds, checksum };
}
