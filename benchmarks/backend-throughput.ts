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
import { defaultLoaders, registerWasmConvKernels, registerWasmMatMulKernels, setWasmFastInputGrad, type BackendName } from '@dflmoe/core/internal';
import { measure, type ModelKind } from './throughput-models.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '4' },
    out: { type: 'string', default: 'benchmarks/results/backend-throughput.json' },
  },
});
const budget = Number(values.seconds) * 1000;

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
      const r = await measure(kind, batch, budget);
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
