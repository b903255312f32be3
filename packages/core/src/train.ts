/** Local training and evaluation helpers shared by every algorithm. */
import * as tf from '@tensorflow/tfjs-core';
import { FusedAdam } from './fused-adam.js';
import { poissonSample, secureGaussian } from './privacy.js';
import { applyStandardizer, featureSize, fitStandardizer, labelledRows, taskDataset, type Dataset, type PeerSplit, type Standardizer } from '@dflmoe/data';
import { Rng, deriveSeed, labelHistogram } from '@dflmoe/data/internal';
import { fittedTask, taskKind, type TaskInfo, type TaskMetrics } from './tasks/index.js';

/** `adam` (default), `sgd` (plain) or `momentum` (SGD with momentum 0.9). */
export type OptimizerKind = 'adam' | 'sgd' | 'momentum';
/** Every `OptimizerKind`. */
export const OPTIMIZERS: readonly OptimizerKind[] = ['adam', 'sgd', 'momentum'];

/** Local training: epochs per round, batch size, learning rate, optimiser, seed, and optional differential privacy. */
export interface TrainOptions {
  /** Local epochs per round (default 1). */
  epochs: number;
  /** Rows per training batch (default 32). */
  batchSize: number;
  /** The optimiser's learning rate (default 1e-3). */
  learningRate: number;
  /** The local optimiser, shared by every algorithm (default `adam`). */
  optimizer: OptimizerKind;
  /** Seed of each epoch's shuffle, and of the initial model where no `initSeed` is given (default 0); DP-SGD's sampling and noise are not seeded. */
  seed: number;
  /** Differentially private training (DP-SGD); off when absent. */
  dp?: DpOptions;
  /**
   * Give the event loop a turn once this many milliseconds of training have
   * passed since the last one (checked after every batch; 0: after every
   * batch), so that a site keeps answering head requests, gossip and pings
   * while it trains (default 10).
   */
  yieldMs?: number;
  /** Stop training at the next batch boundary: `trainEpochs` rejects with an `AbortError`. */
  signal?: AbortSignal;
  /** DP only: draws each step's batch (default `poissonSample`; tests wrap it). */
  sampler?: (n: number, q: number) => Int32Array;
}

/**
 * DP-SGD (Abadi et al., 2016): each step's batch is drawn by Poisson
 * sampling (every training example independently with probability
 * q = batchSize / n, `ceil(n / batchSize)` steps per epoch: what the Renyi
 * accountant assumes), each microbatch's gradient is clipped to `clipNorm`
 * (L2, over all trained parameters), the clipped gradients are summed,
 * Gaussian noise of std `noiseMultiplier * clipNorm` is added, and the sum
 * is divided by the expected number of microbatches. Sampling and noise come
 * from node:crypto, not from the seeded generator, so DP training is not
 * reproducible. With microbatches of one example this is per-example
 * clipping; larger microbatches trade utility for speed (the noise is
 * calibrated to one microbatch).
 */
export interface DpOptions {
  /** Each microbatch's gradient is clipped to this L2 norm before noise is added. */
  clipNorm: number;
  /** Standard deviation of the Gaussian noise added to the summed gradients, as a multiple of `clipNorm`. */
  noiseMultiplier: number;
  /** Microbatches per batch (default: the batch size, i.e. per-example clipping). */
  microbatches?: number;
  /** delta used when reporting epsilon (default 1e-5). */
  delta?: number;
}

/** The training settings used where none are given. */
export const DEFAULT_TRAIN: TrainOptions = { epochs: 1, batchSize: 32, learningRate: 1e-3, optimizer: 'adam', seed: 0 };
export const DEFAULT_YIELD_MS = 10;

/** One turn of the event loop: pending I/O (head requests, gossip, pings) runs before this resolves. */
export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A fresh optimiser of the configured kind, at `learningRate * lrScale`. */
export function createOptimizer(o: Pick<TrainOptions, 'optimizer' | 'learningRate'>, lrScale = 1): tf.Optimizer {
  const lr = o.learningRate * lrScale;
  switch (o.optimizer ?? 'adam') {
    case 'adam':
      return new FusedAdam(lr);
    case 'sgd':
      return tf.train.sgd(lr);
    case 'momentum':
      return tf.train.momentum(lr, 0.9);
    default:
      throw new Error(`unknown optimizer "${String(o.optimizer)}"; choose from ${OPTIMIZERS.join(', ')}`);
  }
}

