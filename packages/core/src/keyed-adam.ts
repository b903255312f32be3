/**
 * Adam with its state kept per key, for the parts of a model that come and
 * go: dFLMoE keys the gate slot and feature-space transform of each received
 * expert by the expert's peer. Every key's variables get exactly
 * `tf.train.adam`'s update, with that key's own moments and step count (a
 * new expert starts from zero moments while the others keep theirs), but
 * the keys updated in one step are updated together: their variables,
 * gradients and moments are flattened and concatenated, and the update runs
 * as one chain of a dozen kernels instead of a dozen kernels per variable.
 */
import * as tf from '@tensorflow/tfjs-core';

interface KeyState {
  vars: tf.Variable[];
  /** First and second moments of all of the key's variables, flattened in `vars` order. */
  m: tf.Tensor1D;
  v: tf.Tensor1D;
  steps: number;
  /** beta^(steps + 1) in float32, as tfjs's Adam keeps it. */
  acc1: number;
  acc2: number;
}

const size = (v: tf.Tensor) => v.size;

export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

export class KeyedAdam extends tf.Optimizer {
  static get className(): string {
    return 'KeyedAdam';
  }

  private states = new Map<string, KeyState>();
  /** Variable name -> key. */
  private owners = new Map<string, string>();
  readonly epsilon: number;

  constructor(readonly learningRate: number, readonly beta1 = 0.9, readonly beta2 = 0.999, epsilon?: number) {
    super();
    this.epsilon = epsilon ?? tf.backend().epsilon();
  }

  /**
   * Give `key` these variables (in this order: its state follows it). A key
   * registered again with the same variables keeps its state; with other
   * variables it starts afresh.
   */
  register(key: string, vars: tf.Variable[]): void {
    const old = this.states.get(key);
    if (old && old.vars.length === vars.length && old.vars.every((v, i) => v === vars[i])) return;
    this.remove(key);
    const n = vars.reduce((a, v) => a + size(v), 0);
    // Kept: a key may be registered inside the caller's tidy.
    this.states.set(key, {
      vars, m: tf.keep(tf.zeros([n])), v: tf.keep(tf.zeros([n])), steps: 0, acc1: Math.fround(this.beta1), acc2: Math.fround(this.beta2),
    });
    for (const v of vars) this.owners.set(v.name, key);
  }

  has(key: string): boolean {
    return this.states.has(key);
  }

  keys(): string[] {
    return [...this.states.keys()];
  }

  /** Steps taken for `key` (0 when unknown). */
  steps(key: string): number {
    return this.states.get(key)?.steps ?? 0;
  }

  /** Forget `key`'s state. */
  remove(key: string): void {
    const s = this.states.get(key);
    if (!s) return;
    tf.dispose([s.m, s.v]);
    for (const v of s.vars) this.owners.delete(v.name);
    this.states.delete(key);
  }

