/**
 * dflmoe (wasm) against PyTorch on one CPU thread, side by side in one run:
 * training samples/s of bench:backend's dense net (batch 64) and small CNN
 * (batch 32), and one FedAvg round of the Fashion-MNIST MLP cell (10 sites of
 * 400 samples, MLP 784-128-64-10, batch 32, Adam, then the weights averaged).
 * The two sides alternate `--repeats` times so load from other processes on
 * the machine hits both alike; the ratio is taken per repeat and the median
 * reported. The PyTorch side is benchmarks/peer_torch.py under Debian's
 * /usr/bin/python3 with python3-torch (installed with apt-get when missing
 * and root; skipped with one line otherwise).
 *
 *   npm run bench:peer -- [--seconds 3] [--repeats 3] [--out benchmarks/results/peer.json]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { createOptimizer, selectBackend, setWasmFastMatMul, setWasmFastPoolGrad, setWasmMatMulSwap, stockWasmKernels } from '@dflmoe/core/internal';
import { Rng } from '@dflmoe/data/internal';
import { modelLayers } from './throughput-models.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    repeats: { type: 'string', default: '3' },
    out: { type: 'string', default: 'benchmarks/results/peer.json' },
  },
});
const seconds = Number(values.seconds);
const repeats = Number(values.repeats);
const PY = '/usr/bin/python3';
const SITES = 10;
const PER_SITE = 400;
type Workload = 'dense' | 'cnn' | 'fedavg';
type Rates = Record<Workload, number>;
const WORKLOADS: Workload[] = ['dense', 'cnn', 'fedavg'];

function hasTorch(): boolean {
  return spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
}

function ensureTorch(): string | undefined {
  if (hasTorch()) return undefined;
  if (process.getuid?.() === 0) {
    spawnSync('apt-get', ['install', '-y', 'python3-torch'], { stdio: 'ignore' });
    if (hasTorch()) return undefined;
  }
  return `PyTorch: skipped (${PY} cannot import torch and apt-get install python3-torch ${process.getuid?.() === 0 ? 'failed' : 'needs root'})`;
}

function layers(kind: Workload): tfl.layers.Layer[] {
  if (kind !== 'fedavg') return modelLayers(kind);
  return [
    tfl.layers.dense({ inputShape: [784], units: 128, activation: 'relu' }),
    tfl.layers.dense({ units: 64, activation: 'relu' }),
    tfl.layers.dense({ units: 10, activation: 'softmax' }),
  ];
}

/**
 * The kernel sets compared: `now` is dflmoe as it runs (every wasm override,
 * Adam from `createOptimizer`); `previous` the transpose-first `BatchMatMul`
 * alone with tfjs's Adam (before issue 30's second step); `tfjs` tfjs's own
 * `BatchMatMul`, `MaxPoolGrad` and Adam. All keep the convolution gradient
 * kernels of wasm-conv.ts (tfjs's wasm backend has no filter gradient).
 */
type KernelSet = 'now' | 'previous' | 'tfjs';
let kernelSet: KernelSet = 'now';

function useKernels(set: KernelSet): void {
  kernelSet = set;
  setWasmFastMatMul(set !== 'tfjs');
  setWasmMatMulSwap(set === 'now');
  setWasmFastPoolGrad(set === 'now');
}

function build(kind: Workload): tfl.LayersModel {
  const m = tfl.sequential({ layers: layers(kind) });
  const optimizer = kernelSet === 'now' ? createOptimizer({ optimizer: 'adam', learningRate: 1e-3 }) : tf.train.adam(1e-3);
  m.compile({ optimizer, loss: 'categoricalCrossentropy' });
  return m;
}

function batchOf(rng: Rng, shape: number[]): { x: tf.Tensor; y: tf.Tensor } {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = tf.tensor(
    Float32Array.from({ length: n }, () => rng.uniform()),
    shape,
  );
  const y = tf.tidy(() =>
    tf.oneHot(
      tf.tensor1d(
        Int32Array.from({ length: shape[0]! }, () => rng.int(10)),
        'int32',
      ),
      10,
    ),
  );
  return { x, y };
}

/** Samples per wall second and per CPU second of this process (less moved by other load on the machine). */
interface Rate {
  wall: number;
  cpu: number;
}

const cpuNow = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1e6;
};

