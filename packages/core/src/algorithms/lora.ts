/**
 * Low-rank adapters (LoRA) on a frozen body that every site holds alike
 * (`loraRank`, dFLMoE with `freezeBody`): the consortium's knowledge goes
 * into the body as each site's adapters, not only into heads on top.
 *
 * The adapted layers are the body's trailing run of dense layers (every
 * dense layer of an `mlp` body; the last one of a `cnn` body, whose
 * convolutions stay as they are). Each gets `W + s A B` with `A: in x r`
 * (seeded Gaussian), `B: r x out` (zero at the start, so the adapted body
 * starts as the pretrained one) and `s = loraScale`. What comes before the
 * run (a flatten, the convolutions) and the first adapted layer's frozen
 * product are computed once per batch for the own adapters and every
 * expert's; the adapted layers run once per expert, batched.
 *
 * A site publishes its head together with its adapters (one head bundle:
 * the head's tensors, then `lora<i>/a` with `A` and `lora<i>/b` with `s B`,
 * and `lora: {rank}` in the header). A received expert is `(frozen body + its adapters) -> its
 * transform -> its head`, and the gate mixes the experts as without adapters.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { z } from 'zod';
import { deriveSeed } from '@dflmoe/data/internal';
import {
  CodecError,
  decodeBundle,
  encodeBundle,
  headOfBundle,
  headTensors,
  type DecodeLimits,
  type DecodedHead,
  type EncodedHeadInfo,
  type Precision,
} from '../codec.js';
import { headLogits, newVariable, type Activation, type DenseLayer, type Gate, type HeadSpec, type HeadWeights } from '../model.js';

/** One adapted layer's low-rank update `A B`: `a` is `[in, rank]`, `b` is `[rank, out]`. */
export interface LowRank<T extends tf.Tensor = tf.Tensor> {
  a: T;
  b: T;
}

/** Why received adapters were refused: none where the consortium uses them, a rank beyond the agreed one, or shapes that do not chain from the agreed body. */
export type LoraReason = 'lora-missing' | 'lora-rank' | 'lora-shape';

/** Received adapters failed validation (`reason` is the counter's key). */
export class LoraError extends Error {
  /** Always `LoraError`. */
  override name = 'LoraError';
  constructor(
    /** Why the adapters were refused. */
    readonly reason: LoraReason,
    message: string,
  ) {
    super(message);
  }
}

const ACTIVATIONS: Record<string, (x: tf.Tensor) => tf.Tensor> = {
  linear: (x) => x,
  relu: (x) => tf.relu(x),
  tanh: (x) => tf.tanh(x),
  sigmoid: (x) => tf.sigmoid(x),
  elu: (x) => tf.elu(x),
};

/** A batch's pass through the frozen part, shared by every set of adapters (`LoraBody.shared`). */
export interface SharedPass {
  h0: tf.Tensor2D;
  base0: tf.Tensor2D;
}

interface AdaptedLayer {
  layer: tfl.layers.Layer;
  inputDim: number;
  units: number;
  activate: (x: tf.Tensor) => tf.Tensor;
}

/** A body's layers split for adapters: the part computed once, and the trailing dense layers that take adapters. */
export class LoraBody {
  private readonly prefix: tfl.layers.Layer[];
  private readonly adapted: AdaptedLayer[];
  /** The site's own adapters (trained with its head), one per adapted layer. */
  readonly own: LowRank<tf.Variable>[];

