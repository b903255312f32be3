/**
 * Speed and scale figures, each measured within this one run:
 * 1. training throughput of our round loop (local-only, and dFLMoE with 9
 *    experts through the batched mixture and the per-expert path) against a
 *    bare tfjs training loop (`model.trainOnBatch`) on the same backend,
 *    model and batches: the overhead ratios, and dFLMoE / local-only;
 * 2. head encode and decode MB/s;
 * 3. MoE compute per training step with K experts (forward, backward and
 *    update of the mixture alone), and its multiply-adds per sample;
 * 4. scale in one process: 2 to 100 sites on synthetic data, dFLMoE with
 *    every expert and with at most k, and FedAvg: seconds per round, bytes
 *    per site per round, peak RSS (each point in its own process);
 * 5. the bounded mixture's cost and accuracy against the full one with 64
 *    sites (synthetic and digits);
 * 6. 2 to 64 site processes over TCP, with and without k: seconds per
 *    round, bytes per site per round, peak RSS per site process;
 * 7. how fast a site answers a head pull while it trains (median of 20);
 * 8. what the live view (`--ui`) costs a simulation while it serves the page
 *    and the event stream to two open tabs: round time with and without it;
 * 9. 100 sites in one process, 3 rounds, dFLMoE (default k) against
 *    local-only in the same process: the ratio of their wall times.
 *
 *   node --import tsx benchmarks/speed-scale.ts [--only overhead,codec,moe,scale,compare,tcp,pull,live,vs-local]
 *     [--max-peers 100] [--max-tcp 64 | --tcp-sizes 32,64] [--tcp-k all,k] [--k 8] [--rounds 10] [--out benchmarks/results/speed-scale.json]
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tfl from '@tensorflow/tfjs-layers';
import {
  DEFAULT_ALGORITHM_OPTIONS,
  DEFAULT_SIMULATION,
  DflmoePeer,
  Gate,
  LocalPeer,
  RowAdam,
  StatusBoard,
  createHead,
  decodeHead,
  encodeHead,
  initBackend,
  moeForwardStacked,
  moeLoss,
  preparePeerData,
  silentLogger,
  simulate,
  tf,
  type StackedExperts,
} from '@dflmoe/core/internal';
import { LiveServer } from '@dflmoe/live';
import { makeSynthetic, partition } from '@dflmoe/data/internal';
import { runConsortium, writeConsortium } from '@dflmoe/cli/internal';
import {
  HEAD_PROTOCOL,
  HeadRequest,
  HeadResponse,
  createSiteNode,
  loopbackMembers,
  readFrames,
  writeFrames,
  type PeerRunResult,
  type RoundLine,
} from '@dflmoe/p2p/internal';

const { values } = parseArgs({
  options: {
    only: { type: 'string', default: 'overhead,codec,moe,scale,compare,tcp,pull,live,vs-local' },
    'max-peers': { type: 'string', default: '100' },
    'max-tcp': { type: 'string', default: '64' },
    /** Only these TCP sizes (comma-separated); their rows replace earlier ones of the same size. */
    'tcp-sizes': { type: 'string' },
    /** TCP: the mixtures to run at sizes above k+1 (`all`, `k`, or both). */
    'tcp-k': { type: 'string', default: 'all,k' },
    k: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '10' },
    out: { type: 'string', default: 'benchmarks/results/speed-scale.json' },
  },
});
const parts = new Set(values.only!.split(','));
const K = Number(values.k);
const ROUNDS = Number(values.rounds);
const quiet = silentLogger;
const backend = (await initBackend({ logger: quiet })).name;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/**
 * CPU seconds of this process since `c0` (user + system). The training loops
 * run on the main thread, so on a loaded machine this tracks their compute
 * better than wall time.
 */
const cpuSince = (c0: NodeJS.CpuUsage) => {
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1e6;
};
console.log(`backend: ${backend}`);
// Merge into the previous results, so that parts can be re-run alone.
const results: Record<string, unknown> = existsSync(values.out!) ? JSON.parse(readFileSync(values.out!, 'utf8')) : {};
const save = (key: string, v: unknown) => {
  results[key] = v;
  results.date = new Date().toISOString();
  results.backend = backend;
  mkdirSync(dirname(values.out!), { recursive: true });
  writeFileSync(values.out!, JSON.stringify(results, null, 2) + '\n');
};

