/**
 * Transposed matrix products for the wasm backend at the speed of plain ones.
 *
 * tfjs-backend-wasm's `BatchMatMul` runs `a @ b` through XNNPACK-speed code
 * (about 26 GFLOP/s here for 64x784 by 784x256), but with `transposeA` or
 * `transposeB` it falls back to a loop about ten times slower — and the
 * backward pass of every dense layer uses exactly those. This override
 * transposes the flagged operand with the `Transpose` kernel first and then
 * calls the stock kernel without flags. Results differ from the stock kernel
 * by floating-point rounding only (the sums run in another order).
 *
 * `DFLMOE_WASM_KERNELS=stock` leaves the stock kernel in place, so runs can be
 * compared.
 */
import * as tf from '@tensorflow/tfjs-core';

type Info = tf.TensorInfo;
type AnyBackend = tf.KernelBackend & { disposeData(dataId: tf.DataId): boolean };

/** Whether `DFLMOE_WASM_KERNELS=stock` asks for tfjs's own wasm kernels only. */
export function stockWasmKernels(): boolean {
  return typeof process !== 'undefined' && process.env?.DFLMOE_WASM_KERNELS === 'stock';
}

function swapLast(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1]!, perm[rank - 2]!];
  return perm;
}

let fastMatMul = true;

/** Turn the transpose-first path on or off (tests and benchmarks compare it with the stock kernel). */
export function setWasmFastMatMul(enabled: boolean): void {
  fastMatMul = enabled;
}

function makeBatchMatMul(stock: tf.KernelFunc, transpose: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { inputs, attrs } = args;
    const { transposeA, transposeB } = (attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
    if (!fastMatMul || (!transposeA && !transposeB)) return stock(args);
    const backend = args.backend as AnyBackend;
    let { a, b } = inputs as { a: Info; b: Info };
    const temps: Info[] = [];
    const flip = (t: Info): Info => {
      const out = transpose({ inputs: { x: t }, backend, attrs: { perm: swapLast(t.shape.length) } }) as Info;
      temps.push(out);
      return out;
    };
    if (transposeA) a = flip(a);
    if (transposeB) b = flip(b);
    const out = stock({ inputs: { a, b }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } }) as Info;
    for (const t of temps) backend.disposeData(t.dataId);
    return out;
  };
}

let registered = false;

/** Register the transpose-first `BatchMatMul` on the wasm backend (idempotent; no-op with `DFLMOE_WASM_KERNELS=stock`). */
export function registerWasmMatMulKernels(): void {
  if (registered || stockWasmKernels()) return;
  const stock = tf.getKernel('BatchMatMul', 'wasm');
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (!stock || !transpose) return;
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({
    kernelName: 'BatchMatMul', backendName: 'wasm',
    kernelFunc: makeBatchMatMul(stock.kernelFunc, transpose.kernelFunc), setupFunc: stock.setupFunc,
  });
  registered = true;
}

