/**
 * Adam with its state kept per key, for the parts of a model that come and
 * go: dFLMoE keys the gate slot and feature-space transform of each received
 * expert by the expert's peer. Every key's variables get exactly
 * `tf.train.adam`'s update, with that key's own moments and step count (a
 * new expert starts from zero moments while the others keep theirs). The
 * keys updated in one step are updated together: their variables, gradients
 * and moments are flattened and concatenated, and the update runs as one
 * chain of a dozen kernels instead of a dozen kernels per variable. A
 * dFLMoE peer trains on packed copies instead (`RowAdam`) and keeps the
 * state here between rounds (`takeState`, `putState`).
 */
import * as tf from '@tensorflow/tfjs-core';

/** One key's state: moments per variable (its shape), and the step bookkeeping. */
export interface KeyState extends RowState {
  vars: tf.Variable[];
  m: tf.Tensor[];
  v: tf.Tensor[];
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

  constructor(
    readonly learningRate: number,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    epsilon?: number,
  ) {
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
    // Kept: a key may be registered inside the caller's tidy.
    const zeros = () => vars.map((v) => tf.keep(tf.zeros(v.shape)));
    this.put(key, { vars, m: zeros(), v: zeros(), steps: 0, acc1: Math.fround(this.beta1), acc2: Math.fround(this.beta2) });
  }

  private put(key: string, st: KeyState): void {
    this.states.set(key, st);
    for (const v of st.vars) this.owners.set(v.name, key);
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
    tf.dispose([...s.m, ...s.v]);
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
    const vars = states.flatMap((s) => s.vars);
    // Bias corrections per element: 1 - beta^t of the element's key.
    const c1 = new Float32Array(vars.reduce((a, v) => a + v.size, 0));
    const c2 = new Float32Array(c1.length);
    let off = 0;
    for (const s of states) {
      const n = s.vars.reduce((a, v) => a + v.size, 0);
      c1.fill(Math.fround(1 - s.acc1), off, off + n);
      c2.fill(Math.fround(1 - s.acc2), off, off + n);
      off += n;
    }
    const flat = (ts: tf.Tensor[]) => (ts.length === 1 ? tf.reshape(ts[0], [-1]) : tf.concat(ts.map((t) => tf.reshape(t, [-1]))));
    const unflat = (t: tf.Tensor) => (vars.length === 1 ? [t] : tf.split(t, vars.map(size))).map((p, i) => tf.reshape(p, vars[i].shape));
    tf.tidy(() => {
      const g = flat(vars.map((v) => grads[v.name] ?? tf.zerosLike(v)));
      const m = flat(states.flatMap((s) => s.m));
      const v = flat(states.flatMap((s) => s.v));
      const newM = tf.add(tf.mul(m, this.beta1), tf.mul(g, 1 - this.beta1));
      const newV = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
      const bcM = tf.div(newM, tf.tensor1d(c1));
      const bcV = tf.div(newV, tf.tensor1d(c2));
      const newValue = tf.add(tf.mul(tf.div(bcM, tf.add(tf.sqrt(bcV), this.epsilon)), -this.learningRate), flat(vars));
      const ms = unflat(newM);
      const vs = unflat(newV);
      let k = 0;
      for (const s of states) {
        tf.dispose([...s.m, ...s.v]);
        s.m = s.vars.map((_, i) => tf.keep(ms[k + i]));
        s.v = s.vars.map((_, i) => tf.keep(vs[k + i]));
        k += s.vars.length;
      }
      unflat(newValue).forEach((x, i) => vars[i].assign(x));
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
    return [
      { name: 'iter', tensor: tf.scalar(s.steps, 'int32') },
      ...s.m.map((t, i) => ({ name: `${s.vars[i].name}/m`, tensor: tf.clone(t) })),
      ...s.v.map((t, i) => ({ name: `${s.vars[i].name}/v`, tensor: tf.clone(t) })),
    ];
  }

  /** Put back what `keyWeights` gave (or what `tf.train.adam` saved for these variables). */
  setKeyWeights(key: string, vars: tf.Variable[], ws: NamedTensor[]): void {
    if (ws.length !== 1 + 2 * vars.length)
      throw new Error(`KeyedAdam: ${key} has ${vars.length} variables, so its state has ${1 + 2 * vars.length} tensors, not ${ws.length}`);
    ws.slice(1).forEach((w, i) => {
      const v = vars[i % vars.length];
      if (w.tensor.size !== v.size) throw new Error(`KeyedAdam: state tensor ${w.name} of ${key} has ${w.tensor.size} values, its variable ${v.size}`);
    });
    const steps = ws[0].tensor.dataSync()[0];
    if (!Number.isInteger(steps) || steps < 0) throw new Error(`KeyedAdam: bad step count ${steps} for ${key}`);
    this.remove(key);
    const n = vars.length;
    const copy = (w: NamedTensor, i: number) => tf.keep(tf.reshape(tf.clone(w.tensor), vars[i].shape));
    this.put(key, {
      vars,
      m: tf.tidy(() => ws.slice(1, 1 + n).map(copy)),
      v: tf.tidy(() => ws.slice(1 + n).map(copy)),
      steps,
      acc1: Math.fround(Math.pow(this.beta1, steps + 1)),
      acc2: Math.fround(Math.pow(this.beta2, steps + 1)),
    });
  }

  /**
   * @internal Hand out `key`'s state (moments per variable, step count and
   * bias-correction accumulators) and forget it; a key not seen yet gets
   * zero state. For training on packed copies (see `RowAdam`).
   */
  takeState(key: string, vars: tf.Variable[]): KeyState {
    this.register(key, vars);
    const s = this.states.get(key)!;
    this.states.delete(key);
    for (const v of s.vars) this.owners.delete(v.name);
    return s;
  }

  /**
   * @internal `takeState`, except that a key without state for these
   * variables (which `takeState` would start from zero moments) gets no
   * moment tensors: the caller supplies the zeros.
   */
  takeStateLazily(key: string, vars: tf.Variable[]): RowState & { m?: tf.Tensor[]; v?: tf.Tensor[] } {
    const old = this.states.get(key);
    if (old && old.vars.length === vars.length && old.vars.every((v, i) => v === vars[i])) return this.takeState(key, vars);
    this.remove(key);
    return { steps: 0, acc1: Math.fround(this.beta1), acc2: Math.fround(this.beta2) };
  }

  /** @internal Put back state that `takeState` handed out (takes ownership of its moments). */
  putState(key: string, st: KeyState): void {
    this.remove(key);
    this.put(key, st);
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
    readonly learningRate: number,
    readonly vars: tf.Variable[],
    private readonly axes: number[],
    readonly rows: RowState[],
    readonly m: tf.Tensor[],
    readonly v: tf.Tensor[],
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    epsilon?: number,
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