/** One peer's data as tensors, standardized with training-data statistics. */
export interface PeerData {
  xTrain: tf.Tensor;
  yTrain: tf.Tensor1D;
  xTest: tf.Tensor;
  yTest: tf.Tensor1D;
  sampleShape: number[];
  /** What the site learns: `yTrain`/`yTest` are its labels in the label tensor's units (class indexes, standardized targets). */
  task: TaskInfo;
  trainSamples: number;
  testSamples: number;
  trainHistogram: number[];
  /** A multi-task site: each task's data (the rows that carry its label); the fields above are then its first task's, but for the row counts (rows with any label). */
  tasks?: PeerData[];
}

/** A multi-task site's data: each task's, over the rows that carry its label, and the site's rows (those with any label). */
export interface SiteTasks {
  /** Each task's data. */
  tasks: PeerData[];
  /** Training rows that carry a label of some task. */
  trainSamples: number;
  /** Test rows that carry a label of some task. */
  testSamples: number;
}

/** A multi-task site's data as one `PeerData`: its first task's fields, its rows (those with any label) and every task's data in `tasks`. */
export function siteTasksData(s: SiteTasks): PeerData {
  return { ...s.tasks[0], trainSamples: s.trainSamples, testSamples: s.testSamples, tasks: s.tasks };
}

/**
 * A multi-task site's tensors: for each of `tasks` (by name, each a task of
 * the multi-task `ds`, with its scale), the site's rows that carry its label
 * (`preparePeerData` over `taskDataset(ds, name)`).
 */
export function prepareSiteTasks(ds: Dataset, split: PeerSplit, st: Standardizer | undefined, tasks: TaskInfo[]): SiteTasks {
  const out: PeerData[] = [];
  const train = new Set<number>();
  const test = new Set<number>();
  try {
    for (const task of tasks) {
      const view = taskDataset(ds, task.name);
      const rows = { train: labelledRows(view, split.train), test: labelledRows(view, split.test) };
      rows.train.forEach((r) => train.add(r));
      rows.test.forEach((r) => test.add(r));
      out.push(preparePeerData(view, rows, st ?? fitStandardizer(ds.features, featureSize(ds), split.train), task));
    }
  } catch (e) {
    out.forEach(disposePeerData);
    throw e;
  }
  return { tasks: out, trainSamples: train.size, testSamples: test.size };
}

/**
 * Build a peer's tensors. `st` defaults to statistics of the peer's own
 * training split; simulations pass statistics pooled over every peer's
 * training split (what a consortium gets from one exchange of per-feature
 * sums), because per-site standardization removes exactly the shifts in
 * feature means that label skew creates, and makes heads and models of
 * different sites read inputs on different scales.
 */
export function preparePeerData(ds: Dataset, split: PeerSplit, st?: Standardizer, task: TaskInfo = fittedTask(ds, split.train)): PeerData {
  const d = featureSize(ds);
  st ??= fitStandardizer(ds.features, d, split.train);
  const kind = taskKind(task);
  const mk = (rows: Int32Array) =>
    tf.tidy(() => ({
      x: tf.tensor(applyStandardizer(ds.features, d, rows, st), [rows.length, ...ds.sampleShape]),
      y: tf.tensor1d(kind.labelsOf(ds, rows, task), kind.labelDtype),
    }));
  const tr = mk(split.train);
  const te = mk(split.test);
  return {
    xTrain: tr.x,
    yTrain: tr.y,
    xTest: te.x,
    yTest: te.y,
    sampleShape: ds.sampleShape,
    task,
    trainSamples: split.train.length,
    testSamples: split.test.length,
    trainHistogram: labelHistogram(ds.labels, split.train, ds.classNames.length),
  };
}

/**
 * `preparePeerData` for a dataset that is the caller's to consume (a site
 * process's own rows, train rows first): standardizes the rows in place and
 * hands the backend views of them rather than copies, so that the site holds
 * its rows once. The same values as `preparePeerData`; `ds.features` is
 * standardized afterwards. Other row orders fall back to `preparePeerData`.
 */
