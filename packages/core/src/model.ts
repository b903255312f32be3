/**
 * Model parts of a dFLMoE peer: Body, Head, feature-space transforms (FST),
 * Gate, and the mixture-of-experts forward pass and loss described in
 * docs/architecture.md ("The model").
 *
 * The body is any tfjs layers model (we ship an MLP and a small CNN). Head,
 * FST and gate are small enough to be plain tensors with a pure forward
 * function: that lets a received head run as frozen constants, and keeps
 * serialization trivial.
 */
import * as tf from '@tensorflow/tfjs-core';
import { classification } from './tasks/classification.js';
import type { TaskKind } from './tasks/api.js';
import * as tfl from '@tensorflow/tfjs-layers';
import { deriveSeed } from '@dflmoe/data/internal';

// ---------------------------------------------------------------- body

/** A body: an MLP with its hidden sizes, a small CNN with its filters, or one the host brought (`CustomBodySpec`). */
export type BodySpec =
  { kind: 'mlp'; hidden?: number[] } | { kind: 'cnn'; filters?: number[]; kernelSize?: number; padding?: 'same' | 'valid' } | CustomBodySpec;

/**
 * A body the host brings (see `custom-body.ts`): `build` makes a fresh one
 * for a site; `source` says where it came from (`tfjs:<dir>` for a saved
 * model); `arch` is its architecture string once built.
 */
export interface CustomBodySpec {
  /** Marks a body the host brings. */
  kind: 'custom';
  /** Makes a fresh body for an input shape and feature width; unset until a saved model (`source`) has been read. */
  build?: (inputShape: number[], featureDim: number) => tfl.LayersModel;
  /** Where the body came from (`tfjs:<dir>` for a saved model), for messages and loading. */
  source?: string;
  /** The built body's architecture string, once built. */
  arch?: string;
}

/**
 * `mlp[:h1xh2...]`, or `cnn[:f1xf2...][:k<size>][:valid]`: convolution
 * filters per layer (each followed by 2x2 max pooling), kernel size
 * (default 3) and padding (default same). PFLlib's FedAvgCNN body is
 * `cnn:32x64:k5:valid` with a feature size of 512.
 */
export function parseBodySpec(s: string): BodySpec {
  // A saved tfjs layers model: read (asynchronously) by resolveBody before a site builds it.
  if (s.startsWith('tfjs:') && s.length > 5) return { kind: 'custom', source: s };
  const [kind, arg, ...opts] = s.split(':');
  const nums = arg ? arg.split('x').map(Number) : undefined;
  if (nums && nums.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new Error(`Bad body "${s}": sizes must be positive integers joined by x, e.g. mlp:256x128 or cnn:16x32`);
  }
  if (kind === 'mlp' && opts.length === 0) return nums ? { kind, hidden: nums } : { kind };
  if (kind === 'cnn') {
    const spec: BodySpec = nums ? { kind, filters: nums } : { kind };
    for (const o of opts) {
      const k = /^k(\d+)$/.exec(o);
      if (k && Number(k[1]) >= 1) spec.kernelSize = Number(k[1]);
      else if (o === 'valid' || o === 'same') spec.padding = o;
      else throw new Error(`Bad body "${s}": "${o}" is neither a kernel size (k5) nor a padding (valid, same)`);
    }
    return spec;
  }
  throw new Error(`Unknown body "${s}": use mlp[:h1xh2...], cnn[:f1xf2...][:k<size>][:valid] or tfjs:<dir> (a saved tfjs layers model)`);
}

/** A body spec as a string: a custom body's architecture string once built, else where it came from. */
export function formatBodySpec(b: BodySpec): string {
  if (b.kind === 'custom') return b.arch ?? b.source ?? 'custom';
  if (b.kind === 'mlp') return b.hidden ? `mlp:${b.hidden.join('x')}` : 'mlp';
  const opts = [...(b.kernelSize && b.kernelSize !== 3 ? [`k${b.kernelSize}`] : []), ...(b.padding === 'valid' ? ['valid'] : [])];
  const filters = b.filters ?? (opts.length ? [16, 32] : undefined);
  return ['cnn', ...(filters ? [filters.join('x')] : []), ...opts].join(':');
}