  /**
   * @param scale the own adapters' update is `scale * A B` (LoRA's alpha / r);
   * they are published as `A` and `scale * B`, so receivers need not know it.
   */
  constructor(
    body: tfl.LayersModel,
    readonly rank: number,
    readonly scale: number,
    seed: number,
  ) {
    if (!(body instanceof tfl.Sequential))
      throw new Error('loraRank needs a sequential body (mlp, cnn, or a tfjs Sequential model): adapters go on its trailing dense layers');
    const layers = body.layers;
    let first = layers.length;
    while (first > 0 && layers[first - 1].getClassName() === 'Dense') first--;
    if (first === layers.length) throw new Error('loraRank needs a body that ends in dense layers: adapters go on them');
    this.prefix = layers.slice(0, first);
    this.adapted = layers.slice(first).map((layer) => {
      const activation = String((layer.getConfig() as { activation?: unknown }).activation ?? 'linear');
      const activate = ACTIVATIONS[activation];
      if (!activate)
        throw new Error(
          `loraRank: the body's dense layer ${layer.name} has activation "${activation}"; adapters support ${Object.keys(ACTIVATIONS).join(', ')}`,
        );
      const [inputDim, units] = layer.getWeights()[0].shape;
      return { layer, inputDim, units, activate };
    });
    this.own = this.shapes().map((s, i) => ({
      a: newVariable(() => tf.randomNormal(s.a, 0, 1 / Math.sqrt(s.a[0]), 'float32', deriveSeed(seed, 'lora', i))),
      b: newVariable(() => tf.zeros(s.b)),
    }));
  }

  /** Each adapted layer's `[in, out]`, from the body (what every site's adapters must chain from). */
  dims(): [number, number][] {
    return this.adapted.map((l) => [l.inputDim, l.units]);
  }

  /** The shapes of one set of adapters at this rank. */
  shapes(rank = this.rank): { a: [number, number]; b: [number, number] }[] {
    return this.dims().map(([i, o]) => ({ a: [i, rank], b: [rank, o] }));
  }

  /** Parameters of one set of adapters at this rank. */
  paramCount(): number {
    return this.shapes().reduce((n, s) => n + s.a[0] * s.a[1] + s.b[0] * s.b[1], 0);
  }

  /** The own adapters' variables, in a fixed order. */
  variables(): tf.Variable[] {
    return this.own.flatMap((l) => [l.a, l.b]);
  }

  /** The frozen part before the adapted layers, flattened to `[batch, in]`. */
  prefixOf(x: tf.Tensor): tf.Tensor2D {
    let h = x;
    for (const l of this.prefix) h = l.apply(h, { training: false }) as tf.Tensor;
    return h as tf.Tensor2D;
  }

  /** A dense layer's frozen product `h W + b`. */
  private dense(l: AdaptedLayer, h: tf.Tensor2D): tf.Tensor2D {
    const [kernel, bias] = l.layer.getWeights();
    const y: tf.Tensor2D = tf.matMul(h, kernel as tf.Tensor2D);
    return bias ? (tf.add(y, bias) as tf.Tensor2D) : y;
  }

  /** The own adapters as they act and are published: `A` and `scale * B`. */
  effective(): LowRank[] {
    return this.own.map((l) => ({ a: l.a, b: this.scale === 1 ? l.b : tf.mul(l.b, this.scale) }));
  }

  /** What every set of adapters shares for a batch: the frozen part before them, and the first adapted layer's frozen product. */
  shared(x: tf.Tensor): SharedPass {
    const h0 = this.prefixOf(x);
    return { h0, base0: this.dense(this.adapted[0], h0) };
  }

  /** Features of the body with one set of adapters (default: the own), `[batch, featureDim]`. */
  features(x: tf.Tensor | SharedPass, adapters: LowRank[] = this.effective()): tf.Tensor2D {
    const { h0, base0 } = x instanceof tf.Tensor ? this.shared(x) : x;
    let h = h0;
    this.adapted.forEach((l, i) => {
      const low = tf.matMul(tf.matMul(h, adapters[i].a as tf.Tensor2D), adapters[i].b as tf.Tensor2D);
      h = l.activate(tf.add(i === 0 ? base0 : this.dense(l, h), low)) as tf.Tensor2D;
    });
    return h;
  }

