/**
 * Training throughput (samples/s) of a dense network and a small CNN on every
 * compute backend that loads here, measured in one run so the ratios compare.
 *
 *   node --import tsx benchmarks/backend-throughput.ts [--seconds 4] [--out benchmarks/results/backend-throughput.json]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { defaultLoaders, registerWasmConvKernels, registerWasmMatMulKernels, setWasmFastInputGrad, type BackendName } from '@dflmoe/core/internal';
import { Rng } from '@dflmoe/data/internal';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '4' },
    out: { type: 'string', default: 'benchmarks/results/backend-throughput.json' },
  },
});
const budget = Number(values.seconds) * 1000;

type ModelKind = 'dense' | 'cnn';

function build(kind: ModelKind): tfl.LayersModel {
  const m =
    kind === 'dense'
      ? tfl.sequential({
          layers: [
            tfl.layers.dense({ inputShape: [784], units: 256, activation: 'relu' }),
            tfl.layers.dense({ units: 128, activation: 'relu' }),
            tfl.layers.dense({ units: 10, activation: 'softmax' }),
          ],
        })
      : tfl.sequential({
          layers: [
            tfl.layers.conv2d({ inputShape: [28, 28, 1], filters: 16, kernelSize: 3, activation: 'relu', padding: 'same' }),
            tfl.layers.maxPooling2d({ poolSize: 2 }),
            tfl.layers.conv2d({ filters: 32, kernelSize: 3, activation: 'relu', padding: 'same' }),
            tfl.layers.maxPooling2d({ poolSize: 2 }),
            tfl.layers.flatten(),
            tfl.layers.dense({ units: 10, activation: 'softmax' }),
          ],
        });
  m.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy' });
  return m;
}

/** Steps per second of `trainOnBatch`, after two warm-up steps, within the time budget. */
async function measure(kind: ModelKind, batch: number): Promise<{ samplesPerSec: number; steps: number; seconds: number }> {
  const rng = new Rng(1);
  const shape = kind === 'dense' ? [batch, 784] : [batch, 28, 28, 1];
  const n = shape.reduce((a, b) => a * b, 1);
  const x = tf.tensor(
    Float32Array.from({ length: n }, () => rng.uniform()),
    shape,
  );
  const y = tf.oneHot(
    tf.tensor1d(
      Int32Array.from({ length: batch }, () => rng.int(10)),
      'int32',
    ),
    10,
  );
  const model = build(kind);
  for (let i = 0; i < 2; i++) await model.trainOnBatch(x, y);
  let steps = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < budget && steps < 2000) {
    await model.trainOnBatch(x, y);
    steps++;
  }
  const seconds = (performance.now() - t0) / 1000;
  model.dispose();
  x.dispose();
  y.dispose();
  return { samplesPerSec: (steps * batch) / seconds, steps, seconds };
}

interface Row {
  backend: string;
  model: ModelKind;
  batch: number;
  samplesPerSec: number;
  steps: number;
  seconds: number;
}

const rows: Row[] = [];
const available: BackendName[] = [];
for (const name of ['tensorflow', 'wasm', 'cpu'] as BackendName[]) {
  try {
    await defaultLoaders[name]();
    if (!(await tf.setBackend(name))) throw new Error('setBackend failed');
    await tf.ready();
    available.push(name);
  } catch (e) {
    console.log(`${name}: not available (${(e as Error).message.split('\n')[0]})`);
  }
}
tf.enableProdMode();
for (const name of available) {
  await tf.setBackend(name);
  const variants: { label: string; setup?: () => void }[] =
    name === 'wasm'
      ? [
          { label: 'wasm', setup: () => (registerWasmConvKernels(), registerWasmMatMulKernels(), setWasmFastInputGrad(true)) },
          { label: 'wasm (stock input grad)', setup: () => setWasmFastInputGrad(false) },
        ]
      : [{ label: name }];
  for (const v of variants) {
    v.setup?.();
    for (const [kind, batch] of [
      ['dense', 64],
      ['cnn', 32],
    ] as [ModelKind, number][]) {
      if (v.label.includes('stock') && kind === 'dense') continue;
      const r = await measure(kind, batch);
      rows.push({ backend: v.label, model: kind, batch, ...r });
      console.log(
        `${v.label.padEnd(24)} ${kind.padEnd(6)} batch ${String(batch).padStart(3)}  ${r.samplesPerSec.toFixed(0).padStart(7)} samples/s  (${r.steps} steps, ${r.seconds.toFixed(1)} s)`,
      );
    }
  }
}
const ratio = (a: string, b: string, m: ModelKind) => {
  const x = rows.find((r) => r.backend === a && r.model === m);
  const y = rows.find((r) => r.backend === b && r.model === m);
  return x && y ? x.samplesPerSec / y.samplesPerSec : undefined;
};
const ratios = {
  wasmOverCpuDense: ratio('wasm', 'cpu', 'dense'),
  wasmOverCpuCnn: ratio('wasm', 'cpu', 'cnn'),
  fastInputGradOverStockCnn: ratio('wasm', 'wasm (stock input grad)', 'cnn'),
};
console.log('ratios:', JSON.stringify(ratios));
mkdirSync(dirname(values.out!), { recursive: true });
writeFileSync(
  values.out!,
  JSON.stringify(
    { date: new Date().toISOString(), node: process.version, cpus: (await import('node:os')).cpus().length, budgetSeconds: budget / 1000, rows, ratios },
    null,
    2,
  ) + '\n',
);
console.log(`wrote ${values.out}`);