  /**
   * One Adam step for every key that owns one of these variables. A key's
   * variable without a gradient here is updated as if its gradient were 0.
   * Variables of no registered key are refused.
   */
  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const grads: tf.NamedTensorMap = Array.isArray(variableGradients)
      ? Object.fromEntries(variableGradients.map((g) => [g.name, g.tensor]))
      : variableGradients;
    const keys: string[] = [];
    for (const name of Object.keys(grads)) {
      const key = this.owners.get(name);
      if (key === undefined) throw new Error(`KeyedAdam: variable ${name} belongs to no registered key`);
      if (!keys.includes(key)) keys.push(key);
    }
    if (keys.length === 0) return;
    const states = keys.map((k) => this.states.get(k)!);
    const total = states.reduce((a, s) => a + s.m.size, 0);
    // Bias corrections per element: 1 - beta^t of the element's key.
    const c1 = new Float32Array(total);
    const c2 = new Float32Array(total);
    let off = 0;
    for (const s of states) {
      c1.fill(Math.fround(1 - s.acc1), off, off + s.m.size);
      c2.fill(Math.fround(1 - s.acc2), off, off + s.m.size);
      off += s.m.size;
    }
    const vars = states.flatMap((s) => s.vars);
    const flat = (ts: tf.Tensor[]) => (ts.length === 1 ? tf.reshape(ts[0], [-1]) : tf.concat(ts.map((t) => tf.reshape(t, [-1]))));
    tf.tidy(() => {
      const g = flat(vars.map((v) => grads[v.name] ?? tf.zerosLike(v)));
      const m = states.length === 1 ? states[0].m : tf.concat(states.map((s) => s.m));
      const v = states.length === 1 ? states[0].v : tf.concat(states.map((s) => s.v));
      const newM = tf.add(tf.mul(m, this.beta1), tf.mul(g, 1 - this.beta1));
      const newV = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
      const bcM = tf.div(newM, tf.tensor1d(c1));
      const bcV = tf.div(newV, tf.tensor1d(c2));
      const value = flat(vars);
      const newValue = tf.add(tf.mul(tf.div(bcM, tf.add(tf.sqrt(bcV), this.epsilon)), -this.learningRate), value);
      const ms = states.length === 1 ? [newM] : tf.split(newM, states.map((s) => s.m.size));
      const vs = states.length === 1 ? [newV] : tf.split(newV, states.map((s) => s.v.size));
      states.forEach((s, i) => {
        tf.dispose([s.m, s.v]);
        s.m = tf.keep(ms[i]) as tf.Tensor1D;
        s.v = tf.keep(vs[i]) as tf.Tensor1D;
      });
      const values = vars.length === 1 ? [newValue] : tf.split(newValue, vars.map(size));
      vars.forEach((x, i) => x.assign(tf.reshape(values[i], x.shape)));
    });
    for (const s of states) {
      s.steps++;
      s.acc1 = Math.fround(s.acc1 * Math.fround(this.beta1));
      s.acc2 = Math.fround(s.acc2 * Math.fround(this.beta2));
    }
    this.incrementIterations();
  }

  /**
   * `key`'s state in `tf.train.adam`'s `getWeights` layout: the step count,
   * then the first moments and the second moments per variable. Fresh
   * tensors: the caller disposes them.
   */
  keyWeights(key: string): NamedTensor[] {
    const s = this.states.get(key);
    if (!s) throw new Error(`KeyedAdam: no state for ${key}`);
    return tf.tidy(() => {
      const parts = (t: tf.Tensor1D) => (s.vars.length === 1 ? [t] : tf.split(t, s.vars.map(size))).map((p, i) => tf.reshape(p, s.vars[i].shape));
      const m = parts(s.m);
      const v = parts(s.v);
      return [
        { name: 'iter', tensor: tf.scalar(s.steps, 'int32') },
        ...m.map((t, i) => ({ name: `${s.vars[i].name}/m`, tensor: t })),
        ...v.map((t, i) => ({ name: `${s.vars[i].name}/v`, tensor: t })),
      ];
    });
  }

  /** Put back what `keyWeights` gave (or what `tf.train.adam` saved for these variables). */
  setKeyWeights(key: string, vars: tf.Variable[], ws: NamedTensor[]): void {
    if (ws.length !== 1 + 2 * vars.length) throw new Error(`KeyedAdam: ${key} has ${vars.length} variables, so its state has ${1 + 2 * vars.length} tensors, not ${ws.length}`);
    ws.slice(1).forEach((w, i) => {
      const v = vars[i % vars.length];
      if (w.tensor.size !== v.size) throw new Error(`KeyedAdam: state tensor ${w.name} of ${key} has ${w.tensor.size} values, its variable ${v.size}`);
    });
    const steps = ws[0].tensor.dataSync()[0];
    if (!Number.isInteger(steps) || steps < 0) throw new Error(`KeyedAdam: bad step count ${steps} for ${key}`);
    this.register(key, vars);
    const s = this.states.get(key)!;
    tf.dispose([s.m, s.v]);
    const n = vars.length;
    s.m = tf.tidy(() => tf.concat(ws.slice(1, 1 + n).map((w) => tf.reshape(w.tensor, [-1])))) as tf.Tensor1D;
    s.v = tf.tidy(() => tf.concat(ws.slice(1 + n).map((w) => tf.reshape(w.tensor, [-1])))) as tf.Tensor1D;
    s.steps = steps;
    s.acc1 = Math.fround(Math.pow(this.beta1, steps + 1));
    s.acc2 = Math.fround(Math.pow(this.beta2, steps + 1));
  }

  /**
   * @internal Hand out `key`'s state (its moments flattened in variable
   * order, step count and bias-correction accumulators) and forget it; a new
   * key gets zero state. For training on packed copies (see `RowAdam`).
   */
  takeState(key: string, vars: tf.Variable[]): RowState & { m: tf.Tensor1D; v: tf.Tensor1D } {
    this.register(key, vars);
    const s = this.states.get(key)!;
    this.states.delete(key);
    for (const v of s.vars) this.owners.delete(v.name);
    return { m: s.m, v: s.v, steps: s.steps, acc1: s.acc1, acc2: s.acc2 };
  }

  /** @internal Put back what `takeState` handed out (takes ownership of `m` and `v`). */
  putState(key: string, vars: tf.Variable[], st: RowState & { m: tf.Tensor1D; v: tf.Tensor1D }): void {
    this.remove(key);
    this.states.set(key, { vars, m: st.m, v: st.v, steps: st.steps, acc1: st.acc1, acc2: st.acc2 });
    for (const v of vars) this.owners.set(v.name, key);
  }

  override dispose(): void {
    for (const k of this.keys()) this.remove(k);
  }

  getConfig(): tf.serialization.ConfigDict {
    return { learningRate: this.learningRate, beta1: this.beta1, beta2: this.beta2, epsilon: this.epsilon };
  }
}