/**
 * Build a body mapping one sample of `inputShape` to a `featureDim` vector
 * (ReLU features). Weights are initialised from `seed`.
 */
export function buildBody(spec: BodySpec, inputShape: number[], featureDim: number, seed: number): tfl.LayersModel {
  if (spec.kind === 'custom') throw new Error('buildBody builds mlp and cnn bodies; a custom body is built by buildCustomBody');
  let n = 0;
  const init = () => tfl.initializers.heNormal({ seed: deriveSeed(seed, 'body', n++) });
  const layers: tfl.layers.Layer[] = [];
  if (spec.kind === 'mlp') {
    if (inputShape.length > 1) layers.push(tfl.layers.flatten({ inputShape }));
    (spec.hidden ?? [128]).forEach((h, i) => {
      const first = i === 0 && inputShape.length === 1 ? { inputShape } : {};
      layers.push(tfl.layers.dense({ ...first, units: h, activation: 'relu', kernelInitializer: init() }));
    });
  } else {
    if (inputShape.length !== 3) {
      throw new Error(`A cnn body needs image data (height x width x channels); this dataset's samples have shape [${inputShape}]. Use an mlp body.`);
    }
    const k = spec.kernelSize ?? 3;
    (spec.filters ?? [16, 32]).forEach((f, i) => {
      layers.push(
        tfl.layers.conv2d({
          ...(i === 0 ? { inputShape } : {}),
          filters: f,
          kernelSize: k,
          padding: spec.padding ?? 'same',
          activation: 'relu',
          kernelInitializer: init(),
        }),
      );
      layers.push(tfl.layers.maxPooling2d({ poolSize: 2, padding: 'same' }));
    });
    layers.push(tfl.layers.flatten());
  }
  const first = layers.length === 0 ? { inputShape } : {};
  layers.push(tfl.layers.dense({ ...first, units: featureDim, activation: 'relu', kernelInitializer: init() }));
  return tfl.sequential({ layers });
}

export function bodyVariables(body: tfl.LayersModel): tf.Variable[] {
  return body.trainableWeights.map((w) => w.read() as tf.Variable);
}

// ---------------------------------------------------------------- head

/** A dense head: `inputDim -> hidden... -> outputDim` (ReLU between, logits out). */
export interface HeadSpec {
  /** Width of the head's input (the body's `featureDim`). */
  inputDim: number;
  /** Hidden layer widths, in order (empty: a linear head). */
  hidden: number[];
  /** Outputs per row, as the task kind says (`TaskKind.outputDim`: the class count for a classification). */
  outputDim: number;
}

export interface DenseLayer<T extends tf.Tensor = tf.Tensor> {
  kernel: T;
  bias: T;
}

export type HeadWeights = DenseLayer[];

export function headShapes(spec: HeadSpec): { kernel: [number, number]; bias: [number] }[] {
  const dims = [spec.inputDim, ...spec.hidden, spec.outputDim];
  return dims.slice(1).map((out, i) => ({ kernel: [dims[i], out], bias: [out] }));
}

export function headParamCount(spec: HeadSpec): number {
  return headShapes(spec).reduce((a, s) => a + s.kernel[0] * s.kernel[1] + s.bias[0], 0);
}

/** A trainable variable from an initial value, without leaking the initial tensor. */
export function newVariable(init: () => tf.Tensor): tf.Variable {
  return tf.tidy(() => tf.variable(init()));
}

export function createHead(spec: HeadSpec, seed: number): DenseLayer<tf.Variable>[] {
  return headShapes(spec).map((s, i) => {
    const lim = Math.sqrt(6 / (s.kernel[0] + s.kernel[1]));
    return {
      kernel: newVariable(() => tf.randomUniform(s.kernel, -lim, lim, 'float32', deriveSeed(seed, 'head', i))),
      bias: newVariable(() => tf.zeros(s.bias)),
    };
  });
}

