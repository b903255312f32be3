/**
 * dFLMoE's received experts as stacked tensors, so that a mixture costs the
 * same number of kernels whatever the number of experts: packed for a round
 * of training (their transforms, gate slots and Adam state stacked into one
 * variable each, written back after the round), and stacked for inference
 * while they stay the same. The site owns the experts' variables; this holds
 * only the stacked copies.
 */
import * as tf from '@tensorflow/tfjs-core';
import { KeyedAdam, RowAdam } from '../keyed-adam.js';
import { stackExperts, type DenseLayer, type Gate, type HeadWeights, type StackedExperts } from '../model.js';
import type { ExpertPool } from '../experts.js';

/** The received experts of a round, packed for training (see `DflmoePeer.trainRound`). */
export interface Packed {
  ids: string[];
  /** The pool's heads that `experts` stacks. */
  heads: HeadWeights[];
  adam: RowAdam;
  experts: StackedExperts;
  slots: { kernel: tf.Tensor2D; bias: tf.Tensor1D };
}

/**
 * The received experts stacked for inference (`moeForwardStacked`), kept
 * while they are the same: `key` holds, per expert in pool order, its head
 * tensors and the data of its FST and gate slot variables (an assignment
 * gives a variable new data), so any change to them is a different key.
 */
export interface InferenceStack {
  key: object[];
  experts: StackedExperts;
  slots: { kernel: tf.Tensor2D; bias: tf.Tensor1D };
}

/** What the stacks are built from: the site's pool, gate, transforms and the experts' optimizer. */
export interface StackSource {
  readonly pool: ExpertPool;
  readonly gate: Gate;
  readonly expertAdam: KeyedAdam;
  /** Whether experts have a feature-space transform (FST) at this site. */
  readonly withFst: boolean;
  /** An expert's transform, if it has one. */
  fstOf(peer: string): DenseLayer<tf.Variable> | undefined;
  /** An expert's variables (gate slot, then FST), in the order its Adam state follows. */
  expertVariables(peer: string): tf.Variable[];
}

/** The stacked copies of a site's received experts (see the file's comment). */
export class ExpertStacks {
  /** Inference over the received experts: their stacked copies (see `InferenceStack`). */
  private stack?: InferenceStack;

  constructor(private readonly src: StackSource) {}

  /** Stack the experts' heads, transforms, gate slots and Adam state for a round of training. */
  pack(ids: string[]): Packed {
    const exVars = ids.map((id) => this.src.expertVariables(id));
    // A new expert's moments are zero: one zero tensor per variable serves every such expert.
    const states = ids.map((id, k) => this.src.expertAdam.takeStateLazily(id, exVars[k]));
    let packed: Packed | undefined;
    // Variables are not disposed by tidy; everything else that outlives it is kept explicitly.
    tf.tidy(() => {
      // Per expert: slot kernel [h, 1], slot bias [1], FST kernel, FST bias. Slots join along their last axis, FSTs stack on a new first one.
      const join = (ts: tf.Tensor[], i: number) => (i < 2 ? tf.concat(ts, i === 0 ? 1 : 0) : tf.stack(ts));
      const n = exVars[0].length;
      const zeros: tf.Tensor[] = [];
      const moments = (m: (tf.Tensor[] | undefined)[], i: number) =>
        join(
          m.map((t) => t?.[i] ?? (zeros[i] ??= tf.zeros(exVars[0][i].shape))),
          i,
        );
      const vars = Array.from({ length: n }, (_, i) =>
        tf.variable(
          join(
            exVars.map((vs) => vs[i]),
            i,
          ),
        ),
      );
      const adam = new RowAdam(
        this.src.expertAdam.learningRate,
        vars,
        [1, 0, 0, 0].slice(0, n),
        states.map(({ steps, acc1, acc2 }) => ({ steps, acc1, acc2 })),
        vars.map((_, i) =>
          tf.keep(
            moments(
              states.map((s) => s.m),
              i,
            ),
          ),
        ),
        vars.map((_, i) =>
          tf.keep(
            moments(
              states.map((s) => s.v),
              i,
            ),
          ),
        ),
      );
      tf.dispose(states.flatMap((s) => [...(s.m ?? []), ...(s.v ?? [])]));
      const pool = ids.map((id) => this.src.pool.get(id)!.head);
      const experts: StackedExperts = {
        layers: pool[0].map((_, i) => ({
          kernel: tf.keep(tf.stack(pool.map((l) => l[i].kernel))) as tf.Tensor3D,
          bias: tf.keep(tf.stack(pool.map((l) => l[i].bias))) as tf.Tensor2D,
        })),
        ...(n > 2 ? { fst: { kernel: vars[2], bias: vars[3] as unknown as tf.Tensor2D } } : {}),
      };
      packed = { ids, heads: pool, adam, experts, slots: { kernel: vars[0] as unknown as tf.Tensor2D, bias: vars[1] as unknown as tf.Tensor1D } };
    });
    return packed!;
  }