// ------------------------------------------------------------ 1. overhead against a bare tfjs loop
if (parts.has('overhead')) {
  const ds = makeSynthetic({ classes: 10, dim: 256, samples: 6400, seed: 1 });
  const [split] = partition(ds.labels, 10, 1, 'iid', { seed: 1, testFraction: 0.1 });
  const data = preparePeerData(ds, split);
  const batch = 64;
  const epochs = 2;
  const n = data.trainSamples;

  const bareLoop = async (): Promise<number> => {
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
    const c0 = process.cpuUsage();
    for (let e = 0; e < epochs; e++) {
      for (let s = 0; s < n; s += batch) {
        const [xb, yb] = tf.tidy(() => [tf.slice(data.xTrain, s, Math.min(batch, n - s)), tf.slice(y, s, Math.min(batch, n - s))]);
        await m.trainOnBatch(xb, yb);
        tf.dispose([xb, yb]);
      }
    }
    const sec = cpuSince(c0);
    y.dispose();
    m.dispose();
    return (epochs * n) / sec;
  };

  const opts = {
    data,
    body: { kind: 'mlp' as const, hidden: [256] },
    featureDim: 64,
    headHidden: [],
    train: { epochs, batchSize: batch, learningRate: 1e-3, seed: 1 },
  };
  const ours = async (kind: 'local' | 'dflmoe' | 'per-expert'): Promise<number> => {
    const p =
      kind === 'local' ? new LocalPeer({ id: 'a', ...opts }) : new DflmoePeer({ id: 'a', ...opts, mixture: kind === 'dflmoe' ? 'batched' : 'per-expert' });
    if (p instanceof DflmoePeer) {
      // Nine received experts, as in a 10-site consortium.
      for (let k = 0; k < 9; k++) {
        const spec = { inputDim: 64, hidden: [], outputDim: 10 };
        const h = createHead(spec, 100 + k);
        p.receiveHead(
          encodeHead(
            { spec, version: 1, peer: `e${k}` },
            h.map((l) => ({ kernel: l.kernel.dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array })),
          ),
          `e${k}`,
          1,
        );
        h.forEach((l) => tf.dispose([l.kernel, l.bias]));
      }
    }
    const c0 = process.cpuUsage();
    await p.trainRound(1);
    const sec = cpuSince(c0);
    p.dispose();
    return (epochs * n) / sec;
  };
  await bareLoop(); // warm-up (kernels, allocations)
  await ours('dflmoe');
  // Five interleaved repetitions; throughput in samples per CPU second, medians; ratios are medians of each repetition's ratio.
  const runs: Record<'bare' | 'local' | 'dflmoe9' | 'perExpert9', number[]> = { bare: [], local: [], dflmoe9: [], perExpert9: [] };
  for (let rep = 0; rep < 5; rep++) {
    runs.bare.push(await bareLoop());
    runs.local.push(await ours('local'));
    runs.dflmoe9.push(await ours('dflmoe'));
    runs.perExpert9.push(await ours('per-expert'));
  }
  const throughput = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, median(v)])) as Record<keyof typeof runs, number>;
  const paired = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]));
  const ratios = {
    localVsBare: paired(runs.bare, runs.local),
    dflmoeVsBare: paired(runs.bare, runs.dflmoe9),
    dflmoeVsLocal: paired(runs.local, runs.dflmoe9),
    perExpertVsLocal: paired(runs.local, runs.perExpert9),
  };
  console.log(
    `training samples per CPU second (mlp 256-256-64-10, batch ${batch}, median of 5): bare tfjs loop ${throughput.bare.toFixed(0)}, our local round ${throughput.local.toFixed(0)} ` +
      `(bare/ours ${ratios.localVsBare.toFixed(2)}), dFLMoE round with 9 experts ${throughput.dflmoe9.toFixed(0)} (bare/ours ${ratios.dflmoeVsBare.toFixed(2)}; ` +
      `dFLMoE/local ${ratios.dflmoeVsLocal.toFixed(2)}), per-expert path ${throughput.perExpert9.toFixed(0)} (per-expert/local ${ratios.perExpertVsLocal.toFixed(2)})`,
  );
  save('overhead', { throughput, ratios, runs });
}

