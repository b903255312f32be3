/**
 * Speed and scale figures, each measured within this one run:
 * 1. training throughput of our round loop (local-only and dFLMoE with 9
 *    experts) against a bare tfjs training loop (`model.trainOnBatch`) on
 *    the same backend, model and batches: the overhead ratio;
 * 2. head encode and decode MB/s;
 * 3. scale: 2..32 sites on synthetic data, seconds per round and bytes per
 *    site per round, dFLMoE against FedAvg (in-process);
 * 4. peak RSS per site process in a 4-site consortium over TCP.
 *
 *   node --import tsx benchmarks/speed-scale.ts [--max-peers 32] [--out benchmarks/results/speed-scale.json]
 */
import { silentLogger } from '@dflmoe/core';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tfl from '@tensorflow/tfjs-layers';
import {
  DEFAULT_SIMULATION, DflmoePeer, LocalPeer, createHead, decodeHead, encodeHead, initBackend, preparePeerData, simulate, tf,
} from '@dflmoe/core';
import { makeSynthetic, partition } from '@dflmoe/data';
import { runConsortium, writeConsortium } from '@dflmoe/cli';
import type { PeerRunResult } from '@dflmoe/p2p';

const { values } = parseArgs({ options: { 'max-peers': { type: 'string', default: '32' }, out: { type: 'string', default: 'benchmarks/results/speed-scale.json' } } });
const quiet = silentLogger;
const backend = (await initBackend({ logger: quiet })).name;
console.log(`backend: ${backend}`);

// ------------------------------------------------------------ 1. overhead against a bare tfjs loop
const ds = makeSynthetic({ classes: 10, dim: 256, samples: 6400, seed: 1 });
const [split] = partition(ds.labels, 10, 1, 'iid', { seed: 1, testFraction: 0.1 });
const data = preparePeerData(ds, split);
const batch = 64;
const epochs = 2;
const n = data.trainSamples;

async function bareLoop(): Promise<number> {
  // The same architecture as our mlp:256 body + linear head, trained with the same Adam on the same batches.
  const m = tfl.sequential({
    layers: [
      tfl.layers.dense({ inputShape: [256], units: 256, activation: 'relu' }),
      tfl.layers.dense({ units: 64, activation: 'relu' }),
      tfl.layers.dense({ units: 10 }),
    ],
  });
  m.compile({ optimizer: tf.train.adam(1e-3), loss: tf.losses.softmaxCrossEntropy });
  const y = tf.oneHot(data.yTrain, 10);
  const t0 = performance.now();
  for (let e = 0; e < epochs; e++) {
    for (let s = 0; s < n; s += batch) {
      const [xb, yb] = tf.tidy(() => [tf.slice(data.xTrain, s, Math.min(batch, n - s)), tf.slice(y, s, Math.min(batch, n - s))]);
      await m.trainOnBatch(xb, yb);
      tf.dispose([xb, yb]);
    }
  }
  const sec = (performance.now() - t0) / 1000;
  y.dispose();
  m.dispose();
  return (epochs * n) / sec;
}

const opts = { data, body: { kind: 'mlp' as const, hidden: [256] }, featureDim: 64, headHidden: [], train: { epochs, batchSize: batch, learningRate: 1e-3, seed: 1 } };
async function ours(kind: 'local' | 'dflmoe'): Promise<number> {
  if (kind === 'local') {
    const p = new LocalPeer({ id: 'a', ...opts });
    const t0 = performance.now();
    await p.trainRound(1);
    const sec = (performance.now() - t0) / 1000;
    p.dispose();
    return (epochs * n) / sec;
  }
  const p = new DflmoePeer({ id: 'a', ...opts });
  // Nine received experts, as in a 10-site consortium.
  for (let k = 0; k < 9; k++) {
    const spec = { inputDim: 64, hidden: [], outputDim: 10 };
    const h = createHead(spec, 100 + k);
    p.receiveHead(encodeHead({ spec, version: 1, peer: `e${k}` }, h.map((l) => ({ kernel: l.kernel.dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array }))), `e${k}`, 1);
    h.forEach((l) => tf.dispose([l.kernel, l.bias]));
  }
  const t0 = performance.now();
  await p.trainRound(1);
  const sec = (performance.now() - t0) / 1000;
  p.dispose();
  return (epochs * n) / sec;
}
await bareLoop(); // warm-up (kernels, allocations)
const throughput = { bare: await bareLoop(), local: await ours('local'), dflmoe9: await ours('dflmoe') };
const overhead = { localVsBare: throughput.bare / throughput.local, dflmoeVsBare: throughput.bare / throughput.dflmoe9 };
console.log(`training samples/s (mlp 256-256-64-10, batch ${batch}): bare tfjs loop ${throughput.bare.toFixed(0)}, our local round ${throughput.local.toFixed(0)} ` +
  `(bare/ours ${overhead.localVsBare.toFixed(2)}), our dFLMoE round with 9 experts ${throughput.dflmoe9.toFixed(0)} (bare/ours ${overhead.dflmoeVsBare.toFixed(2)})`);