  /**
   * Features of the body with K sets of adapters at once, `[K, batch,
   * featureDim]`: the prefix and the first frozen product are computed once
   * (or given), every adapted layer after the first once per set (batched).
   */
  featuresStacked(x: tf.Tensor | SharedPass, sets: LowRank[][]): tf.Tensor3D {
    const K = sets.length;
    const { h0, base0 } = x instanceof tf.Tensor ? this.shared(x) : x;
    const B = h0.shape[0];
    let h!: tf.Tensor3D;
    this.adapted.forEach((l, i) => {
      const a = tf.stack(sets.map((s) => s[i].a)) as tf.Tensor3D; // [K, in, r]
      const b = tf.stack(sets.map((s) => s[i].b)) as tf.Tensor3D; // [K, r, out]
      const r = a.shape[2];
      let pre: tf.Tensor3D;
      if (i === 0) {
        // One [in, K*r] product for every set's A.
        const ha = tf.matMul(h0, tf.reshape(tf.transpose(a, [1, 0, 2]), [l.inputDim, K * r]) as tf.Tensor2D);
        const low = tf.matMul(tf.transpose(tf.reshape(ha, [B, K, r]), [1, 0, 2]) as tf.Tensor3D, b);
        pre = tf.add(tf.expandDims(base0, 0), low);
      } else {
        const base = tf.reshape(this.dense(l, tf.reshape(h, [K * B, l.inputDim])), [K, B, l.units]);
        pre = tf.add(base, tf.matMul(tf.matMul(h, a), b));
      }
      h = l.activate(pre) as tf.Tensor3D;
    });
    return h;
  }

  dispose(): void {
    tf.dispose(this.variables());
  }
}

/** A received expert as the adapted mixture runs it. */
export interface LoraExpert {
  id: string;
  head: HeadWeights;
  adapters: LowRank[];
  fst?: DenseLayer;
}

/**
 * The mixture with adapters: every expert `k` (the own head first) reads
 * the body with its own adapters, `head_k(fst_k(body_k(x)))`, and the gate
 * mixes them from the own adapted features. Returns what `moeForward`
 * returns, plus the own adapted features.
 */
export function loraMixture(
  body: LoraBody,
  x: tf.Tensor,
  ownId: string,
  own: HeadWeights,
  experts: LoraExpert[],
  gate: Gate,
  activate: Activation,
): { probs: tf.Tensor2D; gates: tf.Tensor2D; logits: tf.Tensor3D; z: tf.Tensor2D } {
  // The own features apart from the experts' (the frozen part shared): only they lead to variables, so the backward pass skips the experts' body passes.
  const pass = body.shared(x);
  const z = body.features(pass);
  let logits = tf.expandDims(headLogits(own, z), 1) as tf.Tensor3D;
  if (experts.length > 0)
    logits = tf.concat(
      [
        logits,
        tf.transpose(
          expertLogits(
            body.featuresStacked(
              pass,
              experts.map((e) => e.adapters),
            ),
            experts,
          ),
          [1, 0, 2],
        ),
      ],
      1,
    ) as tf.Tensor3D;
  const gates = gate.weights(z, [ownId, ...experts.map((e) => e.id)]);
  const probs = tf.sum(tf.mul(activate(logits), tf.expandDims(gates, 2)), 1) as tf.Tensor2D;
  return { probs, gates, logits, z };
}

/**
 * Logits `[K, batch, out]` of K experts on their own features `e` `[K, batch, d]`:
 * each one's transform folded into its head's first layer (`W H`, `b H + c`:
 * both linear), as `stackedLogits` does, then the further head layers.
 */
function expertLogits(e: tf.Tensor3D, experts: LoraExpert[]): tf.Tensor3D {
  const stacked = (i: number) => ({
    kernel: tf.stack(experts.map((x) => x.head[i].kernel)) as tf.Tensor3D,
    bias: tf.expandDims(tf.stack(experts.map((x) => x.head[i].bias)), 1) as tf.Tensor3D,
  });
  let { kernel, bias } = stacked(0);
  const fst = experts[0].fst;
  if (fst) {
    const w = tf.stack(experts.map((x) => x.fst!.kernel));
    const b = tf.expandDims(tf.stack(experts.map((x) => x.fst!.bias)), 1) as tf.Tensor3D;
    bias = tf.add(tf.matMul(b, kernel), bias);
    kernel = fst.kernel.rank === 1 ? tf.mul(tf.expandDims(w, 2), kernel) : tf.matMul(w as tf.Tensor3D, kernel);
  }
  let h = tf.add(tf.matMul(e, kernel), bias) as tf.Tensor3D;
  for (let i = 1; i < experts[0].head.length; i++) {
    const l = stacked(i);
    h = tf.add(tf.matMul(tf.relu(h), l.kernel), l.bias);
  }
  return h;
}

