/**
 * Experts across tasks (dFLMoE's `crossTask`): a multi-task consortium's
 * sites publish every task's head each round, and each task of a site also
 * reads the heads of *other* tasks (the members' and its own) through a
 * learned map from their outputs to its own: the other tasks' scores read
 * as features (a digit classifier's class probabilities make "digit >= 5" a
 * linear read-out). The task's output averages its dFLMoE mixture and that
 * read-out with a fixed weight (`crossTaskWeight`).
 *
 * Why not a learned gate (M3OE's task-aware gate)? Trained on the rows the
 * task's own mixture fits, a gate learns to trust that mixture whatever the
 * other tasks know (measured: 98-100% weight on it, with or without task
 * embeddings), and holding rows out for the gate costs the own heads their
 * data (a quarter of 30 rows: -6 points on the digit task). The read-out has
 * a few weights per expert and barely overfits; its weight is a setting.
 */
import * as tf from '@tensorflow/tfjs-core';
import { Rng, deriveSeed } from '@dflmoe/data/internal';
import { CodecError, decodeBundle, encodeBundle, type DecodeLimits, type NamedArray } from '../codec.js';
import { headLogits, newVariable, type DenseLayer } from '../model.js';
import { TASK_KINDS, taskKind, type TaskInfo, type TaskKind, type TaskKindName } from '../tasks/index.js';

/** A head of some task, frozen: the task it predicts, and its layers. */
export interface TaskHead {
  /** Who holds it: `<site>/<task>`. */
  id: string;
  /** The task's name. */
  task: string;
  /** The task's kind (how its outputs are activated). */
  kind: TaskKindName;
  /** Its dense layers (`[in, out]` kernels), constants. */
  layers: DenseLayer[];
}

/** The heads of a site's tasks as one message (`heads` bundle): per task its name, kind and layer count. */
export function encodeTaskHeads(site: string, round: number, heads: { task: TaskInfo; layers: DenseLayer[] }[]): Uint8Array {
  const tensors: NamedArray[] = [];
  for (const h of heads) {
    h.layers.forEach((l, i) => {
      tensors.push({ name: `${h.task.name}/${i}/kernel`, shape: l.kernel.shape, data: Float32Array.from(l.kernel.dataSync()) });
      tensors.push({ name: `${h.task.name}/${i}/bias`, shape: l.bias.shape, data: Float32Array.from(l.bias.dataSync()) });
    });
  }
  return encodeBundle('heads', { site, round, tasks: heads.map((h) => ({ name: h.task.name, kind: h.task.kind, layers: h.layers.length })) }, tensors);
}

/**
 * Decode another site's task heads (untrusted): every task named once,
 * a known kind, layers chained from `featureDim` with finite weights, at most
 * `maxOutputs` outputs. Throws a CodecError. The caller disposes the layers.
 */