export function takePeerData(ds: Dataset, split: PeerSplit, st: Standardizer, task: TaskInfo = fittedTask(ds, split.train)): PeerData {
  const nTrain = split.train.length;
  const n = nTrain + split.test.length;
  const inOrder = (rows: Int32Array, start: number) => rows.every((r, i) => r === start + i);
  if (!inOrder(split.train, 0) || !inOrder(split.test, nTrain)) return preparePeerData(ds, split, st, task);
  const kind = taskKind(task);
  const d = featureSize(ds);
  applyStandardizer(
    ds.features,
    d,
    Int32Array.from({ length: n }, (_, i) => i),
    st,
    ds.features,
  );
  const x = (a: number, b: number) => tf.tensor(ds.features.subarray(a * d, b * d), [b - a, ...ds.sampleShape]);
  const y = (a: number, b: number) =>
    tf.tensor1d(
      kind.labelsOf(
        ds,
        Int32Array.from({ length: b - a }, (_, i) => a + i),
        task,
      ),
      kind.labelDtype,
    );
  return {
    xTrain: x(0, nTrain),
    yTrain: y(0, nTrain),
    xTest: x(nTrain, n),
    yTest: y(nTrain, n),
    sampleShape: ds.sampleShape,
    task,
    trainSamples: nTrain,
    testSamples: split.test.length,
    trainHistogram: labelHistogram(ds.labels, split.train, ds.classNames.length),
  };
}

export function disposePeerData(p: PeerData): void {
  if (p.tasks) p.tasks.forEach(disposePeerData);
  else tf.dispose([p.xTrain, p.yTrain, p.xTest, p.yTest]);
}

/**
 * Variables updated by one optimizer. tfjs optimizers keep their state by
 * position in the variable list, so each group must always list the same
 * variables in the same order; parts that come and go (one per expert) get
 * groups of their own. Groups may share an optimizer (a `KeyedAdam` that
 * keeps state per group): it is then called once per step with all of them.
 */
export interface ParamGroup {
  optimizer: tf.Optimizer;
  vars: tf.Variable[];
}

/**
 * Run `epochs` passes over the training data in seeded random order,
 * minimising `loss(xBatch, targets)` (the task kind's encoding of the labels: one-hot classes, standardized targets) over the variables of `groups()`.
 * Resolves to the mean loss. Each batch runs synchronously; between batches
 * the event loop gets a turn every `opts.yieldMs` (see `TrainOptions`), so
 * that the site's network side stays responsive during long epochs.
 */
export async function trainEpochs(
  data: PeerData,
  opts: TrainOptions,
  round: number,
  groups: () => ParamGroup[],
  loss: (x: tf.Tensor, y: tf.Tensor2D) => tf.Scalar,
): Promise<number> {
  const n = data.trainSamples;
  const yieldMs = opts.yieldMs ?? DEFAULT_YIELD_MS;
  let total = 0;
  let batches = 0;
  let lastYield = performance.now();
  const dp = opts.dp;
  // DP: Poisson-sampled batches, as the accountant assumes; the expected number of clipped units per step.
  const q = Math.min(1, opts.batchSize / n);
  const expected = Math.min(dp?.microbatches ?? opts.batchSize, opts.batchSize);
  const sample = opts.sampler ?? poissonSample;
  const kind = taskKind(data.task);
  for (let e = 0; e < opts.epochs; e++) {
    const order = dp ? undefined : (new Rng(deriveSeed(opts.seed, 'epoch', round, e)).shuffle(Int32Array.from({ length: n }, (_, i) => i)) as Int32Array);
    const gs = groups();
    const varList = gs.flatMap((g) => g.vars);
    // Groups that share an optimizer are updated in one call (a KeyedAdam batches its keys).
    const updates = new Map<tf.Optimizer, tf.Variable[]>();
    for (const g of gs) updates.set(g.optimizer, [...(updates.get(g.optimizer) ?? []), ...g.vars]);
    for (let s = 0; s < n; s += opts.batchSize) {
      opts.signal?.throwIfAborted();
      const idx = order ? order.subarray(s, Math.min(n, s + opts.batchSize)) : sample(n, q);
      const cost = tf.tidy(() => {
        const it = tf.tensor1d(idx, 'int32');
        const xb = tf.gather(data.xTrain, it);
        const yb = kind.encode(tf.gather(data.yTrain, it) as tf.Tensor1D, data.task);
        const { value, grads } = dp ? dpGradients(xb, yb, varList, loss, dp, expected) : tf.variableGrads(() => loss(xb, yb), varList);
        for (const [optimizer, vars] of updates) optimizer.applyGradients(vars.map((v) => ({ name: v.name, tensor: grads[v.name] })));
        return value;
      });
      if (cost) {
        // An empty Poisson batch moved the model by noise alone: it has no loss to report.
        if (idx.length > 0) {
          total += cost.dataSync()[0];
          batches++;
        }
        cost.dispose();
      }
      if (performance.now() - lastYield >= yieldMs) {
        await yieldToEventLoop();
        lastYield = performance.now();
      }
    }
  }
  opts.signal?.throwIfAborted();
  return batches ? total / batches : NaN;
}

