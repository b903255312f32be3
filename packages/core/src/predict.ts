/**
 * Using a site's model: class probabilities, the predicted class and, for
 * dFLMoE, the gate weight of every expert, for new samples; and accuracy,
 * per-class recall and a confusion matrix for labelled ones (a regression:
 * values and RMSE, MAE, R^2 in the target's units). A multi-task site gives
 * them per task. The same code serves a live learner
 * (`DflmoeLearner.predict`) and a site loaded from its directory
 * (`loadSite`), so both give the same numbers.
 */
import * as tf from '@tensorflow/tfjs-core';
import { applyStandardizer, featureSize, type Standardizer } from '@dflmoe/data';
import type { AlgorithmSite } from './algorithms/api.js';
import { DflmoeSite } from './algorithms/dflmoe-site.js';
import { isMultiTask } from './algorithms/multi-task.js';
import { moeForward } from './model.js';
import { rowsOf } from './train.js';
import { classificationTask, taskKind, type TaskInfo, type TaskKindName, type TaskMetrics } from './tasks/index.js';

/**
 * A model's predictions for some samples: the class, every class's probability
 * and, for dFLMoE, every expert's gate weight, per sample.
 */
export interface Predictions {
  /** Rows predicted. */
  numSamples: number;
  /** The task predicted: its name and kind. */
  task: { name: string; kind: TaskKindName };
  /** Classification: the classes (regression: none). */
  classNames: string[];
  /** Regression: the predicted value per sample, in the target's units (absent for classification). */
  values?: Float32Array;
  /** Predicted class index per sample (the most probable; the first on ties); zeros for regression. */
  predicted: Int32Array;
  /** `numSamples x classNames.length`, row-major; each row sums to 1 (empty for regression). */
  probabilities: Float32Array;
  /**
   * dFLMoE: the experts, own head first (ids as the site knows them; a site
   * loaded from its directory names them as its site.json does); empty for
   * other algorithms.
   */
  experts: string[];
  /** A site loaded from its directory: the experts' peer IDs (`experts` then holds their names). */
  expertIds?: string[];
  /** `numSamples x experts.length`, row-major: the gate's weight of each expert per sample. */
  gateWeights: Float32Array;
}

/** The task's metrics of predictions against known labels; for classification also per-class recall and the confusion matrix. */
export interface Evaluation {
  /** Rows evaluated. */
  samples: number;
  /** Classification: the classes, in the order of `recall` and `confusion` (regression: none). */
  classNames: string[];
  /** The task's metrics (`accuracy`, `balancedAccuracy`, `macroF1`, or `rmse`, `mae`, `r2` in the target's units). */
  metrics: TaskMetrics;
  /** Classification: the share predicted right (NaN for regression). */
  accuracy: number;
  /** Per class: share of its samples predicted as it; null for a class with no samples. */
  recall: (number | null)[];
  /** `confusion[true][predicted]` counts. */
  confusion: number[][];
  /** Per-task evaluation (`evaluateTasks`): rows left out because they lack this task's label (absent elsewhere). */
  skipped?: number;
}

/** Predictions of every task of a site, by task name, in the site's round order (a one-task site: its one task). */
export type TaskPredictions = Record<string, Predictions>;

/** Evaluations of a site's tasks, by task name (each over the rows that carry the task's label). */
export type TaskEvaluations = Record<string, Evaluation>;

/**
 * Probabilities (and gate weights) of `site`'s model for standardized
 * samples `x` `[n, ...sampleShape]`, in chunks of `chunk` samples. A
 * multi-task site's task with `crossTask` read-outs passes `readOut`, which
 * turns the mixture's outputs into the task's (the gate weights stay the
 * mixture's).
 */
export function sitePredictions(
  site: AlgorithmSite,
  x: tf.Tensor,
  classNames: string[],
  chunk = 512,
  task: TaskInfo = classificationTask('label', classNames),
  readOut?: (x: tf.Tensor, own: tf.Tensor2D) => tf.Tensor2D,
): Predictions {
  const kind = taskKind(task);
  const n = x.shape[0];
  const c = kind.probabilities ? classNames.length : 0;
  const peer = site instanceof DflmoeSite ? site.peer : undefined;
  const experts = peer ? peer.experts() : [];
  if (!peer && !site.predict) throw new Error(`site ${site.id} cannot predict`);
  const probabilities = new Float32Array(n * c);
  const gateWeights = new Float32Array(n * experts.length);
  const predicted = new Int32Array(n);
  const values = new Float32Array(kind.probabilities ? 0 : n);
  for (let s = 0; s < n; s += chunk) {
    const m = Math.min(chunk, n - s);
    tf.tidy(() => {
      const xb = rowsOf(x, s, m);
      let probs: tf.Tensor2D;
      if (peer) {
        const out = peer.lora ? peer.loraMixtureOf(xb) : moeForward(peer.features(xb, false), experts, peer.gate, 'auto', kind.activate);
        probs = out.probs;
        gateWeights.set(out.gates.dataSync(), s * experts.length);
      } else probs = site.predict!(xb);
      if (readOut) probs = readOut(xb, probs);
      if (!kind.probabilities) {
        values.set(kind.toUnits(kind.predict(probs).dataSync() as Float32Array, task), s);
        return;
      }
      if (probs.shape[1] !== c) throw new Error(`the model gives ${probs.shape[1]} class probabilities, expected ${c}`);
      probabilities.set(probs.dataSync(), s * c);
      predicted.set(tf.argMax(probs, 1).dataSync() as Int32Array, s);
    });
  }
  return {
    numSamples: n,
    task: { name: task.name, kind: task.kind },
    classNames: [...classNames],
    predicted,
    probabilities,
    ...(kind.probabilities ? {} : { values }),
    experts: experts.map((e) => e.id),
    gateWeights,
  };
}