/** Logits of a head for features `z` `[batch, inputDim]`. */
export function headLogits(w: HeadWeights, z: tf.Tensor2D): tf.Tensor2D {
  let h: tf.Tensor2D = z;
  w.forEach((l, i) => {
    h = tf.add(tf.matMul(h, l.kernel as tf.Tensor2D), l.bias) as tf.Tensor2D;
    if (i < w.length - 1) h = tf.relu(h);
  });
  return h;
}

// ---------------------------------------------------------------- FST and gate

/**
 * Form of the feature-space transform of a received expert: `full` is
 * `z -> z W + b` (dim x dim), `diag` is `z -> z * w + b` (a scale and shift
 * per feature), `none` feeds local features to the expert unchanged.
 */
export type FstKind = (typeof FST_KINDS)[number];
/** Every `FstKind`. */
export const FST_KINDS = ['full', 'diag', 'none'] as const;

/** A feature-space transform, identity at start (`none` has no parameters: callers skip it). */
export function createFst(dim: number, kind: Exclude<FstKind, 'none'> = 'full'): DenseLayer<tf.Variable> {
  const kernel = kind === 'diag' ? newVariable(() => tf.ones([dim])) : newVariable(() => tf.eye(dim));
  return { kernel, bias: newVariable(() => tf.zeros([dim])) };
}

export function applyFst(t: DenseLayer, z: tf.Tensor2D): tf.Tensor2D {
  const scaled = t.kernel.rank === 1 ? tf.mul(z, t.kernel) : tf.matMul(z, t.kernel as tf.Tensor2D);
  return tf.add(scaled, t.bias) as tf.Tensor2D;
}