export function decodeTaskHeads(
  buf: Uint8Array,
  from: string,
  featureDim: number,
  limits: DecodeLimits,
  maxOutputs = 1024,
): { round: number; heads: TaskHead[] } {
  const b = decodeBundle(buf, limits);
  if (b.kind !== 'heads') throw new CodecError('kind', `expected task heads, got a ${b.kind}`);
  const round = b.meta.round;
  const tasks = b.meta.tasks;
  if (!Number.isSafeInteger(round) || (round as number) < 0) throw new CodecError('header', 'task heads without a round');
  if (!Array.isArray(tasks) || tasks.length === 0 || tasks.length > 64) throw new CodecError('header', 'task heads must name 1 to 64 tasks');
  const byName = new Map(b.tensors.map((t) => [t.name, t]));
  const seen = new Set<string>();
  const out: { task: string; kind: TaskKindName; arrays: { kernel: NamedArray; bias: NamedArray }[] }[] = [];
  for (const t of tasks as unknown[]) {
    const { name, kind, layers } = (t ?? {}) as Record<string, unknown>;
    if (typeof name !== 'string' || name.length === 0 || name.length > 100 || seen.has(name))
      throw new CodecError('header', 'a task head needs a unique name of 1 to 100 characters');
    if (!TASK_KINDS.includes(kind as TaskKindName)) throw new CodecError('header', `task "${name}": unknown kind`);
    if (!Number.isInteger(layers) || (layers as number) < 1 || (layers as number) > 8) throw new CodecError('header', `task "${name}": 1 to 8 layers`);
    seen.add(name);
    let width = featureDim;
    const arrays = Array.from({ length: layers as number }, (_, i) => {
      const kernel = byName.get(`${name}/${i}/kernel`);
      const bias = byName.get(`${name}/${i}/bias`);
      if (!kernel || !bias) throw new CodecError('shape', `task "${name}": layer ${i} missing`);
      const [inDim, outDim] = kernel.shape;
      if (kernel.shape.length !== 2 || inDim !== width || !(outDim >= 1 && outDim <= maxOutputs) || bias.shape.join() !== String(outDim)) {
        throw new CodecError('shape', `task "${name}": layer ${i} has kernel [${kernel.shape}] and bias [${bias.shape}], expected [${width}, n] and [n]`);
      }
      if (!kernel.data.every(Number.isFinite) || !bias.data.every(Number.isFinite)) throw new CodecError('nonfinite', `task "${name}": weights not finite`);
      width = outDim;
      return { kernel, bias };
    });
    out.push({ task: name, kind: kind as TaskKindName, arrays });
  }
  if (b.tensors.length !== out.reduce((a, h) => a + 2 * h.arrays.length, 0)) throw new CodecError('shape', 'task heads carry tensors no task names');
  return {
    round: round as number,
    heads: out.map((h) => ({
      id: `${from}/${h.task}`,
      task: h.task,
      kind: h.kind,
      layers: h.arrays.map((a) => ({ kernel: tf.tensor(a.kernel.data, a.kernel.shape), bias: tf.tensor(a.bias.data, a.bias.shape) })),
    })),
  };
}

/** A head's activated outputs (class probabilities, a prediction) for features `z`. */
function headOutputs(h: TaskHead, z: tf.Tensor2D): tf.Tensor2D {
  return taskKind(h.kind).activate(headLogits(h.layers, z)) as tf.Tensor2D;
}

/** Settings of a task's cross-task read-out. */
export interface CrossTaskOptions {
  /** The read-out's share of the task's output (the rest is the task's own dFLMoE mixture). */
  weight: number;
  /** The site's learning rate (the read-out trains at `READOUT_LR_SCALE` times it). */
  learningRate: number;
  /** Rows per batch. */
  batchSize: number;
  /** Seed of each round's shuffle. */
  seed: number;
}

/** The read-out is a logistic (or linear) regression on a few dozen inputs: it trains faster than the heads... */
export const READOUT_LR_SCALE = 10;
/** ...with this many passes over the task's rows per round. */
export const READOUT_EPOCHS = 10;

/**
 * One task's read-out of the other tasks' heads: `act(sum_j a_j(z) W_j +
 * b_j)`, with `a_j` the activated outputs of another task's head (class
 * probabilities, a prediction) and `W_j, b_j` its learned map to this
 * task's outputs; the task's output is `(1 - weight) * own + weight *
 * read-out`, `own` being its dFLMoE mixture.
 */
export class CrossTaskReadOut {
  private readonly kind: TaskKind;
  private readonly maps = new Map<string, DenseLayer<tf.Variable>>();
  private readonly outputDim: number;

  constructor(
    readonly task: TaskInfo,
    private readonly o: CrossTaskOptions,
  ) {
    this.kind = taskKind(task);
    this.outputDim = this.kind.outputDim(task);
  }

  /** The map of each expert, made (zero) the first time it is seen and kept while it is away. */
  private ensure(experts: TaskHead[]): void {
    for (const e of experts) {
      if (this.maps.has(e.id)) continue;
      const inDim = e.layers.at(-1)!.kernel.shape[1]!;
      this.maps.set(e.id, { kernel: newVariable(() => tf.zeros([inDim, this.outputDim])), bias: newVariable(() => tf.zeros([this.outputDim])) });
    }
  }

  /** The read-out's activated outputs from the experts' activated outputs. */
  private readOut(outs: tf.Tensor2D[], experts: TaskHead[]): tf.Tensor2D {
    const logits = tf.addN(
      experts.map((e, j) => {
        const m = this.maps.get(e.id)!;
        return tf.add(tf.matMul(outs[j], m.kernel as tf.Tensor2D), m.bias) as tf.Tensor2D;
      }),
    );
    return this.kind.activate(logits) as tf.Tensor2D;
  }

