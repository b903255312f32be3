/**
 * In-process simulation: every algorithm runs on the same data, partition,
 * models (same initial weights per peer), epochs and optimiser settings.
 */
import { deriveSeed, featureSize, partitionHistograms, pooledStandardizer, formatPartition, loadDataset, parsePartition, partition, type Dataset, type LoadOptions } from '@dflmoe/data';
import { initBackend } from './backend.js';
import { DflmoePeer } from './algorithms/dflmoe.js';
import { FedAvgClient, checkSameArchitecture, federatedAverage } from './algorithms/fedavg.js';
import { LocalPeer } from './algorithms/local.js';
import type { PeerEval, PeerModelOptions, SupervisedModel } from './algorithms/common.js';
import { decodeBundle, encodeBundle, encodeHead } from './codec.js';
import * as tf from '@tensorflow/tfjs-core';
import { MemoryHub } from './exchange.js';
import { createHead, parseBodySpec, type BodySpec } from './model.js';
import { summarize, type AccuracySummary } from './metrics.js';
import { disposePeerData, preparePeerData, type DpOptions, type PeerData } from './train.js';
import { createLogger, type Logger } from './log.js';

export const ALGORITHMS = ['dflmoe', 'fedavg', 'local'] as const;
export type AlgorithmName = (typeof ALGORITHMS)[number];

export interface SimulationConfig {
  dataset: string;
  datasetOptions?: LoadOptions;
  peers: number;
  partition: string;
  rounds: number;
  algorithms: AlgorithmName[];
  seed: number;
  /** Body per peer, cycled over peers: `["mlp"]`, `["mlp:64", "cnn:8x16"]`. */
  bodies: string[];
  featureDim: number;
  headHidden: number[];
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** dFLMoE: weight of the own-head loss. */
  alpha: number;
  gateHidden: number;
  maxStaleness: number;
  testFraction: number;
  minSize: number;
  /**
   * `global`: standardize features with statistics pooled over all peers'
   * training splits (never test data); `local`: each peer its own.
   */
  standardize: 'global' | 'local';
  /**
   * dFLMoE and local-only: start every site's body and head from one shared
   * seed (as FedAvg does), so that feature spaces start aligned and the
   * identity-initialised FSTs are meaningful. Bodies still train apart.
   */
  sharedInit: boolean;
  /** dFLMoE: learning rate of the gate slots and FSTs of received experts, as a multiple of `learningRate`. */
  expertLrScale: number;
  /** Robustness experiments: the last `poisoned` sites are adversarial... */
  poisoned: number;
  /** ...publishing random heads, or training on flipped labels (`y -> C-1-y`). */
  poisonKind: 'random' | 'flipped';
  /** dFLMoE admission check (see `DflmoeOptions.admission`); undefined: off. */
  admission?: number;
  /** DP-SGD for every algorithm's local training; undefined: off. */
  dp?: DpOptions;
}

export const DEFAULT_SIMULATION: Omit<SimulationConfig, 'dataset'> = {
  peers: 4,
  partition: 'dirichlet:0.3',
  rounds: 10,
  algorithms: ['dflmoe', 'fedavg', 'local'],
  seed: 1,
  bodies: ['mlp'],
  featureDim: 64,
  headHidden: [],
  epochs: 1,
  batchSize: 32,
  learningRate: 1e-3,
  alpha: 0.2,
  gateHidden: 32,
  maxStaleness: 3,
  testFraction: 0.2,
  minSize: 10,
  standardize: 'global',
  sharedInit: true,
  expertLrScale: 1,
  poisoned: 0,
  poisonKind: 'flipped',
};

export interface PeerResult {
  id: string;
  accuracy: number;
  ownHeadAccuracy: number;
  bytesSent: number;
  bytesReceived: number;
  trainSamples: number;
  testSamples: number;
  body: string;
  /** dFLMoE: mean gate weight per expert on the peer's test split. */
  gateWeights?: Record<string, number>;
  /** dFLMoE: heads refused, by reason. */
  rejectedHeads?: Record<string, number>;
  /** With DP-SGD: (epsilon, delta) spent by this site's training. */
  privacy?: { epsilon: number; delta: number; steps: number };
}