// ------------------------------------------------------------ 2. codec speed
if (parts.has('codec')) {
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
  console.log(
    `head codec (${codec.headMB.toFixed(1)} MB head): encode ${codec.encodeMBps.toFixed(0)} MB/s, decode with checks ${codec.decodeMBps.toFixed(0)} MB/s`,
  );
  save('codec', codec);
}

// ------------------------------------------------------------ 3. MoE compute per step with K experts
/** Multiply-adds per training sample of the mixture's forward pass (gate, folded FSTs, heads) with K experts (own included), batch B. */
function moeMacs(K: number, d: number, classes: number, gateHidden: number, B: number): number {
  return d * gateHidden + gateHidden * K + d * classes * K + ((K - 1) * d * d * classes) / B;
}

/** CPU seconds per training step of the mixture alone (forward, backward, Adam) with K experts, as a dFLMoE peer trains them (packed). */
async function moeStepSeconds(K: number, d: number, classes: number, B: number, steps: number): Promise<number> {
  const gate = new Gate(d, 32, 1, 'own');
  const spec = { inputDim: d, hidden: [], outputDim: classes };
  const ownHead = createHead(spec, 1);
  const R = K - 1;
  const heads = Array.from({ length: R }, (_, k) => createHead(spec, 10 + k));
  const stacked: StackedExperts = {
    layers: [{ kernel: tf.stack(heads.map((h) => h[0].kernel)) as tf.Tensor3D, bias: tf.stack(heads.map((h) => h[0].bias)) as tf.Tensor2D }],
    fst: { kernel: tf.variable(tf.tile(tf.expandDims(tf.eye(d), 0), [R, 1, 1])), bias: tf.variable(tf.zeros([R, d])) as unknown as tf.Tensor2D },
  };
  const slots = { kernel: tf.variable(tf.zeros([32, R])) as unknown as tf.Tensor2D, bias: tf.variable(tf.zeros([R])) as unknown as tf.Tensor1D };
  const packedVars = [slots.kernel, slots.bias, stacked.fst!.kernel, stacked.fst!.bias] as unknown as tf.Variable[];
  const adam = new RowAdam(
    1e-3,
    packedVars,
    [1, 0, 0, 0],
    Array.from({ length: R }, () => ({ steps: 0, acc1: Math.fround(0.9), acc2: Math.fround(0.999) })),
    packedVars.map((v) => tf.zerosLike(v)),
    packedVars.map((v) => tf.zerosLike(v)),
  );
  const own = tf.train.adam(1e-3);
  const ownVars = [...ownHead.flatMap((l) => [l.kernel, l.bias]), ...gate.sharedVariables()];
  const z = tf.randomNormal([B, d], 0, 1, 'float32', 1) as tf.Tensor2D;
  const y = tf.oneHot(
    tf.tensor1d(
      Array.from({ length: B }, (_, i) => i % classes),
      'int32',
    ),
    classes,
  ) as tf.Tensor2D;
  const step = () =>
    tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => {
        const { probs, logits } = moeForwardStacked(z, ownHead, stacked, gate, slots);
        return moeLoss(tf.reshape(tf.slice(logits, [0, 0, 0], [-1, 1, -1]), [B, classes]) as tf.Tensor2D, probs, y, 0.2);
      }, [...ownVars, ...packedVars]);
      own.applyGradients(ownVars.map((v) => ({ name: v.name, tensor: grads[v.name] })));
      adam.applyGradients(packedVars.map((v) => ({ name: v.name, tensor: grads[v.name] })));
      value.dataSync();
    });
  for (let i = 0; i < 5; i++) step();
  const c0 = process.cpuUsage();
  for (let i = 0; i < steps; i++) step();
  const sec = cpuSince(c0) / steps;
  gate.dispose();
  adam.dispose();
  own.dispose();
  tf.dispose([
    ...ownHead.flatMap((l) => [l.kernel, l.bias]),
    ...heads.flatMap((h) => h.flatMap((l) => [l.kernel, l.bias])),
    ...stacked.layers.flatMap((l) => [l.kernel, l.bias]),
    ...packedVars,
    z,
    y,
  ]);
  return sec;
}