/** Adam bookkeeping of one row (one expert): steps taken and beta^(steps + 1) in float32. */
export interface RowState {
  steps: number;
  acc1: number;
  acc2: number;
}

/**
 * Adam over variables that stack one row per expert along an axis (FST
 * kernels `[K, d, d]`, gate slots `[hidden, K]`, ...), each row with its own
 * step count: exactly `tf.train.adam` per expert, in a dozen kernels per
 * stacked variable whatever K is.
 */
export class RowAdam extends tf.Optimizer {
  static get className(): string {
    return 'RowAdam';
  }

  readonly epsilon: number;

  /**
   * `vars[i]` stacks its rows along `axes[i]`; `m[i]` and `v[i]` are its
   * moments (same shape; taken over); `rows` the per-row bookkeeping.
   */
  constructor(
    readonly learningRate: number, readonly vars: tf.Variable[], private readonly axes: number[], readonly rows: RowState[],
    readonly m: tf.Tensor[], readonly v: tf.Tensor[], readonly beta1 = 0.9, readonly beta2 = 0.999, epsilon?: number,
  ) {
    super();
    this.epsilon = epsilon ?? tf.backend().epsilon();
    vars.forEach((x, i) => {
      if (x.shape[axes[i]] !== rows.length) throw new Error(`RowAdam: variable ${i} has ${x.shape[axes[i]]} rows on axis ${axes[i]}, expected ${rows.length}`);
    });
  }

  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const grads: tf.NamedTensorMap = Array.isArray(variableGradients)
      ? Object.fromEntries(variableGradients.map((g) => [g.name, g.tensor]))
      : variableGradients;
    const c1 = Float32Array.from(this.rows, (r) => Math.fround(1 - r.acc1));
    const c2 = Float32Array.from(this.rows, (r) => Math.fround(1 - r.acc2));
    tf.tidy(() => {
      const c1t = tf.tensor1d(c1);
      const c2t = tf.tensor1d(c2);
      this.vars.forEach((x, i) => {
        const g = grads[x.name];
        if (!g) return;
        const shape = x.shape.map((n, a) => (a === this.axes[i] ? n : 1));
        const newM = tf.add(tf.mul(this.m[i], this.beta1), tf.mul(g, 1 - this.beta1));
        const newV = tf.add(tf.mul(this.v[i], this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
        const bcM = tf.div(newM, tf.reshape(c1t, shape));
        const bcV = tf.div(newV, tf.reshape(c2t, shape));
        x.assign(tf.add(tf.mul(tf.div(bcM, tf.add(tf.sqrt(bcV), this.epsilon)), -this.learningRate), x));
        tf.dispose([this.m[i], this.v[i]]);
        this.m[i] = tf.keep(newM);
        this.v[i] = tf.keep(newV);
      });
    });
    for (const r of this.rows) {
      r.steps++;
      r.acc1 = Math.fround(r.acc1 * Math.fround(this.beta1));
      r.acc2 = Math.fround(r.acc2 * Math.fround(this.beta2));
    }
    this.incrementIterations();
  }

  override dispose(): void {
    tf.dispose([...this.m, ...this.v]);
  }

  getConfig(): tf.serialization.ConfigDict {
    return { learningRate: this.learningRate, beta1: this.beta1, beta2: this.beta2, epsilon: this.epsilon };
  }
}