/** The task's metrics of `p` against the true labels (class indices, or targets in their units); with classes, also recall and confusion. */
export function evaluatePredictions(p: Predictions, labels: ArrayLike<number>): Evaluation {
  if (labels.length !== p.numSamples) throw new Error(`${labels.length} labels for ${p.numSamples} predictions`);
  if (p.values) {
    for (let i = 0; i < labels.length; i++) if (!Number.isFinite(labels[i])) throw new Error(`label ${labels[i]} of sample ${i} is not a finite number`);
    const metrics = taskKind(p.task).metrics(p.values, labels, { ...p.task, classNames: [] });
    return { samples: p.numSamples, classNames: [], metrics, accuracy: NaN, recall: [], confusion: [] };
  }
  const c = p.classNames.length;
  const confusion = Array.from({ length: c }, () => new Array<number>(c).fill(0));
  let ok = 0;
  for (let i = 0; i < p.numSamples; i++) {
    const y = labels[i];
    if (!(Number.isInteger(y) && y >= 0 && y < c)) throw new Error(`label ${y} of sample ${i} is not a class index in [0, ${c})`);
    confusion[y][p.predicted[i]]++;
    if (y === p.predicted[i]) ok++;
  }
  const recall = confusion.map((row, k) => {
    const total = row.reduce((a, b) => a + b, 0);
    return total > 0 ? row[k] / total : null;
  });
  const metrics = taskKind(p.task).metrics(p.predicted, labels, { ...p.task, classNames: p.classNames });
  return { samples: p.numSamples, classNames: [...p.classNames], metrics, accuracy: p.numSamples > 0 ? ok / p.numSamples : NaN, recall, confusion };
}

/** `p` for the rows `rows` only (in that order). */
export function takePredictionRows(p: Predictions, rows: ArrayLike<number>): Predictions {
  const c = p.values ? 0 : p.classNames.length;
  const k = p.experts.length;
  const take = <T extends Float32Array | Int32Array>(a: T, w: number, make: (n: number) => T): T => {
    const out = make(rows.length * w);
    for (let i = 0; i < rows.length; i++) out.set(a.subarray(rows[i] * w, (rows[i] + 1) * w), i * w);
    return out;
  };
  const f32 = (n: number) => new Float32Array(n);
  return {
    ...p,
    numSamples: rows.length,
    predicted: take(p.predicted, 1, (n) => new Int32Array(n)),
    probabilities: take(p.probabilities, c, f32),
    gateWeights: take(p.gateWeights, k, f32),
    ...(p.values ? { values: take(p.values, 1, f32) } : {}),
  };
}

/**
 * `evaluatePredictions` over the rows that carry a label: a class index
 * of -1 (or any negative) or a target of NaN marks a row that lacks the
 * task's label (as training masks it); those rows are left out and
 * counted in `skipped`.
 */
export function evaluateLabelled(p: Predictions, labels: ArrayLike<number>): Evaluation {
  if (labels.length !== p.numSamples) throw new Error(`${labels.length} labels for ${p.numSamples} predictions`);
  const has = (y: number) => (p.values ? !Number.isNaN(y) : !(y < 0));
  const rows: number[] = [];
  for (let i = 0; i < labels.length; i++) if (has(labels[i])) rows.push(i);
  if (rows.length === labels.length) return { ...evaluatePredictions(p, labels), skipped: 0 };
  return {
    ...evaluatePredictions(
      takePredictionRows(p, rows),
      rows.map((i) => labels[i]),
    ),
    skipped: labels.length - rows.length,
  };
}

/**
 * Samples in the dataset's layout: features row-major (a `Float32Array` or
 * any array of numbers), one array per sample, or a tensor `[n, ...sampleShape]`.
 */
export type SampleInput = Float32Array | tf.Tensor | ArrayLike<number> | ArrayLike<number>[];

/** The raw values of `x`, row-major. */
function rawValues(x: SampleInput): Float32Array {
  if (x instanceof Float32Array) return x;
  if (x instanceof tf.Tensor) return Float32Array.from(x.dataSync());
  const rows = Array.from(x as ArrayLike<number | ArrayLike<number>>);
  if (rows.length > 0 && typeof rows[0] !== 'number') return Float32Array.from(rows.flatMap((r) => Array.from(r as ArrayLike<number>)));
  if (rows.some((v) => typeof v !== 'number')) throw new Error('samples must be numbers, or one array of numbers per sample');
  return Float32Array.from(rows as number[]);
}