if (parts.has('moe')) {
  // The scale sweep's model: feature size 32, 10 classes, batch 32.
  const moe: { experts: number; stepMs: number; macsPerSample: number }[] = [];
  for (const experts of [K + 1, 64]) {
    const t = median([
      await moeStepSeconds(experts, 32, 10, 32, 100),
      await moeStepSeconds(experts, 32, 10, 32, 100),
      await moeStepSeconds(experts, 32, 10, 32, 100),
    ]);
    moe.push({ experts, stepMs: t * 1000, macsPerSample: moeMacs(experts, 32, 10, 32, 32) });
    console.log(
      `MoE step (forward, backward, update of the mixture alone; d 32, 10 classes, batch 32) with ${experts} experts: ${(t * 1000).toFixed(2)} CPU ms, ${moeMacs(experts, 32, 10, 32, 32).toFixed(0)} multiply-adds per sample`,
    );
  }
  console.log(
    `  ${K + 1} experts against 64: step time ${(moe[0].stepMs / moe[1].stepMs).toFixed(3)}, multiply-adds ${(moe[0].macsPerSample / moe[1].macsPerSample).toFixed(3)}`,
  );
  save('moe', moe);
}

// ------------------------------------------------------------ 4, 5. scale in one process (each point its own process)
interface PointResult {
  peers: number;
  rounds: number;
  maxExperts: number;
  peakRssMiB: number;
  dflmoe: { secondsPerRound: number; cpuSecondsPerRound: number; cpuSeconds: number; bytesPerSiteRound: number; accuracy: number; expertsPerSite: number };
  fedavg?: { secondsPerRound: number; cpuSecondsPerRound: number; bytesPerSiteRound: number; accuracy: number };
  local?: { secondsPerRound: number; cpuSeconds: number; accuracy: number };
}
function point(args: {
  dataset: string;
  peers: number;
  rounds: number;
  maxExperts: number;
  fedavg?: boolean;
  local?: boolean;
  partition?: string;
  minSize?: number;
  lr?: number;
}): PointResult {
  const argv = [
    '--import',
    'tsx',
    '--conditions=development',
    'benchmarks/scale-point.ts',
    '--dataset',
    args.dataset,
    '--peers',
    String(args.peers),
    '--rounds',
    String(args.rounds),
    '--max-experts',
    String(args.maxExperts),
    ...(args.fedavg ? ['--fedavg'] : []),
    ...(args.local ? ['--local'] : []),
    ...(args.partition ? ['--partition', args.partition] : []),
    ...(args.minSize !== undefined ? ['--min-size', String(args.minSize)] : []),
    ...(args.lr !== undefined ? ['--lr', String(args.lr)] : []),
  ];
  const out = execFileSync(process.execPath, argv, { encoding: 'utf8', maxBuffer: 1 << 24, env: { ...process.env, DFLMOE_LOG_LEVEL: 'error' } });
  return JSON.parse(out.trim().split('\n').at(-1)!) as PointResult;
}
const synthetic = (peers: number) => `synthetic:classes=10,dim=32,samples=${peers * 200}`;

if (parts.has('scale')) {
  const scale: (PointResult & { k: string })[] = [];
  const sizes = [2, 4, 8, 16, 32, 64, 100].filter((n) => n <= Number(values['max-peers']));
  for (const peers of sizes) {
    for (const maxExperts of peers - 1 > K ? [0, K] : [0]) {
      const t0 = performance.now();
      const r = {
        ...point({ dataset: synthetic(peers), peers, rounds: ROUNDS, maxExperts, fedavg: maxExperts === 0 }),
        k: maxExperts ? String(maxExperts) : 'all',
      };
      scale.push(r);
      console.log(
        `scale ${String(peers).padStart(3)} sites in one process, dFLMoE k=${r.k.padEnd(3)}: ${r.dflmoe.secondsPerRound.toFixed(3)} s/round (${r.dflmoe.cpuSecondsPerRound.toFixed(3)} CPU s), ` +
          `${(r.dflmoe.bytesPerSiteRound / 1024).toFixed(1)} KiB per site per round, accuracy ${(r.dflmoe.accuracy * 100).toFixed(2)}%` +
          (r.fedavg
            ? `; FedAvg ${r.fedavg.secondsPerRound.toFixed(3)} s/round (${r.fedavg.cpuSecondsPerRound.toFixed(3)} CPU s), ${(r.fedavg.bytesPerSiteRound / 1024).toFixed(1)} KiB`
            : '') +
          `; peak RSS ${r.peakRssMiB.toFixed(0)} MiB (${(r.peakRssMiB / peers).toFixed(1)} MiB per site); ${r.rounds} rounds in ${((performance.now() - t0) / 1000).toFixed(0)} s`,
      );
      save('scale', scale);
    }
  }
}

