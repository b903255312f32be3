/**
 * `tf.train.adam` in one kernel per small variable on the wasm backend.
 *
 * tfjs's Adam runs about a dozen elementwise kernels per variable and step,
 * each with its own call overhead; for the small variables of a site's head,
 * gate and biases that overhead is most of the update. This optimizer keeps
 * `tf.AdamOptimizer`'s state, layout and saving (it is one), and on wasm
 * replaces the chain of a small variable by the `DflmoeAdamStep` kernel,
 * a JavaScript loop over the wasm heap that does the same float32 operations
 * in the same order, each rounded to float32 (`Math.fround`): the same bits
 * as the stock chain (IEEE float32 `+ * / sqrt` are correctly rounded, and so
 * is a double result rounded once to float32). Other backends, or
 * `DFLMOE_WASM_KERNELS=stock`, run tfjs's own update.
 */
import * as tf from '@tensorflow/tfjs-core';
import { stockWasmKernels } from './wasm-matmul.js';

type Info = tf.TensorInfo;
interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(t: Info): Float32Array;
}

const KERNEL = 'DflmoeAdamStep';
interface Slot {
  originalName: string;
  variable: tf.Variable;
}
const f = Math.fround;

interface StepAttrs {
  beta1: number;
  beta2: number;
  learningRate: number;
  epsilon: number;
}

/** The update of `adamStep`, element by element in float32, in tfjs's order of operations. */
function adamLoop(
  X: Float32Array,
  M: Float32Array,
  V: Float32Array,
  G: Float32Array,
  nx: Float32Array,
  nm: Float32Array,
  nv: Float32Array,
  oneMinusAcc1: number,
  oneMinusAcc2: number,
  a: StepAttrs,
): void {
  // The scalars tfjs makes of these numbers, in float32.
  const b1 = f(a.beta1);
  const b2 = f(a.beta2);
  const r1 = f(1 - a.beta1);
  const r2 = f(1 - a.beta2);
  const eps = f(a.epsilon);
  const step = f(-a.learningRate);
  const n = X.length;
  for (let i = 0; i < n; i++) {
    const gi = G[i]!;
    const mi = f(f(M[i]! * b1) + f(gi * r1));
    const vi = f(f(V[i]! * b2) + f(f(gi * gi) * r2));
    nm[i] = mi;
    nv[i] = vi;
    const denom = f(f(Math.sqrt(f(vi / oneMinusAcc2))) + eps);
    nx[i] = f(f(f(f(mi / oneMinusAcc1) / denom) * step) + X[i]!);
  }
}

/** Inputs: the variable `x`, its moments `m` and `v`, gradient `g`, and `1 - beta^t` as scalars `c1`, `c2`. Outputs: new x, m, v. */
function adamStep(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): Info[] {
  const { x, m, v, g, c1, c2 } = args.inputs as Record<'x' | 'm' | 'v' | 'g' | 'c1' | 'c2', Info>;
  const a = args.attrs as unknown as StepAttrs;
  const backend = args.backend as HeapBackend;
  const outs = [x, m, v].map((t) => backend.makeOutput(t.shape, 'float32'));
  // Views after the allocations: they may have grown (and so replaced) the heap.
  const [X, M, V, G] = [x, m, v, g].map((t) => backend.typedArrayFromHeap(t));
  const [nx, nm, nv] = outs.map((t) => backend.typedArrayFromHeap(t));
  const oneMinusAcc1 = backend.typedArrayFromHeap(c1)[0]!;
  const oneMinusAcc2 = backend.typedArrayFromHeap(c2)[0]!;
  adamLoop(X!, M!, V!, G!, nx!, nm!, nv!, oneMinusAcc1, oneMinusAcc2, a);
  return outs;
}

/**
 * Variables up to this many elements take the kernel; larger ones tfjs's
 * chain, whose SIMD kernels beat a JavaScript loop once the per-kernel cost
 * no longer dominates (measured here: 256 elements 60 against 130 us a step,
 * 4,096 about even, 200,704 3.2 against 1.2 ms).
 */
const FUSED_MAX_SIZE = 4096;

/** tfjs's own Adam update of one variable (as `tf.AdamOptimizer` runs it): new value, m, v. */
function stockStep(x: tf.Tensor, m: tf.Tensor, v: tf.Tensor, g: tf.Tensor, c1: tf.Tensor, c2: tf.Tensor, a: StepAttrs): tf.Tensor[] {
  const nm = tf.add(tf.mul(m, a.beta1), tf.mul(g, 1 - a.beta1));
  const nv = tf.add(tf.mul(v, a.beta2), tf.mul(tf.square(g), 1 - a.beta2));
  const update = tf.div(tf.div(nm, c1), tf.add(tf.sqrt(tf.div(nv, c2)), a.epsilon));
  return [tf.add(tf.mul(update, -a.learningRate), x), nm, nv];
}

let registered = false;

/** Register `DflmoeAdamStep` on the wasm backend (idempotent; no-op with `DFLMOE_WASM_KERNELS=stock`). */
export function registerWasmAdamKernel(): void {
  if (registered || stockWasmKernels() || tf.getKernel(KERNEL, 'wasm')) return;
  tf.registerKernel({ kernelName: KERNEL, backendName: 'wasm', kernelFunc: adamStep as unknown as tf.KernelFunc });
  registered = true;
}

/** `tf.train.adam`, with one kernel per small variable and step where the backend has `DflmoeAdamStep`. */
export class FusedAdam extends tf.AdamOptimizer {
  constructor(learningRate: number, beta1 = 0.9, beta2 = 0.999, epsilon?: number) {
    super(learningRate, beta1, beta2, epsilon);
  }

  override applyGradients(variableGradients: Parameters<tf.AdamOptimizer['applyGradients']>[0]): void {
    if (!tf.getKernel(KERNEL, tf.getBackend())) {
      super.applyGradients(variableGradients);
      return;
    }
    // The fields tfjs's AdamOptimizer keeps its state in (protected there).
    const self = this as unknown as {
      accBeta1: tf.Variable;
      accBeta2: tf.Variable;
      accumulatedFirstMoment: Slot[];
      accumulatedSecondMoment: Slot[];
    };
    const names = Array.isArray(variableGradients) ? variableGradients.map((v) => v.name) : Object.keys(variableGradients);
    tf.tidy(() => {
      const c1 = tf.sub(1, self.accBeta1);
      const c2 = tf.sub(1, self.accBeta2);
      const attrs: StepAttrs = { beta1: this.beta1, beta2: this.beta2, learningRate: this.learningRate, epsilon: this.epsilon };
      names.forEach((name, i) => {
        const value = tf.engine().registeredVariables[name]!;
        self.accumulatedFirstMoment[i] ??= { originalName: `${name}/m`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        self.accumulatedSecondMoment[i] ??= { originalName: `${name}/v`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        const g = Array.isArray(variableGradients) ? variableGradients[i]!.tensor : variableGradients[name];
        if (g == null) return;
        const m = self.accumulatedFirstMoment[i]!.variable;
        const v = self.accumulatedSecondMoment[i]!.variable;
        const [nx, nm, nv] =
          value.size <= FUSED_MAX_SIZE
            ? (tf.engine().runKernel(KERNEL, { x: value, m, v, g, c1, c2 }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[])
            : stockStep(value, m, v, g, c1, c2, attrs);
        m.assign(nm!);
        v.assign(nv!);
        value.assign(nx!);
      });
      self.accBeta1.assign(tf.mul(self.accBeta1, this.beta1));
      self.accBeta2.assign(tf.mul(self.accBeta2, this.beta2));
    });
    this.incrementIterations();
  }
}