  /**
   * Write the trained packed copies back to each expert's variables and Adam
   * state. The packed heads, transforms and gate slots then serve inference
   * (`stacked`) while they stay current; the rest is freed.
   */
  unpack(p: Packed): void {
    const { ids, adam } = p;
    const K = ids.length;
    tf.tidy(() => {
      // Undo `join` on the values read back (exact copies): slot kernels are columns, slot biases entries, FSTs rows.
      const split = (t: tf.Tensor, i: number): tf.Tensor[] => {
        const data = t.dataSync() as Float32Array;
        if (i === 0) {
          const h = t.shape[0];
          return ids.map((_, k) =>
            tf.tensor2d(
              Float32Array.from({ length: h }, (_, r) => data[r * K + k]),
              [h, 1],
            ),
          );
        }
        const shape = i === 1 ? [1] : t.shape.slice(1);
        const n = data.length / K;
        return ids.map((_, k) => tf.tensor(data.slice(k * n, (k + 1) * n), shape));
      };
      const values = adam.vars.map(split);
      const ms = adam.m.map(split);
      const vs = adam.v.map(split);
      ids.forEach((id, k) => {
        const vars = this.src.expertVariables(id);
        vars.forEach((x, i) => x.assign(values[i][k]));
        this.src.expertAdam.putState(id, { vars, ...adam.rows[k], m: ms.map((r) => tf.keep(r[k])), v: vs.map((r) => tf.keep(r[k])) });
      });
    });
    adam.dispose();
    // The pool as packed: the stacks are its experts as they now are.
    const pool = this.src.pool.list();
    if (pool.length === K && pool.every((e, k) => e.peer === ids[k] && e.head === p.heads[k])) {
      this.setStack({ key: this.stackKey(), experts: p.experts, slots: p.slots });
    } else {
      tf.dispose([...adam.vars, ...p.experts.layers.flatMap((l) => [l.kernel, l.bias])]);
    }
  }

  /** See `InferenceStack`. */
  private stackKey(): object[] {
    return this.src.pool
      .list()
      .flatMap((e) => [...e.head.flatMap((l) => [l.kernel.dataId, l.bias.dataId]), ...this.src.expertVariables(e.peer).map((v) => v.dataId)]);
  }

  private setStack(s: InferenceStack | undefined): void {
    const old = this.stack;
    this.stack = s;
    if (old)
      tf.dispose([
        ...old.experts.layers.flatMap((l) => [l.kernel, l.bias]),
        ...(old.experts.fst ? [old.experts.fst.kernel, old.experts.fst.bias] : []),
        old.slots.kernel,
        old.slots.bias,
      ]);
  }

  /**
   * The received experts stacked for inference, built when they changed; or
   * undefined when there are none, or their transforms differ in form.
   */
  inference(): InferenceStack | undefined {
    const pool = this.src.pool.list();
    const withFst = this.src.withFst;
    if (pool.length === 0 || !pool.every((e) => (this.src.fstOf(e.peer) !== undefined) === withFst && this.src.gate.slotVariables(e.peer).length === 2))
      return undefined;
    const key = this.stackKey();
    const cur = this.stack;
    if (cur && cur.key.length === key.length && cur.key.every((k, i) => k === key[i])) return cur;
    // Kept: this may run inside the caller's tidy.
    const built = tf.tidy(() => {
      const experts = stackExperts(pool.map((e) => ({ id: e.peer, head: e.head, fst: this.src.fstOf(e.peer) })));
      const slots = pool.map((e) => this.src.gate.slotVariables(e.peer));
      return {
        experts: {
          layers: experts.layers.map((l) => ({ kernel: tf.keep(l.kernel), bias: tf.keep(l.bias) })),
          ...(experts.fst ? { fst: { kernel: tf.keep(experts.fst.kernel), bias: tf.keep(experts.fst.bias) } } : {}),
        },
        slots: {
          kernel: tf.keep(
            tf.concat(
              slots.map((v) => v[0]),
              1,
            ),
          ) as tf.Tensor2D,
          bias: tf.keep(
            tf.concat(
              slots.map((v) => v[1]),
              0,
            ),
          ) as tf.Tensor1D,
        },
      };
    });
    this.setStack({ key, ...built });
    return this.stack;
  }

  /** Free the stacked copies. */
  dispose(): void {
    this.setStack(undefined);
  }
}