  /** The task's output for features `z`, given its own mixture `own` (activated); `own` alone without experts. */
  predict(z: tf.Tensor2D, own: tf.Tensor2D, experts: TaskHead[]): tf.Tensor2D {
    if (experts.length === 0) return tf.clone(own);
    this.ensure(experts);
    return tf.tidy(
      () =>
        tf.add(
          tf.mul(1 - this.o.weight, own),
          tf.mul(
            this.o.weight,
            this.readOut(
              experts.map((e) => headOutputs(e, z)),
              experts,
            ),
          ),
        ) as tf.Tensor2D,
    );
  }

  /** Train the maps on the task's rows (features `z`, labels `y` in the label tensor's units); the mean loss (NaN without experts). */
  train(z: tf.Tensor2D, y: tf.Tensor1D, experts: TaskHead[], round: number): number {
    if (experts.length === 0) return NaN;
    this.ensure(experts);
    const outs = tf.tidy(() => experts.map((e) => headOutputs(e, z)));
    const targets = this.kind.encode(y, this.task);
    const vars = experts.flatMap((e) => [this.maps.get(e.id)!.kernel, this.maps.get(e.id)!.bias]);
    const adam = tf.train.adam(this.o.learningRate * READOUT_LR_SCALE);
    const n = z.shape[0];
    let total = 0;
    let batches = 0;
    try {
      for (let e = 0; e < READOUT_EPOCHS; e++) {
        const order = new Rng(deriveSeed(this.o.seed, 'cross', round, e)).shuffle(Int32Array.from({ length: n }, (_, i) => i)) as Int32Array;
        for (let s = 0; s < n; s += this.o.batchSize) {
          const cost = tf.tidy(() => {
            const idx = tf.tensor1d(order.subarray(s, Math.min(n, s + this.o.batchSize)), 'int32');
            const batch = outs.map((t) => tf.gather(t, idx) as tf.Tensor2D);
            const yb = tf.gather(targets, idx) as tf.Tensor2D;
            const { value, grads } = tf.variableGrads(() => this.kind.mixtureLoss(this.readOut(batch, experts), yb), vars);
            adam.applyGradients(vars.map((v) => ({ name: v.name, tensor: grads[v.name] })));
            return value;
          });
          total += cost.dataSync()[0];
          batches++;
          cost.dispose();
        }
      }
    } finally {
      adam.dispose();
      tf.dispose([...outs, targets]);
    }
    return total / Math.max(1, batches);
  }

  /** How much the read-out leans on each expert: the share of the absolute map weights, by expert id. */
  reliance(experts: TaskHead[]): Record<string, number> {
    this.ensure(experts);
    const mass = experts.map((e) => tf.tidy(() => tf.sum(tf.abs(this.maps.get(e.id)!.kernel)).dataSync()[0]));
    const total = mass.reduce((a, b) => a + b, 0) || 1;
    return Object.fromEntries(experts.map((e, j) => [e.id, mass[j] / total]));
  }

  /** Its maps as a checkpoint keeps them: the experts' ids (in the order the maps were made) and the tensors, named `<prefix><k>/kernel|bias`. */
  exportMaps(prefix: string): { ids: string[]; tensors: NamedArray[] } {
    const ids = [...this.maps.keys()];
    const tensors = ids.flatMap((id, k) => layerArrays(`${prefix}${k}`, this.maps.get(id)!));
    return { ids, tensors };
  }

  /** Put back the maps `exportMaps` wrote (the read-out's own are dropped first); throws when one does not fit this task. */
  importMaps(ids: readonly string[], byName: ReadonlyMap<string, NamedArray>, prefix: string): void {
    const loaded = ids.map((id, k) => {
      const [kernel, bias] = [byName.get(`${prefix}${k}/kernel`), byName.get(`${prefix}${k}/bias`)];
      if (!kernel || !bias || kernel.shape.length !== 2 || kernel.shape[1] !== this.outputDim || bias.shape.join() !== String(this.outputDim)) {
        throw new Error(`the read-out of task "${this.task.name}" over ${id}: its map is missing or not [n, ${this.outputDim}]`);
      }
      return { id, kernel, bias };
    });
    this.dispose();
    for (const m of loaded) {
      this.maps.set(m.id, {
        kernel: newVariable(() => tf.tensor(m.kernel.data, m.kernel.shape)),
        bias: newVariable(() => tf.tensor(m.bias.data, m.bias.shape)),
      });
    }
  }

