import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import fc from 'fast-check';
import {
  FusedAdam,
  registerWasmAdamKernel,
  registerWasmMatMulKernels,
  registerWasmPoolKernels,
  setWasmFastMatMul,
  setWasmFastPoolGrad,
  swapPays,
} from '@dflmoe/core/internal';
import { mulberry32 } from '@dflmoe/data/internal';

/** The float32 bit patterns of a tensor's values (so that -0, NaN and every rounding count). */
const bits = (t: tf.Tensor) => Array.from(new Uint32Array(Float32Array.from(t.dataSync()).buffer));

function randomTensor(shape: number[], seed: number, draw: (r: number) => number = (r) => r * 2 - 1): tf.Tensor {
  const rnd = mulberry32(seed);
  return tf.tensor(
    Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => draw(rnd())),
    shape,
  );
}

describe('wasm kernels of issue 30 (bit for bit the stock results)', () => {
  before(async () => {
    await tf.setBackend('wasm');
    await tf.ready();
    registerWasmMatMulKernels();
    registerWasmPoolKernels();
    registerWasmAdamKernel();
  });
  after(() => {
    setWasmFastMatMul(true);
    setWasmFastPoolGrad(true);
  });

  it('a product computed transposed equals the product of the materialised operands, bits and all', () => {
    let swapped = 0;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 90 }),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 200 }),
        fc.boolean(),
        fc.boolean(),
        fc.integer(),
        (m, k, n, ta, tb, seed) => {
          if (swapPays(m, k, n, ta, tb)) swapped++;
          const a = randomTensor(ta ? [k, m] : [m, k], seed);
          const b = randomTensor(tb ? [n, k] : [k, n], seed + 1);
          const before = tf.memory().numTensors;
          setWasmFastMatMul(true);
          const fast = tf.matMul(a, b, ta, tb);
          assert.equal(tf.memory().numTensors, before + 1, 'one output, no intermediates left');
          // The reference: the operands transposed first, then the stock kernel's XNNPACK product.
          setWasmFastMatMul(false);
          const ref = tf.tidy(() => tf.matMul(ta ? tf.transpose(a) : a, tb ? tf.transpose(b) : b));
          setWasmFastMatMul(true);
          assert.deepEqual(fast.shape, [m, n]);
          assert.deepEqual(bits(fast), bits(ref));
          tf.dispose([a, b, fast, ref]);
        },
      ),
      { numRuns: 60, seed: 30 },
    );
    assert.ok(swapped > 5, `the transposed path ran in ${swapped} of 60 cases`);
  });

  it('the gradient of a dense layer is unchanged by the transposed path', () => {
    const x = randomTensor([64, 300], 1);
    const w = randomTensor([300, 200], 2);
    const grads = () => tf.grads((xx: tf.Tensor, ww: tf.Tensor) => tf.sum(tf.square(tf.matMul(xx, ww))))([x, w]);
    const fast = grads();
    setWasmFastMatMul(false);
    const ref = tf.tidy(() => {
      // Stock products of materialised operands: what the transpose-first override did before.
      const y = tf.matMul(x, w);
      const dy = tf.mul(y, 2);
      return [tf.matMul(dy, tf.transpose(w)), tf.matMul(tf.transpose(x), dy)];
    });
    setWasmFastMatMul(true);
    fast.forEach((g, i) => assert.deepEqual(bits(g), bits(ref[i]!)));
    tf.dispose([x, w, ...fast, ...ref]);
  });

  it('MaxPoolGrad equals the stock kernel bit for bit, ties and windows of non-positive values included', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 3 }),
        fc.constantFrom('valid' as const, 'same' as const),
        fc.integer({ min: 0, max: 3 }),
        fc.integer(),
        (batch, h, w, c, size, stride, pad, kind, seed) => {
          fc.pre(pad === 'same' || (size <= h && size <= w));
          // Uniform values, small integers (ties), ReLU'd integers (all-zero windows), negatives only.
          const draws = [
            (r: number) => r * 2 - 1,
            (r: number) => Math.round(r * 4 - 2),
            (r: number) => Math.max(0, Math.round(r * 4 - 2)),
            (r: number) => -0.1 - r,
          ];
          const x = randomTensor([batch, h, w, c], seed, draws[kind]) as tf.Tensor4D;
          const before = tf.memory().numTensors;
          const grad = (fast: boolean) => {
            setWasmFastPoolGrad(fast);
            return tf.tidy(() =>
              tf.grad((xx: tf.Tensor) =>
                tf.sum(tf.mul(tf.maxPool(xx as tf.Tensor4D, size, stride, pad), randomTensor(tf.maxPool(x, size, stride, pad).shape, seed + 1))),
              )(x),
            );
          };
          const fast = grad(true);
          const stock = grad(false);
          setWasmFastPoolGrad(true);
          assert.equal(tf.memory().numTensors, before + 2, 'two gradients, nothing else left');
          assert.deepEqual(bits(fast), bits(stock));
          tf.dispose([x, fast, stock]);
        },
      ),
      { numRuns: 80, seed: 30 },
    );
  });

  it("FusedAdam takes exactly tf.train.adam's steps and keeps its state layout, without leaking tensors", async () => {
    const shapes = [[40, 30], [30], [3, 3, 4, 8], [70, 70], [1]]; // small ones take the kernel, [70, 70] the stock chain
    const start = shapes.map((s, i) => randomTensor(s, 10 + i));
    const make = () => start.map((t) => tf.variable(t.clone()));
    const [va, vb] = [make(), make()];
    const [stock, fused] = [tf.train.adam(1e-3), new FusedAdam(1e-3)];
    let tensors = 0;
    for (let step = 0; step < 12; step++) {
      // Both optimisers make their moments in the first step; from then on a step leaves as many tensors as it found.
      if (step === 1) tensors = tf.memory().numTensors;
      if (step > 1) assert.equal(tf.memory().numTensors, tensors, `before step ${step}: the number of tensors stays put`);
      const scale = [1, 1e-6, 30][step % 3]!;
      const grads = tf.tidy(() => shapes.map((s, i) => (step === 4 && i === 1 ? tf.zeros(s) : tf.mul(randomTensor(s, 100 * step + i), scale))));
      stock.applyGradients(va.map((v, i) => ({ name: v.name, tensor: grads[i]! })));
      fused.applyGradients(vb.map((v, i) => ({ name: v.name, tensor: grads[i]! })));
      tf.dispose(grads);
    }
    va.forEach((v, i) => assert.deepEqual(bits(vb[i]!), bits(v), `variable ${i}`));
    const [wa, wb] = [await stock.getWeights(), await fused.getWeights()];
    const rename = new Map(va.map((v, i) => [v.name, vb[i]!.name]));
    assert.deepEqual(
      wb.map((w) => w.name),
      wa.map((w) => w.name.replace(/^(.*)\/([mv])$/, (_, n: string, k: string) => `${rename.get(n)}/${k}`)),
    );
    wa.forEach((w, i) => assert.deepEqual(bits(wb[i]!.tensor), bits(w.tensor), w.name));
    stock.dispose();
    fused.dispose();
    tf.dispose([...va, ...vb, ...start]);
  });
});
