import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import { registerWasmMatMulKernels, setWasmFastMatMul } from '@dflmoe/core/internal';
import { mulberry32 } from '@dflmoe/data/internal';

describe('wasm transpose-first BatchMatMul', () => {
  before(async () => {
    await tf.setBackend('wasm');
    await tf.ready();
    registerWasmMatMulKernels();
  });
  after(() => setWasmFastMatMul(true));

  const rnd = mulberry32(7);
  const dim = () => 1 + Math.floor(rnd() * 40);
  const cases: { batch: number[]; m: number; k: number; n: number; ta: boolean; tb: boolean }[] = [];
  for (const batch of [[], [3], [2, 2]]) {
    for (const ta of [false, true]) for (const tb of [false, true]) cases.push({ batch, m: dim(), k: dim(), n: dim(), ta, tb });
  }
  cases.push({ batch: [], m: 64, k: 784, n: 256, ta: true, tb: false }, { batch: [], m: 64, k: 256, n: 784, ta: false, tb: true });

  for (const c of cases) {
    it(`matches the stock kernel for batch [${c.batch}] ${c.m}x${c.k}x${c.n} transposeA=${c.ta} transposeB=${c.tb}`, () => {
      const rand = (shape: number[]) =>
        tf.tensor(
          Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rnd() * 2 - 1),
          shape,
        );
      const a = rand([...c.batch, ...(c.ta ? [c.k, c.m] : [c.m, c.k])]);
      const b = rand([...c.batch, ...(c.tb ? [c.n, c.k] : [c.k, c.n])]);
      const before = tf.memory().numTensors;
      setWasmFastMatMul(true);
      const fast = tf.matMul(a, b, c.ta, c.tb);
      assert.equal(tf.memory().numTensors, before + 1, 'one output tensor, no leaked intermediates');
      setWasmFastMatMul(false);
      const stock = tf.matMul(a, b, c.ta, c.tb);
      setWasmFastMatMul(true);
      assert.deepEqual(fast.shape, stock.shape);
      const f = fast.dataSync();
      const s = stock.dataSync();
      let worst = 0;
      for (let i = 0; i < f.length; i++) worst = Math.max(worst, Math.abs(f[i]! - s[i]!) / (1 + Math.abs(s[i]!)));
      assert.ok(worst < 2e-7 * c.k, `largest relative difference ${worst} over sums of ${c.k}`); // float32 rounding grows with k
      tf.dispose([a, b, fast, stock]);
    });
  }
});