/** A tensor of `shape` filled with N(0, std^2) draws from node:crypto. */
function secureNoise(shape: number[], std: number): tf.Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  const z = secureGaussian(size);
  for (let i = 0; i < size; i++) z[i] *= std;
  return tf.tensor(z, shape);
}

/**
 * Clipped, noised gradients of one batch (see `DpOptions`), divided by
 * `expected` units. An empty batch (Poisson sampling allows it) gives noise
 * alone. Runs inside the caller's tidy.
 */
function dpGradients(
  xb: tf.Tensor,
  yb: tf.Tensor2D,
  vars: tf.Variable[],
  loss: (x: tf.Tensor, y: tf.Tensor2D) => tf.Scalar,
  dp: DpOptions,
  expected: number,
): { value: tf.Scalar; grads: tf.NamedTensorMap } {
  const n = xb.shape[0];
  const m = Math.min(n, Math.max(1, dp.microbatches ?? n));
  const sums = new Map<string, tf.Tensor>();
  let total = tf.scalar(0);
  for (let k = 0; k < m; k++) {
    const start = Math.floor((k * n) / m);
    const size = Math.floor(((k + 1) * n) / m) - start;
    const { value, grads } = tf.variableGrads(() => loss(tf.slice(xb, start, size), tf.slice(yb, start, size)), vars);
    const norm = tf.sqrt(tf.addN(vars.map((v) => tf.sum(tf.square(grads[v.name])))));
    const scale = tf.minimum(1, tf.div(dp.clipNorm, tf.add(norm, 1e-12)));
    for (const v of vars) {
      const g = tf.mul(grads[v.name], scale);
      sums.set(v.name, sums.has(v.name) ? tf.add(sums.get(v.name)!, g) : g);
    }
    total = tf.add(total, tf.mul(value, size / n));
  }
  const std = dp.noiseMultiplier * dp.clipNorm;
  const grads: tf.NamedTensorMap = {};
  for (const v of vars) {
    const noise = secureNoise(v.shape, std);
    grads[v.name] = tf.div(sums.has(v.name) ? tf.add(sums.get(v.name)!, noise) : noise, Math.max(1, expected));
  }
  return { value: total as tf.Scalar, grads };
}

/**
 * Rows `[start, start + count)` of `x`. A gather, not `tf.slice`: the wasm
 * backend's slice first copies its whole input into JavaScript (a full copy
 * of the test split for every chunk evaluated); gather runs in the backend.
 */
export function rowsOf(x: tf.Tensor, start: number, count: number): tf.Tensor {
  return tf.tidy(() => tf.gather(x, tf.range(start, start + count, 1, 'int32')));
}

/**
 * Apply `outputs` (a head's raw or activated outputs, or a mixture) to `x`
 * in chunks and return each row's prediction in the label tensor's units
 * (the most probable class, the standardized value).
 */
export function predictLabels(x: tf.Tensor, task: TaskInfo, outputs: (xb: tf.Tensor) => tf.Tensor2D, chunk = 512): Float32Array {
  const kind = taskKind(task);
  const n = x.shape[0];
  const out = new Float32Array(n);
  for (let s = 0; s < n; s += chunk) {
    const p = tf.tidy(() => kind.predict(outputs(rowsOf(x, s, Math.min(chunk, n - s)))).dataSync());
    out.set(p, s);
  }
  return out;
}

/** The task's metrics of `outputs` on the rows `x` with labels `y` (see `predictLabels`). */
export function evaluateTask(task: TaskInfo, x: tf.Tensor, y: tf.Tensor1D, outputs: (xb: tf.Tensor) => tf.Tensor2D): TaskMetrics {
  return taskKind(task).metrics(predictLabels(x, task, outputs), y.dataSync(), task);
}