async function throughput(kind: 'dense' | 'cnn', batch: number): Promise<Rate> {
  const { x, y } = batchOf(new Rng(1), kind === 'dense' ? [batch, 784] : [batch, 28, 28, 1]);
  const model = build(kind);
  for (let i = 0; i < 10; i++) await model.trainOnBatch(x, y);
  let steps = 0;
  const t0 = performance.now();
  const c0 = cpuNow();
  while (performance.now() - t0 < seconds * 1000 && steps < 2000) {
    await model.trainOnBatch(x, y);
    steps++;
  }
  const rate = { wall: (steps * batch) / ((performance.now() - t0) / 1000), cpu: (steps * batch) / (cpuNow() - c0) };
  model.dispose();
  tf.dispose([x, y]);
  return rate;
}

/** One FedAvg round: each site trains a copy of the global MLP for one epoch, then the weights are averaged. */
async function fedavgRound(): Promise<Rate> {
  const rng = new Rng(2);
  const data = Array.from({ length: SITES }, () => batchOf(rng, [PER_SITE, 784]));
  const global = build('fedavg');
  const t0 = performance.now();
  const c0 = cpuNow();
  const sums = global.getWeights().map((w) => tf.zerosLike(w));
  for (const { x, y } of data) {
    const model = build('fedavg');
    model.setWeights(global.getWeights());
    for (let i = 0; i < PER_SITE; i += 32) {
      const [xb, yb] = [tf.slice(x, i, 32), tf.slice(y, i, 32)];
      await model.trainOnBatch(xb, yb);
      tf.dispose([xb, yb]);
    }
    model.getWeights().forEach((w, i) => {
      const s = tf.add(sums[i]!, w);
      sums[i]!.dispose();
      sums[i] = s;
    });
    model.dispose();
  }
  const avg = sums.map((s) => tf.div(s, SITES));
  global.setWeights(avg);
  tf.dispose([...sums, ...avg]);
  const rate = { wall: (SITES * PER_SITE) / ((performance.now() - t0) / 1000), cpu: (SITES * PER_SITE) / (cpuNow() - c0) };
  global.dispose();
  for (const d of data) tf.dispose([d.x, d.y]);
  return rate;
}

async function dflmoeSide(): Promise<{ wall: Rates; cpu: Rates }> {
  const dense = await throughput('dense', 64);
  const cnn = await throughput('cnn', 32);
  let fedavg = { wall: 0, cpu: 0 };
  for (let i = 0; i < 3; i++) {
    const r = await fedavgRound();
    if (r.wall > fedavg.wall) fedavg = r;
  }
  return { wall: { dense: dense.wall, cnn: cnn.wall, fedavg: fedavg.wall }, cpu: { dense: dense.cpu, cnn: cnn.cpu, fedavg: fedavg.cpu } };
}