if (parts.has('compare')) {
  // 64 sites: the bounded mixture against the full one, on synthetic data and on digits (about 22 training samples per site),
  // with dFLMoE's tuned Adam rate (3e-3, bench:tune), so that 10 rounds come close to convergence.
  const compare: { dataset: string; full: PointResult; bounded: PointResult; bytesRatio: number; expertsRatio: number; accuracyPoints: number }[] = [];
  for (const [dataset, minSize] of [
    [synthetic(64), 20],
    ['digits', 10],
  ] as const) {
    const full = point({ dataset, peers: 64, rounds: ROUNDS, maxExperts: 0, minSize, lr: 3e-3 });
    const bounded = point({ dataset, peers: 64, rounds: ROUNDS, maxExperts: K, minSize, lr: 3e-3 });
    const row = {
      dataset,
      full,
      bounded,
      bytesRatio: bounded.dflmoe.bytesPerSiteRound / full.dflmoe.bytesPerSiteRound,
      expertsRatio: bounded.dflmoe.expertsPerSite / full.dflmoe.expertsPerSite,
      accuracyPoints: (bounded.dflmoe.accuracy - full.dflmoe.accuracy) * 100,
    };
    compare.push(row);
    console.log(
      `64 sites on ${dataset.split(':')[0]}: k=${K} against all: bytes per site per round ${row.bytesRatio.toFixed(3)}, experts mixed per site ${row.expertsRatio.toFixed(3)} ` +
        `(${bounded.dflmoe.expertsPerSite.toFixed(1)} of ${full.dflmoe.expertsPerSite.toFixed(1)}), accuracy ${(bounded.dflmoe.accuracy * 100).toFixed(2)}% against ${(full.dflmoe.accuracy * 100).toFixed(2)}% ` +
        `(${row.accuracyPoints >= 0 ? '+' : ''}${row.accuracyPoints.toFixed(2)} points), ${bounded.dflmoe.cpuSecondsPerRound.toFixed(2)} against ${full.dflmoe.cpuSecondsPerRound.toFixed(2)} CPU s per round (all 64 sites)`,
    );
    save('compare', compare);
  }
}

// ------------------------------------------------------------ 9. dFLMoE against local-only, 100 sites in one process
if (parts.has('vs-local')) {
  // 100 sites, 3 rounds, the default bounded mixture; each algorithm's whole simulation (sites, rounds, pooled accuracy),
  // in wall seconds (as `dflmoe simulate` reports them) and CPU seconds (robust to other load). Three repetitions, each its own process.
  const runs: { dflmoe: number; local: number; ratio: number; cpuDflmoe: number; cpuLocal: number; cpuRatio: number }[] = [];
  for (let i = 0; i < 3; i++) {
    const r = point({ dataset: synthetic(100), peers: 100, rounds: 3, maxExperts: DEFAULT_ALGORITHM_OPTIONS.maxExperts, local: true });
    const d = r.dflmoe;
    const l = r.local!;
    runs.push({
      dflmoe: d.secondsPerRound * 3,
      local: l.secondsPerRound * 3,
      ratio: d.secondsPerRound / l.secondsPerRound,
      cpuDflmoe: d.cpuSeconds,
      cpuLocal: l.cpuSeconds,
      cpuRatio: d.cpuSeconds / l.cpuSeconds,
    });
    const x = runs[i];
    console.log(
      `100 sites, 3 rounds in one process: dFLMoE (k=${DEFAULT_ALGORITHM_OPTIONS.maxExperts}) ${x.dflmoe.toFixed(1)} s (${x.cpuDflmoe.toFixed(1)} CPU s), local-only ${x.local.toFixed(1)} s (${x.cpuLocal.toFixed(1)} CPU s): ` +
        `${x.ratio.toFixed(2)}x wall, ${x.cpuRatio.toFixed(2)}x CPU`,
    );
  }
  save('vsLocal', { runs, medianRatio: median(runs.map((r) => r.ratio)), medianCpuRatio: median(runs.map((r) => r.cpuRatio)) });
}

