/**
 * Max-pooling gradient for the wasm backend, in JavaScript over the wasm heap.
 *
 * tfjs-backend-wasm's `MaxPoolGrad` walks the tensors channel by channel
 * (a stride of C floats between neighbours), which made it the slowest
 * kernel of a CNN's training step here (a third of the step for the small CNN
 * of `npm run bench:peer`). This kernel computes the same thing with the
 * channel innermost: it finds each window's maximum as the stock kernel does
 * (the last position in the window whose value is >= the running maximum,
 * which starts at FLT_MIN at position 0) and gives each input position the sum,
 * over the windows that contain it and in the stock kernel's order, of the
 * window's gradient times 1 where the position is that window's maximum and 0
 * elsewhere, in float32 (so a NaN or infinite gradient spreads over its window
 * as it does there). The results are bit for bit the stock kernel's.
 *
 * `DFLMOE_WASM_KERNELS=stock` leaves the stock kernel in place.
 */
import * as tf from '@tensorflow/tfjs-core';
import { stockWasmKernels } from './wasm-matmul.js';

type Info = tf.TensorInfo;
interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(t: Info): Float32Array;
}

/** The smallest positive normal float32: the stock kernel's starting maximum. */
const FLT_MIN = 1.1754943508222875e-38;

interface PoolInfo {
  batch: number;
  channels: number;
  inH: number;
  inW: number;
  outH: number;
  outW: number;
  strideH: number;
  strideW: number;
  filterH: number;
  filterW: number;
  padTop: number;
  padLeft: number;
}

/**
 * `dx` for one pooling: window by window (in the stock kernel's order, so
 * that every input position sums its windows in the same order), find each
 * channel's maximum, then add the window's gradient to the maximum and 0 times
 * it to the other positions (as the stock kernel does: a NaN or infinite
 * gradient spreads over the window there too).
 */
function poolGrad(x: Float32Array, g: Float32Array, dx: Float32Array, p: PoolInfo): void {
  const { channels: C, inH, inW, outH, outW, strideH, strideW, filterH, filterW, padTop, padLeft } = p;
  const rowStride = inW * C;
  dx.fill(0);
  for (let b = 0; b < p.batch; b++) {
    for (let oy = 0; oy < outH; oy++) {
      const r0 = oy * strideH - padTop;
      const rMin = Math.max(r0, 0);
      const rMax = Math.min(inH, filterH + r0);
      for (let ox = 0; ox < outW; ox++) {
        const c0 = ox * strideW - padLeft;
        const cMin = Math.max(c0, 0);
        const cMax = Math.min(inW, filterW + c0);
        const o = ((b * outH + oy) * outW + ox) * C;
        const first = ((b * inH + rMin) * inW + cMin) * C;
        for (let c = 0; c < C; c++) {
          let best = FLT_MIN;
          let at = 0;
          for (let r = rMin, rq = first + c; r < rMax; r++, rq += rowStride) {
            for (let col = cMin, q = rq; col < cMax; col++, q += C) {
              const v = x[q]!;
              if (v >= best) {
                best = v;
                at = q;
              }
            }
          }
          const v = g[o + c]!;
          for (let r = rMin, rq = first + c; r < rMax; r++, rq += rowStride) {
            for (let col = cMin, q = rq; col < cMax; col++, q += C) dx[q] = dx[q]! + v * (at === q ? 1 : 0);
          }
        }
      }
    }
  }
}

function maxPoolGrad(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): Info {
  const { dy, input } = args.inputs as { dy: Info; input: Info };
  const { filterSize, strides, pad, dimRoundingMode } = args.attrs as unknown as {
    filterSize: number | [number, number];
    strides: number | [number, number];
    pad: 'valid' | 'same' | number;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  const p: PoolInfo = {
    batch: info.batchSize,
    channels: info.inChannels,
    inH: info.inHeight,
    inW: info.inWidth,
    outH: info.outHeight,
    outW: info.outWidth,
    strideH: info.strideHeight,
    strideW: info.strideWidth,
    filterH: info.effectiveFilterHeight,
    filterW: info.effectiveFilterWidth,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
  };
  const backend = args.backend as HeapBackend;
  const out = backend.makeOutput(input.shape, 'float32');
  // Views after the allocation: it may have grown (and so replaced) the heap.
  const x = backend.typedArrayFromHeap(input);
  const g = backend.typedArrayFromHeap(dy);
  const dx = backend.typedArrayFromHeap(out);
  poolGrad(x, g, dx, p);
  return out;
}

let fastPoolGrad = true;

/** Turn the JavaScript max-pooling gradient on or off (tests compare it with the stock kernel). */
export function setWasmFastPoolGrad(enabled: boolean): void {
  fastPoolGrad = enabled;
}

let registered = false;

/** Register the JavaScript `MaxPoolGrad` on the wasm backend (idempotent; no-op with `DFLMOE_WASM_KERNELS=stock`). */
export function registerWasmPoolKernels(): void {
  if (registered || stockWasmKernels()) return;
  const stock = tf.getKernel('MaxPoolGrad', 'wasm');
  if (!stock) return;
  tf.unregisterKernel('MaxPoolGrad', 'wasm');
  tf.registerKernel({
    kernelName: 'MaxPoolGrad',
    backendName: 'wasm',
    setupFunc: stock.setupFunc,
    kernelFunc: ((args) => (fastPoolGrad ? maxPoolGrad(args) : stock.kernelFunc(args))) as tf.KernelFunc,
  });
  registered = true;
}
