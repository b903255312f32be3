import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';
import { registerWasmConvKernels } from '@dflmoe/core/internal';
import { mulberry32 } from '@dflmoe/data/internal';

type Case = { x: [number, number, number, number]; f: [number, number, number, number]; stride: number; pad: 'valid' | 'same' };

const cases: Case[] = [
  { x: [2, 8, 8, 1], f: [3, 3, 1, 4], stride: 1, pad: 'valid' },
  { x: [3, 7, 9, 2], f: [3, 3, 2, 5], stride: 1, pad: 'same' },
  { x: [2, 9, 9, 3], f: [5, 5, 3, 2], stride: 1, pad: 'same' },
  { x: [2, 10, 10, 2], f: [3, 3, 2, 3], stride: 2, pad: 'valid' },
  { x: [2, 11, 10, 3], f: [3, 2, 3, 4], stride: 2, pad: 'same' },
  { x: [1, 12, 12, 4], f: [4, 4, 4, 2], stride: 3, pad: 'same' },
  { x: [4, 6, 6, 1], f: [1, 1, 1, 1], stride: 1, pad: 'valid' },
];

describe('wasm Conv2D gradient kernels', () => {
  before(async () => {
    tf.enableProdMode();
    await tf.setBackend('wasm');
    await tf.ready();
    registerWasmConvKernels();
  });
  after(async () => {
    await tf.setBackend('cpu');
  });

  for (const c of cases) {
    it(`match cpu for x=${c.x} f=${c.f} stride=${c.stride} pad=${c.pad}`, async () => {
      const rnd = mulberry32(c.x.reduce((a, b) => a * 31 + b, c.stride));
      const rand = (n: number) => Float32Array.from({ length: n }, () => rnd() * 2 - 1);
      const xs = rand(c.x.reduce((a, b) => a * b));
      const fs = rand(c.f.reduce((a, b) => a * b));
      await tf.setBackend('cpu');
      const outShape = tf.tidy(() => tf.conv2d(tf.zeros(c.x) as tf.Tensor4D, tf.zeros(c.f) as tf.Tensor4D, c.stride, c.pad).shape);
      const w = rand(outShape.reduce((a, b) => a * b));
      const ref = tf.tidy(() => {
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), tf.tensor(w, outShape))),
        );
        return g([tf.tensor4d(xs, c.x), tf.tensor4d(fs, c.f)]).map((t) => t.dataSync().slice());
      });
      await tf.setBackend('wasm');
      const before = tf.memory().numTensors;
      const got = tf.tidy(() => {
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), tf.tensor(w, outShape))),
        );
        return g([tf.tensor4d(xs, c.x), tf.tensor4d(fs, c.f)]).map((t) => t.dataSync().slice());
      });
      assert.equal(tf.memory().numTensors, before, 'no tensors leaked');
      for (let k = 0; k < 2; k++) {
        assert.equal(got[k].length, ref[k].length);
        let maxDiff = 0;
        for (let i = 0; i < ref[k].length; i++) maxDiff = Math.max(maxDiff, Math.abs(got[k][i] - ref[k][i]));
        assert.ok(maxDiff <= 1e-4, `${k === 0 ? 'input' : 'filter'} gradient max abs diff ${maxDiff}`);
      }
    });
  }

  it('trains a small CNN (fused conv + relu) on wasm and lowers the loss', async () => {
    await tf.setBackend('wasm');
    const rnd = mulberry32(7);
    const n = 64;
    // Two classes: bright top half vs bright bottom half, with noise.
    const xs = new Float32Array(n * 8 * 8);
    const ys = new Float32Array(n * 2);
    for (let i = 0; i < n; i++) {
      const cls = i % 2;
      ys[i * 2 + cls] = 1;
      for (let p = 0; p < 64; p++) {
        const top = p < 32;
        xs[i * 64 + p] = (top === (cls === 0) ? 1 : 0) + (rnd() - 0.5) * 0.8;
      }
    }
    const model = tfl.sequential({
      layers: [
        tfl.layers.conv2d({ inputShape: [8, 8, 1], filters: 4, kernelSize: 3, activation: 'relu', padding: 'same' }),
        tfl.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2 }), // linear: fused path
        tfl.layers.flatten(),
        tfl.layers.dense({ units: 2, activation: 'softmax' }),
      ],
    });
    model.compile({ optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy' });
    const x = tf.tensor4d(xs, [n, 8, 8, 1]);
    const y = tf.tensor2d(ys, [n, 2]);
    const h = await model.fit(x, y, { epochs: 15, batchSize: 16, verbose: 0, shuffle: false });
    const losses = h.history.loss as number[];
    assert.ok(losses[losses.length - 1] < losses[0] * 0.5, `loss ${losses[0]} -> ${losses[losses.length - 1]}`);
    x.dispose();
    y.dispose();
    model.dispose();
  });
});