// ------------------------------------------------------------ 6. site processes over TCP
if (parts.has('tcp')) {
  const tcp: {
    peers: number;
    k: string;
    rounds: number;
    secondsPerRound: number;
    bytesPerSiteRound: number;
    peakRssMiB: { min: number; median: number; max: number };
    wallSeconds: number;
  }[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'dflmoe-tcp-scale-'));
  const sizes = values['tcp-sizes'] ? values['tcp-sizes'].split(',').map(Number) : [2, 4, 8, 16, 32, 64].filter((n) => n <= Number(values['max-tcp']));
  const runKs = values['tcp-k']!.split(',').map((k) => (k === 'k' ? String(K) : k));
  // Rows of sizes or mixtures not run now are kept from the previous results.
  if (values['tcp-sizes']) tcp.push(...((results.tcp as typeof tcp | undefined) ?? []).filter((r) => !sizes.includes(r.peers) || !runKs.includes(r.k)));
  for (const peers of sizes) {
    const kinds = values['tcp-k']!.split(',');
    for (const maxExperts of peers - 1 > K ? [...(kinds.includes('all') ? [0] : []), ...(kinds.includes('k') ? [K] : [])] : [0]) {
      const k = maxExperts ? String(maxExperts) : 'all';
      const sim = {
        ...DEFAULT_SIMULATION,
        dataset: synthetic(peers),
        peers,
        rounds: ROUNDS,
        partition: 'dirichlet:0.5',
        bodies: ['mlp:64'],
        featureDim: 32,
        minSize: 20,
        algorithms: ['dflmoe' as const],
        maxExperts,
      };
      const files = await writeConsortium({
        dir: join(dir, `${peers}-${k}`),
        algorithm: 'dflmoe',
        sim,
        deadlineMs: 600000,
        lingerMs: 5000,
        preprocessDeadlineMs: 600000,
      });
      const t0 = performance.now();
      await runConsortium(files, 3600000);
      const wallSeconds = (performance.now() - t0) / 1000;
      const res = files.sites.map((s) => JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8')) as PeerRunResult);
      const lines: RoundLine[] = files.sites.flatMap((s) =>
        readFileSync(join(s.out, 'metrics.jsonl'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l)),
      );
      const rss = res.map((r) => r.peakRssMiB).sort((a, b) => a - b);
      const row = {
        peers,
        k,
        rounds: ROUNDS,
        wallSeconds,
        // Mean over sites of a site's round (training, choosing, publishing, waiting for the others' heads, evaluating).
        secondsPerRound: lines.reduce((a, l) => a + l.seconds, 0) / lines.length,
        bytesPerSiteRound: res.reduce((a, r) => a + r.bytesSent, 0) / (peers * ROUNDS),
        peakRssMiB: { min: rss[0], median: median(rss), max: rss.at(-1)! },
      };
      tcp.push(row);
      tcp.sort((a, b) => a.peers - b.peers || a.k.localeCompare(b.k));
      console.log(
        `tcp ${String(peers).padStart(2)} site processes, dFLMoE k=${k.padEnd(3)}: ${row.secondsPerRound.toFixed(2)} s/round, ${(row.bytesPerSiteRound / 1024).toFixed(1)} KiB per site per round, ` +
          `peak RSS per site ${rss[0].toFixed(0)}-${rss.at(-1)!.toFixed(0)} MiB (median ${row.peakRssMiB.median.toFixed(0)}); ${ROUNDS} rounds in ${wallSeconds.toFixed(0)} s with process start`,
      );
      save('tcp', tcp);
    }
  }
}

// ------------------------------------------------------------ 7. head pulls while the serving site trains
async function pullOnce(node: Awaited<ReturnType<typeof createSiteNode>>, peer: Awaited<ReturnType<typeof createSiteNode>>): Promise<number> {
  const t0 = performance.now();
  const signal = AbortSignal.timeout(60000);
  const stream = await node.dialProtocol(peer.peerId, HEAD_PROTOCOL, { signal });
  stream.maxReadBufferLength = 1 << 24;
  const [, frames] = await Promise.all([writeFrames(stream, [HeadRequest.encode({ format: 1, minVersion: 0n })]), readFrames(stream, 2, 1 << 24, signal)]);
  if (!HeadResponse.decode(frames[0]).available || !frames[1]) throw new Error('no head');
  return performance.now() - t0;
}