export interface RoundResult {
  round: number;
  accuracyMean: number;
  accuracyStd: number;
  accuracyMin: number;
  peerAccuracy: number[];
  loss: number;
  bytesSent: number;
  seconds: number;
}

export interface AlgorithmResult {
  accuracy: AccuracySummary;
  /** With poisoned sites: the summary over honest sites only. */
  honestAccuracy?: AccuracySummary;
  bytesSent: number;
  wallSeconds: number;
  peers: PeerResult[];
  rounds: RoundResult[];
}

export interface SimulationResults {
  config: SimulationConfig;
  backend: string;
  dataset: { name: string; samples: number; classes: string[]; sampleShape: number[]; source: string };
  labelHistograms: number[][];
  algorithms: Partial<Record<AlgorithmName, AlgorithmResult>>;
}

export interface SimulationHooks {
  logger?: Logger;
  onRound?: (algorithm: AlgorithmName, r: RoundResult, totalRounds: number) => void;
}

type RoundPeer = { id: string; data: PeerData; evaluate(): PeerEval; dispose(): void };

/** Run the configured algorithms and collect comparable results. */
export async function simulate(partial: Partial<SimulationConfig> & { dataset: string }, hooks: SimulationHooks = {}): Promise<SimulationResults> {
  const cfg: SimulationConfig = { ...DEFAULT_SIMULATION, ...partial };
  validateConfig(cfg);
  const log = hooks.logger ?? createLogger('simulate');
  const backend = await initBackend();
  const ds = loadDataset(cfg.dataset, { seed: cfg.seed, ...cfg.datasetOptions });
  const splits = partition(ds.labels, ds.classNames.length, cfg.peers, parsePartition(cfg.partition), {
    seed: cfg.seed, testFraction: cfg.testFraction, minSize: cfg.minSize,
  });
  const bodies = cfg.peers > 0 ? Array.from({ length: cfg.peers }, (_, i) => cfg.bodies[i % cfg.bodies.length]) : [];
  const results: SimulationResults = {
    config: cfg,
    backend: backend.name,
    dataset: { name: ds.name, samples: ds.numSamples, classes: ds.classNames, sampleShape: ds.sampleShape, source: ds.source },
    labelHistograms: partitionHistograms(ds.labels, splits, ds.classNames.length),
    algorithms: {},
  };
  log.info(
    `${ds.name}: ${ds.numSamples} samples, ${cfg.peers} peers, ${formatPartition(parsePartition(cfg.partition))}, ` +
      `${cfg.rounds} rounds x ${cfg.epochs} epoch(s), bodies ${[...new Set(bodies)].join(', ')}`,
  );
  const st = cfg.standardize === 'global'
    ? pooledStandardizer(ds.features, featureSize(ds), splits)
    : undefined;
  const flipped = (i: number) => cfg.poisonKind === 'flipped' && i >= cfg.peers - cfg.poisoned;
  const datas = splits.map((s, i) => preparePeerData(flipped(i) ? flipLabels(ds) : ds, s, st));
  try {
    for (const alg of cfg.algorithms) {
      results.algorithms[alg] = await runAlgorithm(alg, cfg, ds, datas, bodies, hooks);
      const a = results.algorithms[alg]!;
      log.info(`${alg}: mean accuracy ${a.accuracy.mean.toFixed(4)} (min ${a.accuracy.min.toFixed(4)}), ${a.wallSeconds.toFixed(1)} s`);
    }
  } finally {
    datas.forEach(disposePeerData);
  }
  return results;
}

function validateConfig(c: SimulationConfig): void {
  const posInt = (k: keyof SimulationConfig) => {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
  };
  (['peers', 'rounds', 'epochs', 'batchSize', 'featureDim', 'gateHidden'] as const).forEach(posInt);
  if (!(c.learningRate > 0)) throw new Error(`learningRate must be positive, got ${c.learningRate}`);
  if (!(c.alpha >= 0 && c.alpha <= 1)) throw new Error(`alpha must be in [0, 1], got ${c.alpha}`);
  if (c.algorithms.length === 0) throw new Error('no algorithms selected');
  for (const a of c.algorithms) if (!ALGORITHMS.includes(a)) throw new Error(`unknown algorithm "${a}"; choose from ${ALGORITHMS.join(', ')}`);
  if (c.bodies.length === 0) throw new Error('at least one body is needed');
  if (!Number.isInteger(c.poisoned) || c.poisoned < 0 || c.poisoned >= c.peers) throw new Error(`poisoned must be an integer in [0, peers), got ${c.poisoned}`);
  c.bodies.forEach(parseBodySpec);
}

