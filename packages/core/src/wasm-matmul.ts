/**
 * Transposed matrix products for the wasm backend at the speed of plain ones.
 *
 * tfjs-backend-wasm's `BatchMatMul` runs `a @ b` through XNNPACK-speed code
 * (about 26 GFLOP/s here for 64x784 by 784x256), but with `transposeA` or
 * `transposeB` it falls back to a loop about ten times slower — and the
 * backward pass of every dense layer uses exactly those. This override
 * transposes the flagged operand with the `Transpose` kernel first and then
 * calls the stock kernel without flags. Results differ from the stock kernel
 * by floating-point rounding only (the sums run in another order). Single
 * (unbatched) products whose right operand is large next to the left one are
 * computed transposed (`swapPays`), which is bit for bit the same product and
 * spares XNNPACK packing the large operand.
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
let swapMatMul = true;

/** Turn the transposed computation of single products (`swapPays`) on or off (benchmarks compare it). */
export function setWasmMatMulSwap(enabled: boolean): void {
  swapMatMul = enabled;
}

/** Turn the transpose-first path on or off (tests and benchmarks compare it with the stock kernel). */
export function setWasmFastMatMul(enabled: boolean): void {
  fastMatMul = enabled;
}

/**
 * Nanoseconds per element, measured here: XNNPACK packing the right operand
 * (it packs it afresh whenever that tensor is new, which in training is every
 * step), a `Transpose`, and the fixed cost of one more kernel call.
 */
const PACK_NS = 7;
const MOVE_NS = 1.2;
const CALL_NS = 10_000;

/**
 * Whether `op(A) @ op(B)` (`M x K` by `K x N`) costs less computed as
 * `(op(B)^T @ op(A)^T)^T`: XNNPACK then packs the `K x M` operand instead
 * of the `K x N` one (a dense layer's forward product packs its weights, its
 * input gradient packs the transposed weights; either way a small batch
 * swapped in is much cheaper), at the price of transposing the result.
 * Both orders add the same products in the same order over `K`: the results
 * are bit for bit the same (tested on random shapes).
 */
export function swapPays(m: number, k: number, n: number, transposeA: boolean, transposeB: boolean): boolean {
  const move = (size: number) => MOVE_NS * size + CALL_NS;
  const direct = PACK_NS * k * n + (transposeA ? move(m * k) : 0) + (transposeB ? move(k * n) : 0);
  const swapped = PACK_NS * k * m + (transposeB ? 0 : move(k * n)) + (transposeA ? 0 : move(m * k)) + move(m * n);
  return swapped < direct;
}

function makeBatchMatMul(stock: tf.KernelFunc, transpose: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { inputs, attrs } = args;
    const { transposeA = false, transposeB = false } = (attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
    if (!fastMatMul) return stock(args);
    const backend = args.backend as AnyBackend;
    const { a, b } = inputs as { a: Info; b: Info };
    const temps: Info[] = [];
    const flip = (t: Info): Info => {
      const out = transpose({ inputs: { x: t }, backend, attrs: { perm: swapLast(t.shape.length) } }) as Info;
      temps.push(out);
      return out;
    };
    const plain = { ...attrs, transposeA: false, transposeB: false };
    const [ra, rb] = [a.shape.length, b.shape.length];
    // XNNPACK serves only single products; batched ones take the stock loop either way.
    const single = a.shape.slice(0, -2).every((d) => d === 1) && b.shape.slice(0, -2).every((d) => d === 1);
    const m = a.shape[transposeA ? ra - 1 : ra - 2]!;
    const k = a.shape[transposeA ? ra - 2 : ra - 1]!;
    const n = b.shape[transposeB ? rb - 2 : rb - 1]!;
    let out: Info;
    if (swapMatMul && single && swapPays(m, k, n, transposeA, transposeB)) {
      const outT = stock({ inputs: { a: transposeB ? b : flip(b), b: transposeA ? a : flip(a) }, backend, attrs: plain }) as Info;
      temps.push(outT);
      out = transpose({ inputs: { x: outT }, backend, attrs: { perm: swapLast(outT.shape.length) } }) as Info;
    } else if (!transposeA && !transposeB) {
      return stock(args);
    } else {
      out = stock({ inputs: { a: transposeA ? flip(a) : a, b: transposeB ? flip(b) : b }, backend, attrs: plain }) as Info;
    }
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
    kernelName: 'BatchMatMul',
    backendName: 'wasm',
    kernelFunc: makeBatchMatMul(stock.kernelFunc, transpose.kernelFunc),
    setupFunc: stock.setupFunc,
  });
  registered = true;
}