if (parts.has('pull')) {
  const { ids, nodes, exchanges: exs, stop } = await loopbackMembers(2, { maxHeadBytes: 1 << 24, logger: quiet, heartbeatMs: 60000 });
  await nodes[1].dial(nodes[0].getMultiaddrs()[0]);
  // The serving site: an MLP 784-256-64 (Fashion-MNIST-sized) on 20,000 samples, batch 32, nine experts.
  const ds = makeSynthetic({ classes: 10, dim: 784, samples: 25000, seed: 2 });
  const [split] = partition(ds.labels, 10, 1, 'iid', { seed: 2 });
  const data = preparePeerData(ds, split);
  const ac = new AbortController();
  const site = new DflmoePeer({
    id: ids[0].peerId,
    data,
    body: { kind: 'mlp', hidden: [256] },
    featureDim: 64,
    headHidden: [],
    train: { seed: 1, batchSize: 32, epochs: 100, signal: ac.signal },
  });
  await exs[0].publish(site.encodeHead(1), 1);
  const idle: number[] = [];
  for (let i = 0; i < 10; i++) idle.push(await pullOnce(nodes[1], nodes[0]));
  const training = site.trainRound(1).catch((e: Error) => (e.name === 'AbortError' ? NaN : Promise.reject(e)));
  await new Promise((r) => setTimeout(r, 500));
  const busy: number[] = [];
  for (let i = 0; i < 20; i++) {
    busy.push(await pullOnce(nodes[1], nodes[0]));
    await new Promise((r) => setTimeout(r, 50));
  }
  ac.abort();
  await training;
  const pull = { idleMedianMs: median(idle), trainingMedianMs: median(busy), trainingMaxMs: Math.max(...busy), trainingMs: busy };
  console.log(
    `head pull (2.6 KB head) answered by a site: idle median ${pull.idleMedianMs.toFixed(1)} ms; while it trains (MLP 784-256-64, batch 32) median ${pull.trainingMedianMs.toFixed(1)} ms, max ${pull.trainingMaxMs.toFixed(1)} ms (20 pulls)`,
  );
  site.dispose();
  await stop();
  save('pull', pull);
}

// ------------------------------------------------------------ 8. the live view's cost
/**
 * One in-memory dFLMoE run (10 sites, 10 rounds), with or without the live
 * view serving two tabs: each tab (a client in another process, as a
 * browser is) loads the page and keeps the event stream open. Seconds per
 * round (wall, from the round results) and CPU seconds of this process per
 * round; with the view, the milliseconds its server spent answering and
 * writing events.
 */
