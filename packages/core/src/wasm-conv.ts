/**
 * Convolution gradients for the wasm backend, computed with forward convs.
 *
 * tfjs-backend-wasm has no `Conv2DBackpropFilter` kernel, so CNNs cannot
 * train on it out of the box, and its `Conv2DBackpropInput` is a plain loop
 * that is much slower than XNNPACK's forward convolution. Both gradients of a
 * 2-D convolution are themselves convolutions, so we register wasm kernels
 * that rearrange the operands and call the wasm backend's own (XNNPACK)
 * `Conv2D` kernel:
 *
 * - filter gradient: with `x` padded as the forward pass pads it,
 *   `dW[i,j,c,o] = sum_{b,y,x} xpad[b, s*y+i, s*x+j, c] * dy[b,y,x,o]`,
 *   which is a stride-1 convolution of `xpad` seen as `[ci,H,W,b]` with `dy`
 *   seen as a filter `[oh,ow,b,co]`, dilated by the forward stride, cropped
 *   to the filter size and transposed back.
 * - input gradient (stride 1): a "full" convolution of `dy` with the filter
 *   rotated by 180 degrees and its channel axes swapped. Strided convs keep
 *   the stock kernel.
 *
 * Working at the kernel level (rather than overriding the `Conv2D` gradient)
 * also covers fused convolutions, whose gradient calls these kernels directly.
 */
import * as tf from '@tensorflow/tfjs-core';

type Info = tf.TensorInfo;
type AnyBackend = tf.KernelBackend & { disposeData(dataId: tf.DataId): boolean };

interface ConvAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

function kernel(name: string): tf.KernelFunc {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`wasm backend lacks the ${name} kernel`);
  return k.kernelFunc;
}

/** Runs wasm kernels directly and frees every intermediate it made. */
class KernelScope {
  private temps: Info[] = [];
  constructor(private backend: AnyBackend) {}
  run(name: string, inputs: tf.NamedTensorInfoMap, attrs: tf.NamedAttrMap): Info {
    const out = kernel(name)({ inputs, backend: this.backend, attrs }) as Info;
    this.temps.push(out);
    return out;
  }
  /** Release all intermediates except `keep`. */
  finish(keep: Info): Info {
    for (const t of this.temps) if (t !== keep) this.backend.disposeData(t.dataId);
    this.temps = [];
    return keep;
  }
}

function filterGrad({ inputs, backend, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): Info {
  const { x, dy } = inputs as { x: Info; dy: Info };
  const a = attrs as unknown as ConvAttrs & { filterShape: [number, number, number, number] };
  if (a.dataFormat === 'NCHW') throw new Error('wasm Conv2DBackpropFilter supports only NHWC (channelsLast)');
  const info = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], a.filterShape, a.strides, 1, a.pad, a.dimRoundingMode);
  const { top, bottom, left, right } = info.padInfo;
  const [fh, fw] = [info.filterHeight, info.filterWidth];
  const s = new KernelScope(backend as AnyBackend);
  let xp = x;
  if (top || bottom || left || right) {
    xp = s.run('PadV2', { x }, {
      paddings: [
        [0, 0],
        [top, bottom],
        [left, right],
        [0, 0],
      ],
      constantValue: 0,
    } as unknown as tf.NamedAttrMap);
  }
  const xt = s.run('Transpose', { x: xp }, { perm: [3, 1, 2, 0] }); // [ci, Hp, Wp, b]
  const dyt = s.run('Transpose', { x: dy }, { perm: [1, 2, 0, 3] }); // [oh, ow, b, co]
  let g = s.run('Conv2D', { x: xt, filter: dyt }, {
    strides: [1, 1],
    pad: 'valid',
    dataFormat: 'NHWC',
    dilations: [info.strideHeight, info.strideWidth],
    dimRoundingMode: undefined,
  } as unknown as tf.NamedAttrMap); // [ci, >=fh, >=fw, co]
  if (g.shape[1] !== fh || g.shape[2] !== fw) {
    g = s.run('Slice', { x: g }, { begin: [0, 0, 0, 0], size: [g.shape[0], fh, fw, g.shape[3]] });
  }
  const out = s.run('Transpose', { x: g }, { perm: [1, 2, 0, 3] }); // [fh, fw, ci, co]
  return s.finish(out);
}

let fastInputGrad = true;

/** Turn the forward-conv input gradient on or off (benchmarks compare the two). */
export function setWasmFastInputGrad(enabled: boolean): void {
  fastInputGrad = enabled;
}

function makeInputGrad(stock: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    if (!fastInputGrad) return stock(args);
    const { inputs, backend, attrs } = args;
    const { dy, filter } = inputs as { dy: Info; filter: Info };
    const a = attrs as unknown as ConvAttrs & { inputShape: [number, number, number, number] };
    if (a.dataFormat === 'NCHW') return stock(args);
    const info = tf.backend_util.computeConv2DInfo(a.inputShape, filter.shape as [number, number, number, number], a.strides, 1, a.pad, a.dimRoundingMode);
    const [fh, fw] = [info.filterHeight, info.filterWidth];
    const padTop = fh - 1 - info.padInfo.top;
    const padLeft = fw - 1 - info.padInfo.left;
    const padBottom = info.inHeight + fh - 1 - info.outHeight - padTop;
    const padRight = info.inWidth + fw - 1 - info.outWidth - padLeft;
    if (info.strideHeight !== 1 || info.strideWidth !== 1 || Math.min(padTop, padLeft, padBottom, padRight) < 0) {
      return stock(args);
    }
    const s = new KernelScope(backend as AnyBackend);
    const dyp = s.run('PadV2', { x: dy }, {
      paddings: [
        [0, 0],
        [padTop, padBottom],
        [padLeft, padRight],
        [0, 0],
      ],
      constantValue: 0,
    } as unknown as tf.NamedAttrMap);
    const rot = s.run('Reverse', { x: filter }, { dims: [0, 1] });
    const wt = s.run('Transpose', { x: rot }, { perm: [0, 1, 3, 2] }); // [fh, fw, co, ci]
    const out = s.run('Conv2D', { x: dyp, filter: wt }, {
      strides: [1, 1],
      pad: 'valid',
      dataFormat: 'NHWC',
      dilations: [1, 1],
      dimRoundingMode: undefined,
    } as unknown as tf.NamedAttrMap);
    return s.finish(out);
  };
}

let registered = false;

/** Register the forward-conv gradient kernels on the wasm backend (idempotent). */
export function registerWasmConvKernels(): void {
  if (registered) return;
  if (!tf.getKernel('Conv2DBackpropFilter', 'wasm')) {
    tf.registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName: 'wasm', kernelFunc: filterGrad as tf.KernelFunc });
  }
  const stockInput = tf.getKernel('Conv2DBackpropInput', 'wasm');
  if (stockInput) {
    tf.unregisterKernel('Conv2DBackpropInput', 'wasm');
    tf.registerKernel({
      kernelName: 'Conv2DBackpropInput',
      backendName: 'wasm',
      kernelFunc: makeInputGrad(stockInput.kernelFunc),
      setupFunc: stockInput.setupFunc,
    });
  }
  registered = true;
}