/** A task a site predicts: the site that does, its classes and, with `crossTask`, its read-out (`MultiTaskSite.taskSites`). */
type TaskPart = { task: TaskInfo; site: AlgorithmSite; classNames: string[]; readOut?: (x: tf.Tensor, own: tf.Tensor2D) => tf.Tensor2D };

/** A site's model with the standardizer and classes it was trained with. */
export class SitePredictor {
  constructor(
    readonly site: AlgorithmSite,
    readonly standardizer: Standardizer,
    readonly sampleShape: number[],
    readonly classNames: string[],
    /** What the model predicts (default: one classification over `classNames`). */
    readonly task: TaskInfo = classificationTask('label', classNames),
  ) {}

  /** Standardize raw samples the way the training data was (same arithmetic, so the same bits). */
  standardize(x: SampleInput): tf.Tensor {
    const d = featureSize(this);
    const raw = rawValues(x);
    if (raw.length % d !== 0) throw new Error(`${raw.length} values are not a whole number of samples of shape ${this.sampleShape.join('x')}`);
    if (x instanceof tf.Tensor && x.shape.slice(1).join() !== this.sampleShape.join()) {
      throw new Error(`samples have shape [${x.shape.slice(1)}], the model reads [${this.sampleShape}]`);
    }
    // A NaN would come out as a confident-looking prediction: missing values are the reader's to fill (readInputs, predictFile).
    const bad = raw.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new Error(
        `sample ${Math.floor(bad / d)}, feature ${bad % d} is ${raw[bad]}: samples must be finite (read a file with predictFile, which fills missing cells as the site was trained)`,
      );
    }
    const n = raw.length / d;
    const rows = Int32Array.from({ length: n }, (_, i) => i);
    return tf.tensor(applyStandardizer(raw, d, rows, this.standardizer), [n, ...this.sampleShape]);
  }

  /** What the model predicts: its one task, or a multi-task site's tasks in round order. */
  get tasks(): TaskInfo[] {
    return this.parts().map((p) => p.task);
  }

  /** Each task with the site that predicts it (a one-task site: the site itself, over its classes). */
  private parts(): TaskPart[] {
    if (isMultiTask(this.site)) return this.site.taskSites().map((p) => ({ ...p, classNames: p.task.classNames }));
    return [{ task: this.task, site: this.site, classNames: this.classNames }];
  }

  /** The task named `name` (none: the only one; a multi-task site needs a name). */
  protected part(name: string | undefined): TaskPart {
    const parts = this.parts();
    const names = parts.map((p) => `"${p.task.name}"`).join(', ');
    if (name === undefined) {
      if (parts.length === 1) return parts[0];
      throw new Error(`this site learns ${parts.length} tasks (${names}): name the task to predict, or predict them all with predictTasks`);
    }
    const p = parts.find((q) => q.task.name === name);
    if (!p) throw new Error(`this site has no task "${name}"; its tasks are ${names}`);
    return p;
  }

  /** Predictions for raw (not standardized) samples: of the site's one task, or of the task named `task` (a multi-task site needs it). */
  predict(x: SampleInput, task?: string): Predictions {
    const part = this.part(task);
    const t = this.standardize(x);
    try {
      return sitePredictions(part.site, t, part.classNames, 512, part.task, part.readOut);
    } finally {
      t.dispose();
    }
  }

  /** Predictions of every task for raw samples, by task name (a one-task site: its one task, as `predict` gives it). */
  predictTasks(x: SampleInput): TaskPredictions {
    const t = this.standardize(x);
    try {
      return Object.fromEntries(this.parts().map((p) => [p.task.name, sitePredictions(p.site, t, p.classNames, 512, p.task, p.readOut)]));
    } finally {
      t.dispose();
    }
  }

  /** Evaluation on raw samples and their class indices (or targets): of the one task, or of the task named `task`. */
  evaluate(x: SampleInput, labels: ArrayLike<number>, task?: string): Evaluation {
    return evaluatePredictions(this.predict(x, task), labels);
  }

  /**
   * Evaluation of each task given labels for, by task name: class indices
   * (-1 where a row lacks the task's label) or targets in their units (NaN
   * where it lacks one). Each task is scored over its labelled rows only
   * (`skipped` counts the others), as training masks missing labels.
   */
  evaluateTasks(x: SampleInput, labels: Readonly<Record<string, ArrayLike<number>>>): TaskEvaluations {
    const names = Object.keys(labels);
    names.forEach((n) => this.part(n));
    if (names.length === 0) throw new Error('evaluateTasks(x, labels): give the labels of at least one task, by task name');
    const all = this.predictTasks(x);
    return Object.fromEntries(this.tasks.filter((t) => names.includes(t.name)).map((t) => [t.name, evaluateLabelled(all[t.name], labels[t.name])]));
  }
}