/** The same dataset with every label `y` replaced by `C-1-y` (a label-flipping attacker's data). */
function flipLabels(ds: Dataset): Dataset {
  const c = ds.classNames.length;
  return { ...ds, labels: Int32Array.from(ds.labels, (y) => c - 1 - y) };
}

/** A head of random weights, encoded as `peer`'s next version (a poisoning attacker). */
function randomHead(peer: DflmoePeer, version: number, seed: number): Uint8Array {
  const h = createHead(peer.headSpec, seed);
  const layers = h.map((l) => tf.tidy(() => ({ kernel: tf.mul(l.kernel, 5).dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array })));
  h.forEach((l) => tf.dispose([l.kernel, l.bias]));
  return encodeHead({ spec: peer.headSpec, version, peer: peer.id }, layers);
}

/** One initial model per body architecture for the whole consortium. */
export function sharedInitSeed(seed: number, body: string): number {
  return deriveSeed(seed, 'shared-init', body);
}

function peerOptions(cfg: SimulationConfig, data: PeerData, i: number, body: string): PeerModelOptions {
  const bodySpec: BodySpec = parseBodySpec(body);
  return {
    id: `peer-${i}`,
    data,
    body: bodySpec,
    featureDim: cfg.featureDim,
    headHidden: cfg.headHidden,
    train: { epochs: cfg.epochs, batchSize: cfg.batchSize, learningRate: cfg.learningRate, seed: deriveSeed(cfg.seed, 'peer', i), ...(cfg.dp ? { dp: cfg.dp } : {}) },
    ...(cfg.sharedInit ? { initSeed: sharedInitSeed(cfg.seed, body) } : {}),
  };
}