function torchSide(): Rates & { cpu: Rates; torch: string } {
  const out = execFileSync(PY, ['benchmarks/peer_torch.py', String(seconds), String(SITES), String(PER_SITE)], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

process.env.DFLMOE_BACKEND ??= 'wasm';
const backend = await selectBackend();
tf.enableProdMode();
const skipped = ensureTorch();
if (skipped) console.log(skipped);
console.log(`dflmoe on ${backend.name}${stockWasmKernels() ? ' (stock kernels)' : ''}; ${repeats} alternations of ${seconds} s per model`);
const runs: { dflmoe: Rates; previous?: Rates; tfjs?: Rates; torch?: Rates; cpu: { dflmoe: Rates; previous?: Rates; tfjs?: Rates; torch?: Rates } }[] = [];
const compare = backend.name === 'wasm' && !stockWasmKernels();
let torchVersion: string | undefined;
const fmt = (r: Rates) => WORKLOADS.map((w) => `${w} ${r[w].toFixed(0)}`).join('   ');
for (let r = 0; r < repeats; r++) {
  // The kernel sets take turns going first, so that none always meets the process's first compilations.
  const sets: KernelSet[] = compare ? ['now', 'previous', 'tfjs'] : ['now'];
  const got = new Map<KernelSet, { wall: Rates; cpu: Rates }>();
  for (let i = 0; i < sets.length; i++) {
    const set = sets[(i + r) % sets.length]!;
    useKernels(set);
    got.set(set, await dflmoeSide());
  }
  useKernels('now');
  const d = got.get('now')!;
  const previous = got.get('previous');
  const stock = got.get('tfjs');
  if (previous && stock) {
    console.log(`repeat ${r + 1}: samples/s, transpose-first BatchMatMul only (before): ${fmt(previous.wall)}`);
    console.log(`repeat ${r + 1}: samples/s, tfjs's kernels and Adam: ${fmt(stock.wall)}`);
  }
  const t = skipped ? undefined : torchSide();
  if (t) torchVersion = t.torch;
  runs.push({
    dflmoe: d.wall,
    ...(previous ? { previous: previous.wall } : {}),
    ...(stock ? { tfjs: stock.wall } : {}),
    ...(t ? { torch: { dense: t.dense, cnn: t.cnn, fedavg: t.fedavg } } : {}),
    cpu: { dflmoe: d.cpu, ...(previous ? { previous: previous.cpu } : {}), ...(stock ? { tfjs: stock.cpu } : {}), ...(t ? { torch: t.cpu } : {}) },
  });
  const line = WORKLOADS.map(
    (w) => `${w} ${d.wall[w].toFixed(0)}${t ? ` / ${t[w].toFixed(0)} = ${(d.wall[w] / t[w]).toFixed(2)} (CPU ${(d.cpu[w] / t.cpu[w]).toFixed(2)})` : ''}`,
  ).join('   ');
  console.log(`repeat ${r + 1}: samples/s dflmoe${t ? ' / PyTorch 1 thread (ratio per CPU second)' : ''}: ${line}`);
}
type Run = (typeof runs)[number];
const med = (pick: (r: Run) => number | undefined) => {
  const xs = runs.map(pick).filter((x): x is number => x !== undefined);
  return xs.length ? median(xs) : undefined;
};
const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined ? a / b : undefined);
const summary = Object.fromEntries(
  WORKLOADS.map((w) => [
    w,
    {
      dflmoe: med((r) => r.dflmoe[w])!,
      previous: med((r) => r.previous?.[w]),
      tfjs: med((r) => r.tfjs?.[w]),
      torch: med((r) => r.torch?.[w]),
      ratio: med((r) => ratio(r.dflmoe[w], r.torch?.[w])),
      previousRatio: med((r) => ratio(r.previous?.[w], r.torch?.[w])),
      cpuRatio: med((r) => ratio(r.cpu.dflmoe[w], r.cpu.torch?.[w])),
      cpuPreviousRatio: med((r) => ratio(r.cpu.previous?.[w], r.cpu.torch?.[w])),
    },
  ]),
) as Record<
  Workload,
  Record<'previous' | 'tfjs' | 'torch' | 'ratio' | 'previousRatio' | 'cpuRatio' | 'cpuPreviousRatio', number | undefined> & { dflmoe: number }
>;
for (const w of WORKLOADS) {
  const s = summary[w];
  console.log(
    `${w.padEnd(7)} dflmoe ${s.dflmoe.toFixed(0).padStart(6)} samples/s` +
      (s.previous ? ` (before ${s.previous.toFixed(0)}, tfjs's kernels ${s.tfjs!.toFixed(0)})` : '') +
      (s.torch
        ? `   PyTorch ${s.torch.toFixed(0).padStart(6)}   ratio ${s.ratio!.toFixed(2)}${s.previousRatio ? ` (before ${s.previousRatio.toFixed(2)})` : ''}` +
          `, per CPU second ${s.cpuRatio!.toFixed(2)}${s.cpuPreviousRatio ? ` (before ${s.cpuPreviousRatio.toFixed(2)})` : ''} (medians of per-repeat ratios)`
        : ''),
  );
}
mkdirSync(dirname(values.out!), { recursive: true });
writeFileSync(
  values.out!,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      node: process.version,
      cpus: (await import('node:os')).cpus().length,
      backend: backend.name,
      stockKernels: stockWasmKernels(),
      torch: torchVersion ?? null,
      skipped: skipped ?? null,
      load: (await import('node:os')).loadavg(),
      seconds,
      repeats,
      fedavgCell: { sites: SITES, perSite: PER_SITE, model: 'MLP 784-128-64-10', batch: 32, optimizer: 'adam 1e-3' },
      summary,
      runs,
    },
    null,
    2,
  ) + '\n',
);
console.log(`wrote ${values.out}`);