// ------------------------------------------------------------ 2. codec speed
const big = { inputDim: 1024, hidden: [1024], outputDim: 1000 };
const layers = [
  { kernel: new Float32Array(1024 * 1024).map((_, i) => Math.sin(i)), bias: new Float32Array(1024) },
  { kernel: new Float32Array(1024 * 1000).map((_, i) => Math.cos(i)), bias: new Float32Array(1000) },
];
let enc: Uint8Array = new Uint8Array();
const te = performance.now();
for (let i = 0; i < 3; i++) enc = encodeHead({ spec: big, version: 1, peer: 'x' }, layers);
const encSec = (performance.now() - te) / 3000;
const td = performance.now();
for (let i = 0; i < 3; i++) decodeHead(enc, big, { maxBytes: 1 << 30 });
const decSec = (performance.now() - td) / 3000;
const codec = { headMB: enc.length / 1e6, encodeMBps: enc.length / 1e6 / encSec, decodeMBps: enc.length / 1e6 / decSec };
console.log(`head codec (${codec.headMB.toFixed(1)} MB head): encode ${codec.encodeMBps.toFixed(0)} MB/s, decode with checks ${codec.decodeMBps.toFixed(0)} MB/s`);

// ------------------------------------------------------------ 3. scale
const scale: { peers: number; algorithm: string; secondsPerRound: number; bytesPerPeerRound: number }[] = [];
for (let peers = 2; peers <= Number(values['max-peers']); peers *= 2) {
  const r = await simulate(
    { dataset: `synthetic:classes=10,dim=32,samples=${peers * 200}`, peers, rounds: 3, partition: 'dirichlet:0.5', algorithms: ['dflmoe', 'fedavg'], bodies: ['mlp:64'], featureDim: 32, minSize: 20 },
    { logger: quiet },
  );
  for (const alg of ['dflmoe', 'fedavg'] as const) {
    const a = r.algorithms[alg]!;
    const row = { peers, algorithm: alg, secondsPerRound: a.wallSeconds / 3, bytesPerPeerRound: a.bytesSent / (peers * 3) };
    scale.push(row);
    console.log(`scale ${String(peers).padStart(2)} sites ${alg.padEnd(6)}: ${row.secondsPerRound.toFixed(3)} s/round, ${(row.bytesPerPeerRound / 1024).toFixed(1)} KiB per site per round`);
  }
}

// ------------------------------------------------------------ 4. peak RSS per site process
const dir = mkdtempSync(join(tmpdir(), 'dflmoe-rss-'));
const rss: { dataset: string; peakRssMiB: number[] }[] = [];
for (const [dataset, extra] of [['breast-cancer', {}], ['fashion-mnist', { maxSamples: 8000 }]] as const) {
  const files = await writeConsortium({
    dir: join(dir, dataset), algorithm: 'dflmoe', sim: { ...DEFAULT_SIMULATION, dataset, peers: 4, rounds: 3, bodies: ['mlp:256'] },
    deadlineMs: 30000, lingerMs: 500, datasetOptions: extra,
  });
  await runConsortium(files, 600000);
  const peaks = files.sites.map((s) => (JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8')) as PeerRunResult).peakRssMiB);
  rss.push({ dataset, peakRssMiB: peaks });
  console.log(`peak RSS per site process, 4-site dFLMoE over TCP on ${dataset}: ${peaks.map((x) => x.toFixed(0)).join(', ')} MiB`);
}

mkdirSync(dirname(values.out!), { recursive: true });
writeFileSync(values.out!, JSON.stringify({ date: new Date().toISOString(), backend, throughput, overhead, codec, scale, rss }, null, 2) + '\n');
console.log(`wrote ${values.out}`);