// ---------------------------------------------------------------- wire

const loraMetaSchema = z.object({ rank: z.number().int().min(1).max(1024) });

/** A head with its adapters, as published: the head's tensors, then each adapted layer's `a` and `b`. */
export function encodeLoraHead(
  info: EncodedHeadInfo,
  layers: { kernel: Float32Array; bias: Float32Array }[],
  adapters: LowRank[],
  precision: Precision,
): Uint8Array {
  const rank = adapters[0].a.shape[1];
  const tensors = [
    ...headTensors(info.spec, layers),
    ...adapters.flatMap((l, i) => [
      { name: `lora${i}/a`, shape: l.a.shape, data: l.a.dataSync() as Float32Array },
      { name: `lora${i}/b`, shape: l.b.shape, data: l.b.dataSync() as Float32Array },
    ]),
  ];
  return encodeBundle('head', { spec: info.spec, version: info.version, peer: info.peer, lora: { rank } }, tensors, precision);
}

/** Decoded adapters, padded with zeros to the receiver's rank (the same product `A B`). */
export interface DecodedAdapters {
  a: Float32Array;
  aShape: [number, number];
  b: Float32Array;
  bShape: [number, number];
}

/**
 * Decode a head with adapters and check them as head layers are checked:
 * the header's rank at most `maxRank`, one `a` `[in, rank]` and `b`
 * `[rank, out]` per adapted layer of the agreed body (`dims`), finite
 * values (the codec). Throws `CodecError` (the head) or `LoraError` (the adapters).
 */
export function decodeLoraHead(
  buf: Uint8Array,
  expected: HeadSpec,
  dims: [number, number][],
  maxRank: number,
  limits: DecodeLimits,
): DecodedHead & { adapters: DecodedAdapters[] } {
  const bundle = decodeBundle(buf, limits);
  const n = 2 * (expected.hidden.length + 1);
  const head = headOfBundle({ ...bundle, tensors: bundle.tensors.slice(0, n) }, expected);
  if (bundle.meta.lora === undefined) throw new LoraError('lora-missing', 'head carries no adapters, and this consortium uses loraRank');
  const meta = loraMetaSchema.safeParse(bundle.meta.lora);
  if (!meta.success) throw new CodecError('header', `bad adapter header: ${meta.error.message.slice(0, 200)}`);
  const rank = meta.data.rank;
  if (rank > maxRank) throw new LoraError('lora-rank', `adapters of rank ${rank} exceed the agreed loraRank ${maxRank}`);
  const rest = bundle.tensors.slice(n);
  if (rest.length !== 2 * dims.length) throw new LoraError('lora-shape', `${rest.length} adapter tensors, expected ${2 * dims.length}`);
  const adapters = dims.map(([inDim, out], i) => {
    const a = rest[2 * i];
    const b = rest[2 * i + 1];
    if (a.shape.join() !== `${inDim},${rank}` || b.shape.join() !== `${rank},${out}`)
      throw new LoraError('lora-shape', `adapter ${i}: got a [${a.shape}] b [${b.shape}], expected [${inDim},${rank}] [${rank},${out}]`);
    return padRank(a.data, b.data, inDim, out, rank, maxRank);
  });
  return { ...head, adapters };
}

/** `A` with zero columns and `B` with zero rows up to `to`: the same product. */
function padRank(a: Float32Array, b: Float32Array, inDim: number, out: number, rank: number, to: number): DecodedAdapters {
  const pa = new Float32Array(inDim * to);
  for (let i = 0; i < inDim; i++) pa.set(a.subarray(i * rank, (i + 1) * rank), i * to);
  const pb = new Float32Array(to * out);
  pb.set(b);
  return { a: pa, aShape: [inDim, to], b: pb, bShape: [to, out] };
}