async function runAlgorithm(
  alg: AlgorithmName, cfg: SimulationConfig, _ds: Dataset, datas: PeerData[], bodies: string[], hooks: SimulationHooks,
): Promise<AlgorithmResult> {
  const t0 = performance.now();
  const sent = new Array<number>(cfg.peers).fill(0);
  const received = new Array<number>(cfg.peers).fill(0);
  const rounds: RoundResult[] = [];
  let peers: RoundPeer[] = [];
  let step: (round: number) => Promise<number>;
  let extra: (p: RoundPeer) => Partial<PeerResult> = () => ({});

  if (alg === 'dflmoe') {
    const hub = new MemoryHub();
    const ps = datas.map((d, i) => new DflmoePeer({
      ...peerOptions(cfg, d, i, bodies[i]), alpha: cfg.alpha, gateHidden: cfg.gateHidden, maxStaleness: cfg.maxStaleness, expertLrScale: cfg.expertLrScale, admission: cfg.admission,
    }));
    const exchanges = ps.map((p) => hub.join(p.id));
    peers = ps;
    const absorb = (i: number, round: number) => {
      for (const m of exchanges[i].drain()) ps[i].receiveHead(m.payload, m.from, round);
    };
    step = async (round) => {
      let loss = 0;
      for (let i = 0; i < ps.length; i++) {
        absorb(i, round);
        ps[i].startRound(round);
        loss += ps[i].trainRound(round);
        const random = cfg.poisonKind === 'random' && i >= cfg.peers - cfg.poisoned;
        await exchanges[i].publish(random ? randomHead(ps[i], round, deriveSeed(cfg.seed, 'poison', i, round)) : ps[i].encodeHead(round), round);
      }
      for (let i = 0; i < ps.length; i++) absorb(i, round);
      exchanges.forEach((e, i) => {
        sent[i] = e.stats().bytesSent;
        received[i] = e.stats().bytesReceived;
      });
      return loss / ps.length;
    };
    extra = (p) => ({ gateWeights: (p as DflmoePeer).meanGateWeights(), rejectedHeads: { ...(p as DflmoePeer).counters.rejected } });
  } else if (alg === 'fedavg') {
    // FedAvg starts every client from one shared model.
    const initSeed = deriveSeed(cfg.seed, 'fedavg-init');
    const cs = datas.map((d, i) => new FedAvgClient({ ...peerOptions(cfg, d, i, bodies[i]), initSeed }));
    peers = cs;
    checkSameArchitecture(cs);
    const limits = { maxBytes: 1 << 30 };
    let global: Uint8Array | undefined;
    step = async (round) => {
      let loss = 0;
      const uploads: { weights: ReturnType<typeof decodeBundle>['tensors']; samples: number }[] = [];
      for (let i = 0; i < cs.length; i++) {
        // Round 1 starts from the shared initial model, which every client already holds.
        if (global) cs[i].loadModel(global, limits);
        loss += cs[i].trainRound(round);
        const up = cs[i].encodeModel(round);
        sent[i] += up.length;
        uploads.push({ weights: decodeBundle(up, limits).tensors, samples: cs[i].data.trainSamples });
      }
      global = encodeBundle('model', { arch: cs[0].architecture(), round }, federatedAverage(uploads));
      // Evaluate the new global model on every peer's own test split.
      // (each client downloads it: that is the traffic from the server)
      cs.forEach((c, i) => {
        c.loadModel(global!, limits);
        received[i] += global!.length;
      });
      return loss / cs.length;
    };
  } else {
    const ls = datas.map((d, i) => new LocalPeer(peerOptions(cfg, d, i, bodies[i])));
    peers = ls;
    step = async (round) => ls.reduce((a, p) => a + p.trainRound(round), 0) / ls.length;
  }

  try {
    let prevBytes = 0;
    for (let round = 1; round <= cfg.rounds; round++) {
      const rt = performance.now();
      const loss = await step(round);
      const accs = peers.map((p) => p.evaluate().accuracy);
      const s = summarize(accs);
      const totalBytes = totalSent(alg, sent, received);
      const r: RoundResult = {
        round, accuracyMean: s.mean, accuracyStd: s.std, accuracyMin: s.min, peerAccuracy: accs, loss,
        bytesSent: totalBytes - prevBytes, seconds: (performance.now() - rt) / 1000,
      };
      prevBytes = totalBytes;
      rounds.push(r);
      hooks.onRound?.(alg, r, cfg.rounds);
    }
    const evals = peers.map((p) => p.evaluate());
    const peerResults: PeerResult[] = peers.map((p, i) => ({
      id: p.id,
      accuracy: evals[i].accuracy,
      ownHeadAccuracy: evals[i].ownHeadAccuracy,
      bytesSent: sent[i],
      bytesReceived: received[i],
      trainSamples: p.data.trainSamples,
      testSamples: p.data.testSamples,
      body: bodies[i],
      ...((p as unknown as SupervisedModel).privacySpent?.() ? { privacy: (p as unknown as SupervisedModel).privacySpent() } : {}),
      ...extra(p),
    }));
    const honest = peers.map((_, i) => i < cfg.peers - cfg.poisoned);
    return {
      accuracy: summarize(evals.map((e) => e.accuracy), peers.map((p) => p.data.testSamples)),
      ...(cfg.poisoned > 0 ? {
        honestAccuracy: summarize(evals.filter((_, i) => honest[i]).map((e) => e.accuracy), peers.filter((_, i) => honest[i]).map((p) => p.data.testSamples)),
      } : {}),
      bytesSent: totalSent(alg, sent, received),
      wallSeconds: (performance.now() - t0) / 1000,
      peers: peerResults,
      rounds,
    };
  } finally {
    peers.forEach((p) => p.dispose());
  }
}

/** Bytes that crossed the network: for FedAvg both directions (server sends too). */
function totalSent(alg: AlgorithmName, sent: number[], received: number[]): number {
  const up = sent.reduce((a, b) => a + b, 0);
  return alg === 'fedavg' ? up + received.reduce((a, b) => a + b, 0) : up;
}