/** The identity with a zero gradient: a fixed target inside a loss. */
export const stopGradient = tf.customGrad(((x: tf.Tensor) => ({
  value: tf.clone(x),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as unknown as Parameters<typeof tf.customGrad>[0]) as (x: tf.Tensor) => tf.Tensor;

/**
 * The gate: features -> one logit per expert slot. A slot is created per
 * expert (peer) the first time it is seen and kept while it is absent, so
 * experts can leave and come back without retraining the gate from zero.
 */
export class Gate {
  readonly hidden: DenseLayer<tf.Variable>;
  private slots = new Map<string, DenseLayer<tf.Variable>>();

  constructor(
    readonly featureDim: number,
    readonly hiddenDim: number,
    private seed: number,
    private ownId: string,
    ownBias = 0,
  ) {
    const lim = Math.sqrt(6 / (featureDim + hiddenDim));
    this.hidden = {
      kernel: newVariable(() => tf.randomUniform([featureDim, hiddenDim], -lim, lim, 'float32', deriveSeed(seed, 'gate'))),
      bias: newVariable(() => tf.zeros([hiddenDim])),
    };
    this.ensureSlot(ownId, ownBias);
  }

  get slotIds(): string[] {
    return [...this.slots.keys()];
  }

  ensureSlot(id: string, bias = 0): void {
    if (this.slots.has(id)) return;
    this.slots.set(id, { kernel: newVariable(() => tf.zeros([this.hiddenDim, 1])), bias: newVariable(() => tf.fill([1], bias)) });
  }

  removeSlot(id: string): void {
    if (id === this.ownId) return;
    const s = this.slots.get(id);
    if (s) {
      s.kernel.dispose();
      s.bias.dispose();
      this.slots.delete(id);
    }
  }

  /** The hidden layer and the own slot: present in every round. */
  sharedVariables(ownId: string = this.ownId): tf.Variable[] {
    return [this.hidden.kernel, this.hidden.bias, ...this.slotVariables(ownId)];
  }

  slotVariables(id: string): tf.Variable[] {
    const s = this.slots.get(id);
    return s ? [s.kernel, s.bias] : [];
  }

  /**
   * Mixing weights `[batch, present.length]` over the `present` experts, in
   * that order. Absent experts are masked out: the softmax runs over the
   * slots of present experts only, which equals giving absent slots a logit
   * of minus infinity.
   */
  weights(z: tf.Tensor2D, present: string[]): tf.Tensor2D {
    const slots = present.map((id) => {
      const s = this.slots.get(id);
      if (!s) throw new Error(`gate has no slot for expert ${id}`);
      return s;
    });
    const h = tf.relu(applyFst(this.hidden, z));
    const kernel =
      slots.length === 1
        ? slots[0].kernel
        : tf.concat(
            slots.map((s) => s.kernel),
            1,
          );
    const bias =
      slots.length === 1
        ? slots[0].bias
        : tf.concat(
            slots.map((s) => s.bias),
            0,
          );
    return tf.softmax(tf.add(tf.matMul(h, kernel), bias) as tf.Tensor2D);
  }

  /** Weights `[batch, 1 + K]` over the own slot and K more slots given as one kernel `[hidden, K]` and bias `[K]`. */
  weightsWith(z: tf.Tensor2D, slots: { kernel: tf.Tensor2D; bias: tf.Tensor1D }): tf.Tensor2D {
    const own = this.slots.get(this.ownId)!;
    const h = tf.relu(applyFst(this.hidden, z));
    return tf.softmax(tf.add(tf.matMul(h, tf.concat([own.kernel, slots.kernel], 1)), tf.concat([own.bias, slots.bias], 0)) as tf.Tensor2D);
  }

  /** Masked weights over all slots (absent ones are exactly 0), for inspection. */
  allWeights(z: tf.Tensor2D, present: string[]): { ids: string[]; weights: tf.Tensor2D } {
    const ids = this.slotIds;
    const w = this.weights(z, present);
    const cols = ids.map((id) => {
      const j = present.indexOf(id);
      return j < 0 ? tf.zeros([z.shape[0], 1]) : tf.slice(w, [0, j], [-1, 1]);
    });
    return { ids, weights: tf.concat(cols, 1) as tf.Tensor2D };
  }

  dispose(): void {
    this.hidden.kernel.dispose();
    this.hidden.bias.dispose();
    for (const id of this.slotIds) {
      const s = this.slots.get(id)!;
      s.kernel.dispose();
      s.bias.dispose();
    }
    this.slots.clear();
  }
}

// ---------------------------------------------------------------- MoE

export interface Expert {
  id: string;
  head: HeadWeights;
  /** Transform from local features to this expert's input space; none for the own head. */
  fst?: DenseLayer;
}

/**
 * MoE prediction, one small kernel chain per expert (the reference path;
 * `moeForward` computes the same batched): `sum_j g_j(z) * softmax(head_j(fst_j(z)))`.
 */
export function moeForwardPerExpert(
  z: tf.Tensor2D,
  experts: Expert[],
  gate: Gate,
  activate: Activation = tf.softmax,
): { probs: tf.Tensor2D; gates: tf.Tensor2D } {
  const g = gate.weights(
    z,
    experts.map((e) => e.id),
  );
  const p = tf.stack(
    experts.map((e) => activate(headLogits(e.head, e.fst ? applyFst(e.fst, z) : z))),
    1,
  ); // [B, K, C]
  const probs = tf.sum(tf.mul(p, tf.expandDims(g, 2)), 1) as tf.Tensor2D;
  return { probs, gates: g };
}

/** How a head's outputs enter a mixture: the softmax (classification, the default) or as they are (regression); see `TaskKind.activate`. */
export type Activation = (outputs: tf.Tensor) => tf.Tensor;

/** How `moeForward` runs one group's first layer: FST folded into the head's kernel, or applied to the features first. */
export type MoeFusion = 'auto' | 'fold' | 'apply';

/** FST form of an expert: none, a scale per feature (rank-1 kernel) or a full matrix. */
function fstForm(e: Expert): FstKind {
  return !e.fst ? 'none' : e.fst.kernel.rank === 1 ? 'diag' : 'full';
}

/** K experts' heads and transforms as stacked tensors (one FST form for all). */
export interface StackedExperts {
  /** Head layers: kernel `[K, in, out]`, bias `[K, out]`. */
  layers: { kernel: tf.Tensor3D; bias: tf.Tensor2D }[];
  /** Transforms: kernel `[K, d, d]` (full) or `[K, d]` (diag), bias `[K, d]`; absent for `none`. */
  fst?: { kernel: tf.Tensor; bias: tf.Tensor2D };
}

/** Stack K experts that share an FST form (see `StackedExperts`). */
export function stackExperts(group: Expert[]): StackedExperts {
  return {
    layers: group[0].head.map((_, i) => ({
      kernel: tf.stack(group.map((e) => e.head[i].kernel)) as tf.Tensor3D,
      bias: tf.stack(group.map((e) => e.head[i].bias)) as tf.Tensor2D,
    })),
    ...(group[0].fst ? { fst: { kernel: tf.stack(group.map((e) => e.fst!.kernel)), bias: tf.stack(group.map((e) => e.fst!.bias)) as tf.Tensor2D } } : {}),
  };
}

/**
 * Logits `[B, K, C]` of K stacked experts, batched: one matMul for all K
 * first layers, then one batched matMul per further head layer. The FST is
 * linear and so is a head's first layer, so `fold` computes
 * `z (W_k H_k) + (b_k H_k + c_k)`, whose cost does not grow with the batch
 * in the d x d part; `apply` computes `(z W_k + b_k) H_k + c_k`.
 */
export function stackedLogits(z: tf.Tensor2D, s: StackedExperts, fusion: MoeFusion = 'auto'): tf.Tensor3D {
  const [B, d] = z.shape;
  const H = s.layers[0].kernel;
  const [K, , out] = H.shape;
  const form: FstKind = !s.fst ? 'none' : s.fst.kernel.rank === 2 ? 'diag' : 'full';
  let h: tf.Tensor3D; // [B, K, out]
  if (form === 'none' || (fusion === 'auto' ? out <= B : fusion === 'fold')) {
    // One [d, K*out] kernel for every expert's first layer.
    let M: tf.Tensor3D = H;
    let m: tf.Tensor2D = s.layers[0].bias;
    if (s.fst) {
      const { kernel: W, bias: b } = s.fst;
      M = form === 'full' ? tf.matMul(W as tf.Tensor3D, H) : (tf.mul(tf.expandDims(W, 2), H) as tf.Tensor3D);
      m = tf.add(tf.reshape(tf.matMul(tf.expandDims(b, 1) as tf.Tensor3D, H), [K, out]), m) as tf.Tensor2D;
    }
    const flat = tf.reshape(tf.transpose(M, [1, 0, 2]), [d, K * out]) as tf.Tensor2D;
    h = tf.reshape(tf.add(tf.matMul(z, flat), tf.reshape(m, [K * out])), [B, K, out]) as tf.Tensor3D;
  } else {
    // Transform first: [B, K, d] inputs (one matMul for every full FST), then a batched matMul per head.
    const { kernel: W, bias: b } = s.fst!;
    let x: tf.Tensor3D;
    if (form === 'full') {
      const flat = tf.reshape(tf.transpose(W, [1, 0, 2]), [d, K * d]) as tf.Tensor2D;
      x = tf.reshape(tf.add(tf.matMul(z, flat), tf.reshape(b, [K * d])), [B, K, d]) as tf.Tensor3D;
    } else {
      x = tf.add(tf.mul(tf.expandDims(z, 1), W), b) as tf.Tensor3D;
    }
    h = tf.transpose(tf.add(tf.matMul(tf.transpose(x, [1, 0, 2]) as tf.Tensor3D, H), tf.expandDims(s.layers[0].bias, 1)), [1, 0, 2]) as tf.Tensor3D;
  }
  for (let i = 1; i < s.layers.length; i++) {
    const y = tf.matMul(tf.transpose(tf.relu(h), [1, 0, 2]) as tf.Tensor3D, s.layers[i].kernel); // [K, B, out_i]
    h = tf.transpose(tf.add(y, tf.expandDims(s.layers[i].bias, 1)), [1, 0, 2]) as tf.Tensor3D;
  }
  return h;
}

/**
 * The mixture of the own head and K received experts held as stacked
 * tensors (a dFLMoE peer packs them once per round), with the gate's own
 * slot first and the K experts' slots as one `[hidden, K]` kernel. Equal to
 * `moeForward` over the same experts in the same order.
 */
export function moeForwardStacked(
  z: tf.Tensor2D,
  own: HeadWeights,
  stacked: StackedExperts,
  gate: Gate,
  slots: { kernel: tf.Tensor2D; bias: tf.Tensor1D },
  fusion: MoeFusion = 'auto',
  activate: Activation = tf.softmax,
): { probs: tf.Tensor2D; gates: tf.Tensor2D; logits: tf.Tensor3D } {
  const g = gate.weightsWith(z, slots);
  const ownLogits = tf.expandDims(headLogits(own, z), 1) as tf.Tensor3D;
  const logits = tf.concat([ownLogits, stackedLogits(z, stacked, fusion)], 1) as tf.Tensor3D;
  const probs = tf.sum(tf.mul(activate(logits), tf.expandDims(g, 2)), 1) as tf.Tensor2D;
  return { probs, gates: g, logits };
}

/**
 * MoE prediction: `sum_j g_j(z) * softmax(head_j(fst_j(z)))`, with every
 * expert's transform and head run as batched tensor operations: experts
 * are grouped by FST form and by whether their head trains (the own head,
 * a variable, apart from received heads, so that no gradient is computed
 * for frozen kernels), and each group runs as one chain (`groupLogits`).
 * Gradients reach every expert's own FST variables through the stacks.
 * Equal to `moeForwardPerExpert` up to float rounding. Returns the mixture
 * probabilities `[batch, classes]`, the gate weights `[batch, K]` and each
 * expert's logits `[batch, K, classes]`, all in the order of `experts`.
 */
export function moeForward(
  z: tf.Tensor2D,
  experts: Expert[],
  gate: Gate,
  fusion: MoeFusion = 'auto',
  activate: Activation = tf.softmax,
): { probs: tf.Tensor2D; gates: tf.Tensor2D; logits: tf.Tensor3D } {
  const g = gate.weights(
    z,
    experts.map((e) => e.id),
  );
  const groups = new Map<string, number[]>();
  experts.forEach((e, j) => {
    const key = `${fstForm(e)}:${e.head[0].kernel instanceof tf.Variable && e.head[0].kernel.trainable}`;
    groups.set(key, [...(groups.get(key) ?? []), j]);
  });
  const parts = [...groups.values()].map((idx) => stackedLogits(z, stackExperts(idx.map((j) => experts[j])), fusion));
  const order = [...groups.values()].flat();
  let logits = parts.length === 1 ? parts[0] : (tf.concat(parts, 1) as tf.Tensor3D);
  if (order.some((j, i) => j !== i)) {
    // Back to the experts' order, by slices of consecutive positions (gather has no gradient on wasm).
    const pos = new Int32Array(order.length);
    order.forEach((j, i) => (pos[j] = i));
    const runs: [number, number][] = [];
    for (let j = 0; j < pos.length; j++) {
      const last = runs.at(-1);
      if (last && pos[j] === last[0] + last[1]) last[1]++;
      else runs.push([pos[j], 1]);
    }
    const grouped = logits;
    logits = tf.concat(
      runs.map(([start, size]) => tf.slice(grouped, [0, start, 0], [-1, size, -1])),
      1,
    ) as tf.Tensor3D;
  }
  const probs = tf.sum(tf.mul(activate(logits), tf.expandDims(g, 2)), 1) as tf.Tensor2D;
  return { probs, gates: g, logits };
}

/**
 * The dFLMoE loss: `alpha * loss(head_i(z), y) + (1 - alpha) * mixtureLoss(moe(z), y)`
 * with the task kind's losses (default classification: the cross-entropy of
 * the own head's logits and the negative log-likelihood of the mixture's
 * probabilities). `ownLogits` are the peer's own head outputs; `moeProbs` the mixture.
 */
export function moeLoss(ownLogits: tf.Tensor2D, moeProbs: tf.Tensor2D, targets: tf.Tensor2D, alpha: number, task: TaskKind = classification): tf.Scalar {
  return tf.add(tf.mul(alpha, task.loss(ownLogits, targets)), tf.mul(1 - alpha, task.mixtureLoss(moeProbs, targets))) as tf.Scalar;
}