async function liveRun(
  withView: boolean,
): Promise<{ secondsPerRound: number; cpuSecondsPerRound: number; serverMsPerRound?: number; modelMsPerRound?: number; events?: number }> {
  const rounds = 10;
  const board = withView ? new StatusBoard() : undefined;
  const server = board ? await LiveServer.start({ board, listen: '127.0.0.1:0' }) : undefined;
  // Two tabs in another process: the page, then the stream, counting the events they get.
  const tabs =
    server &&
    spawn(
      process.execPath,
      [
        '-e',
        `
    const http = require('node:http');
    let events = 0;
    for (let i = 0; i < 2; i++) {
      http.get(process.argv[1], (r) => r.resume());
      http.get(process.argv[1] + 'api/events', (r) => r.on('data', (d) => { events += (String(d).match(/^event: /gm) || []).length; }));
    }
    process.on('SIGTERM', () => { console.log(events); process.exit(0); });
  `,
        server.url,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
  if (server) while (server.openStreams < 2) await new Promise((r) => setTimeout(r, 20));
  const secs: number[] = [];
  const c0 = process.cpuUsage();
  await simulate(
    {
      ...DEFAULT_SIMULATION,
      dataset: synthetic(10),
      peers: 10,
      rounds,
      algorithms: ['dflmoe'],
      bodies: ['mlp:64'],
      featureDim: 32,
      partition: 'dirichlet:0.5',
      minSize: 20,
    },
    { logger: quiet, status: board, onRound: (_a, r) => secs.push(r.seconds) },
  );
  const cpu = cpuSince(c0);
  let events: number | undefined;
  if (tabs) {
    const out = new Promise<string>((resolve) => {
      let s = '';
      tabs.stdout!.on('data', (d: Buffer) => (s += d));
      tabs.once('exit', () => resolve(s));
    });
    tabs.kill('SIGTERM');
    events = Number((await out).trim());
  }
  const busy = server?.busyMs;
  await server?.close();
  return {
    secondsPerRound: secs.reduce((a, b) => a + b, 0) / rounds,
    cpuSecondsPerRound: cpu / rounds,
    ...(busy !== undefined ? { serverMsPerRound: busy / rounds, modelMsPerRound: feedingMs(board!) / rounds, events } : {}),
  };
}

/** Milliseconds the status model takes to be fed a run like the one on `board` (every site's rounds and members again, on a new board). */
function feedingMs(board: StatusBoard): number {
  const sites = board.snapshot().sites;
  const t0 = performance.now();
  const fresh = new StatusBoard();
  fresh.onChange(() => {});
  for (const s of sites) {
    const f = fresh.site({ id: s.id, algorithm: s.algorithm, rounds: s.rounds, members: s.members });
    for (let r = 1; r <= s.round; r++) {
      f.round({
        round: r,
        accuracy: s.accuracy[r - 1] ?? 0,
        loss: s.loss[r - 1] ?? 0,
        gate: s.gate[r - 1] ?? undefined,
        seconds: s.seconds[r - 1] ?? 0,
        bytesSent: r,
        bytesReceived: r,
      });
      f.members(s.members.map((m) => ({ ...m, lastHeadRound: r })));
    }
  }
  return performance.now() - t0;
}

if (parts.has('live')) {
  await liveRun(false); // warm-up
  const runs: { without: Awaited<ReturnType<typeof liveRun>>; with: Awaited<ReturnType<typeof liveRun>> }[] = [];
  // Seven interleaved pairs; the figure is the median of each pair's ratio.
  for (let rep = 0; rep < 7; rep++) runs.push({ without: await liveRun(false), with: await liveRun(true) });
  const ratios = (f: (r: Awaited<ReturnType<typeof liveRun>>) => number) => runs.map((p) => f(p.with) / f(p.without) - 1);
  const ratio = (f: (r: Awaited<ReturnType<typeof liveRun>>) => number) => median(ratios(f));
  const wallPairs = ratios((r) => r.secondsPerRound);
  const live = {
    sites: 10,
    rounds: 10,
    tabs: 2,
    wallOverhead: ratio((r) => r.secondsPerRound),
    wallOverheadRange: [Math.min(...wallPairs), Math.max(...wallPairs)],
    cpuOverhead: ratio((r) => r.cpuSecondsPerRound),
    /** The server's own time (answering and writing events) per round, as a share of the round without the view. */
    serverShare: median(runs.map((p) => p.with.serverMsPerRound! / 1000 / p.without.secondsPerRound)),
    /** The view's whole work (feeding the status model, and the server's time) per round, as a share of the round without the view. */
    viewShare: median(runs.map((p) => (p.with.serverMsPerRound! + p.with.modelMsPerRound!) / 1000 / p.without.secondsPerRound)),
    secondsPerRound: { without: median(runs.map((p) => p.without.secondsPerRound)), with: median(runs.map((p) => p.with.secondsPerRound)) },
    eventsPerTab: median(runs.map((p) => p.with.events! / 2)),
    runs,
  };
  console.log(
    `live view serving 2 tabs (10 sites in one process, 10 rounds, median of 7 interleaved pairs): round time ${(live.wallOverhead * 100).toFixed(2)}% ` +
      `(${live.secondsPerRound.without.toFixed(3)} -> ${live.secondsPerRound.with.toFixed(3)} s; pairs from ${(Math.min(...wallPairs) * 100).toFixed(1)}% to ${(Math.max(...wallPairs) * 100).toFixed(1)}%), CPU ${(live.cpuOverhead * 100).toFixed(2)}%; measured directly, the server's own time ${(live.serverShare * 100).toFixed(3)}% of a round, with the status model ${(live.viewShare * 100).toFixed(3)}%; ` +
      `${live.eventsPerTab} events per tab`,
  );
  save('live', live);
}

console.log(`wrote ${values.out}`);