  dispose(): void {
    tf.dispose([...this.maps.values()].flatMap((l) => [l.kernel, l.bias]));
    this.maps.clear();
  }
}

/** A dense layer's kernel and bias as named arrays (`<prefix>/kernel`, `<prefix>/bias`). */
function layerArrays(prefix: string, l: DenseLayer<tf.Tensor>): NamedArray[] {
  return [
    { name: `${prefix}/kernel`, shape: l.kernel.shape, data: Float32Array.from(l.kernel.dataSync()) },
    { name: `${prefix}/bias`, shape: l.bias.shape, data: Float32Array.from(l.bias.dataSync()) },
  ];
}

/** A frozen head as a checkpoint records it (its layers' tensors beside it, by position). */
interface HeadRecord {
  id: string;
  task: string;
  kind: TaskKindName;
  layers: number;
}

/**
 * What a multi-task site's checkpoint keeps of its cross-task read-outs, so
 * that a restored site predicts (and reports) as it did: the heads they read
 * and each task's maps.
 */
export interface CrossTaskState {
  /** The site's own heads of its last round, as the read-outs read them. */
  own: HeadRecord[];
  /** The members' newest bundles, in the order they came in (the read-outs sum their heads in that order). */
  received: { site: string; round: number; heads: HeadRecord[] }[];
  /** Per task, in the site's round order: the experts its read-out has a map for. */
  maps: string[][];
}

/** The heads the read-outs read: the site's own of its last round, and each member's newest bundle. */
export interface CrossTaskHeads {
  own: TaskHead[];
  received: Map<string, { round: number; heads: TaskHead[] }>;
}

/** The read-outs and the heads they read as checkpoint metadata and tensors (`importCrossTask` reads them back). */
export function exportCrossTask(heads: CrossTaskHeads, readOuts: readonly CrossTaskReadOut[]): { state: CrossTaskState; tensors: NamedArray[] } {
  const tensors: NamedArray[] = [];
  const record = (prefix: string, hs: TaskHead[]): HeadRecord[] =>
    hs.map((h, i) => {
      h.layers.forEach((l, j) => tensors.push(...layerArrays(`${prefix}${i}/${j}`, l)));
      return { id: h.id, task: h.task, kind: h.kind, layers: h.layers.length };
    });
  const own = record('own/', heads.own);
  const received = [...heads.received].map(([site, r], j) => ({ site, round: r.round, heads: record(`received/${j}/`, r.heads) }));
  const maps = readOuts.map((c, t) => {
    const m = c.exportMaps(`map/${t}/`);
    tensors.push(...m.tensors);
    return m.ids;
  });
  return { state: { own, received, maps }, tensors };
}

/**
 * Restore what `exportCrossTask` wrote: the read-outs' maps, and the heads
 * they read (returned; the caller owns their tensors). Throws an Error
 * naming what does not fit (another number of tasks, a missing tensor).
 */
export function importCrossTask(state: CrossTaskState, tensors: readonly NamedArray[], readOuts: readonly CrossTaskReadOut[]): CrossTaskHeads {
  if (state.maps.length !== readOuts.length)
    throw new Error(`the checkpoint has cross-task read-outs of ${state.maps.length} tasks, this site ${readOuts.length}`);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const made: tf.Tensor[] = [];
  const heads = (prefix: string, rs: HeadRecord[]): TaskHead[] =>
    rs.map((r, i) => ({
      id: r.id,
      task: r.task,
      kind: r.kind,
      layers: Array.from({ length: r.layers }, (_, j) => {
        const [k, b] = [byName.get(`${prefix}${i}/${j}/kernel`), byName.get(`${prefix}${i}/${j}/bias`)];
        if (!k || !b) throw new Error(`the checkpoint's cross-task head ${r.id} lacks layer ${j}`);
        const l = { kernel: tf.tensor(k.data, k.shape), bias: tf.tensor(b.data, b.shape) };
        made.push(l.kernel, l.bias);
        return l;
      }),
    }));
  try {
    const out: CrossTaskHeads = {
      own: heads('own/', state.own),
      received: new Map(state.received.map((r, j) => [r.site, { round: r.round, heads: heads(`received/${j}/`, r.heads) }])),
    };
    readOuts.forEach((c, t) => c.importMaps(state.maps[t], byName, `map/${t}/`));
    return out;
  } catch (e) {
    tf.dispose(made);
    throw e;
  }
}
