/**
 * In-process simulation: every algorithm runs on the same data, partition,
 * models (same initial weights per peer), epochs and optimiser settings.
 * All sites of an algorithm run the same round loop as `dflmoe peer`
 * (`runSite`), concurrently, over in-memory transports.
 */
import {
  featureSize, federatedStandardizer, loadDatasetAsync, partition, SHIFT_KINDS, type Dataset, type LoadOptions, type PeerSplit, type ShiftKind,
} from '@dflmoe/data';
import { capTrainPerSite, deriveSeed, holdoutSplit, partitionHistograms, formatPartition, parsePartition, shiftDatasetBySite } from '@dflmoe/data/internal';
import { initBackend } from './backend.js';
import { DEFAULT_ALGORITHM_OPTIONS, type AlgorithmOptions, type AlgorithmSite } from './algorithms/api.js';
import type { PeerModelOptions } from './algorithms/common.js';
import { DEFAULT_MAX_EXPERTS } from './algorithms/dflmoe.js';
import { checkSameArchitecture } from './algorithms/fedavg.js';
import { REGISTRY, getAlgorithm, type AlgorithmName } from './algorithms/registry.js';
import { bodySharingProblem, parseBodyCombiner, parseTopology, secureAggregationProblem } from './body-share.js';
import { FST_KINDS, parseBodySpec, type BodySpec, type FstKind } from './model.js';
import { resolveBody } from './custom-body.js';
import { checkBodyStandardizer, readBodyWeights, type BodyWeights } from './pretrained.js';
import { PRECISIONS, type Precision } from './codec.js';
import { summarize, type AccuracySummary } from './metrics.js';
import { memoryNetworks, networkBytes, runSite, type SiteRoundRecord } from './rounds.js';
import { accuracy, disposePeerData, predictClasses, preparePeerData, type DpOptions, type OptimizerKind, type PeerData } from './train.js';
import { createLogger, type Logger } from './log.js';
import { gateWeights, networkMembers, type StatusBoard } from './status.js';

/**
 * A simulation, as `dflmoe simulate` takes it: the dataset and its partition,
 * the algorithms, model, training and network settings.
 */
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
  /** Local optimiser of every algorithm. */
  optimizer: OptimizerKind;
  /** fedavg-ft: epochs of fine-tuning the global model before evaluating. */
  fineTuneEpochs: number;
  /** fedrep: head-only epochs (body frozen) before the body epochs. */
  headEpochs: number;
  /** dFLMoE: weight of the own-head loss. */
  alpha: number;
  gateHidden: number;
  /** dFLMoE experts and gossip models: rounds a received one stays usable. */
  maxStaleness: number;
  testFraction: number;
  minSize: number;
  /**
   * `federated`: standardize features with statistics pooled over all peers'
   * training splits (never test data), as sites merge their summaries (the
   * site config's `data.standardize` of the same name); `local`: each peer
   * its own. (`global`, the former name of `federated`, is read as it.)
   */
  standardize: 'federated' | 'local';
  /**
   * dFLMoE and local-only: start every site's body and head from one shared
   * seed (as FedAvg does), so that feature spaces start aligned and the
   * identity-initialised FSTs are meaningful. Bodies still train apart.
   */
  sharedInit: boolean;
  /** Every site's body starts from this pretrained body (a layers-format directory, as `dflmoe pretrain` writes). */
  pretrainedBody?: string;
  /** Never train the body: only heads (and dFLMoE's gates and transforms) learn. */
  freezeBody: boolean;
  /** dFLMoE: learning rate of the gate slots and FSTs of received experts, as a multiple of `learningRate`. */
  expertLrScale: number;
  /** Robustness experiments: the last `poisoned` sites are adversarial... */
  poisoned: number;
  /**
   * ...publishing random heads (dFLMoE only) and, where bodies are shared,
   * random bodies (`random`); training on flipped labels (`y -> C-1-y`,
   * `flipped`); or, where bodies are shared, publishing their body negated (`sign-flip`).
   */
  poisonKind: 'random' | 'flipped' | 'sign-flip';
  /** dFLMoE: also share bodies, combined peer to peer (fedrep-p2p always does). */
  shareBody: boolean;
  /** Sites that share bodies: publish and combine every this many rounds. */
  bodyEvery: number;
  /** Sites that share bodies: `mean`, `median` or `trimmed:<fraction>`. */
  bodyCombiner: string;
  /** Sites that share bodies: `full`, `ring` or `random:<k>` (k members drawn afresh each round). */
  topology: string;
  /** Sites that share bodies: combine them under secure aggregation (mean only; docs/secure-aggregation.md). */
  secureAggregation?: boolean;
  /** dFLMoE: form of each received expert's feature-space transform. */
  fst: FstKind;
  /** dFLMoE: weight of distilling the mixture into the own head (0: off). */
  distill: number;
  /** dFLMoE: mix at most this many received experts, chosen each round (0: every one). */
  maxExperts: number;
  /** dFLMoE: precision of published heads (float32 when undefined; float16 or int8 to save bytes). */
  headPrecision?: Precision;
  /** dFLMoE admission check (see `DflmoeOptions.admission`); undefined: off. */
  admission?: number;
  /** DP-SGD for every algorithm's local training; undefined: off. */
  dp?: DpOptions;
  /**
   * Cut every site's training split to at most this many samples (same label
   * distribution), keeping its test split: a sweep over data per site with a
   * stable test set. Undefined: keep all.
   */
  trainPerSite?: number;
  /**
   * Feature shift: every site sees its own transformation of the input
   * (images: rotation, contrast and brightness, noise; tables: a per-feature
   * affine change and noise), on its training and test rows alike.
   */
  featureShift: ShiftKind[];
  /**
   * `test`: evaluate on each site's test split; `validation`: hold out 20% of
   * each site's training split and evaluate on that instead, never touching
   * the test split (for hyperparameter grids).
   */
  evaluateOn: 'test' | 'validation';
}

/** What `simulate` uses for every setting not given (the command's defaults). */
export const DEFAULT_SIMULATION: Omit<SimulationConfig, 'dataset'> = {
  // The algorithms' own defaults (alpha, gate size, FST, ...) are defined once, in DEFAULT_ALGORITHM_OPTIONS.
  alpha: DEFAULT_ALGORITHM_OPTIONS.alpha,
  gateHidden: DEFAULT_ALGORITHM_OPTIONS.gateHidden,
  maxStaleness: DEFAULT_ALGORITHM_OPTIONS.maxStaleness,
  expertLrScale: DEFAULT_ALGORITHM_OPTIONS.expertLrScale,
  fst: DEFAULT_ALGORITHM_OPTIONS.fst,
  distill: DEFAULT_ALGORITHM_OPTIONS.distill,
  headPrecision: DEFAULT_ALGORITHM_OPTIONS.headPrecision,
  fineTuneEpochs: DEFAULT_ALGORITHM_OPTIONS.fineTuneEpochs,
  headEpochs: DEFAULT_ALGORITHM_OPTIONS.headEpochs,
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
  optimizer: 'adam',
  testFraction: 0.2,
  minSize: 10,
  standardize: 'federated',
  sharedInit: true,
  freezeBody: false,
  maxExperts: DEFAULT_MAX_EXPERTS,
  shareBody: false,
  bodyEvery: DEFAULT_ALGORITHM_OPTIONS.bodyEvery,
  bodyCombiner: DEFAULT_ALGORITHM_OPTIONS.bodyCombiner,
  topology: DEFAULT_ALGORITHM_OPTIONS.topology,
  poisoned: 0,
  poisonKind: 'flipped',
  featureShift: [],
  evaluateOn: 'test',
};

/** One site's result in one algorithm's run: accuracy, bytes, seconds, and what the algorithm adds. */
export interface PeerResult {
  id: string;
  accuracy: number;
  ownHeadAccuracy: number;
  bytesSent: number;
  bytesReceived: number;
  /** Sites that share bodies: the part of the bytes that were bodies. */
  bodyBytesSent?: number;
  bodyBytesReceived?: number;
  trainSamples: number;
  testSamples: number;
  body: string;
  /** dFLMoE: mean gate weight per expert on the peer's test split. */
  gateWeights?: Record<string, number>;
  /** dFLMoE: heads refused, by reason. */
  rejectedHeads?: Record<string, number>;
  /** Other algorithms: received messages refused, by reason (only when some were). */
  rejected?: Record<string, number>;
  /** With DP-SGD: (epsilon, delta) spent by this site's training. */
  privacy?: { epsilon: number; delta: number; steps: number };
  /** Accuracy of the site's final model on the pooled test splits of all sites. */
  pooledAccuracy?: number;
}

/** One round of one algorithm over all sites: accuracy across sites, loss, bytes and seconds. */
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

/** One algorithm's run: the accuracy summary across sites, bytes, seconds, every round and every site. */
export interface AlgorithmResult {
  accuracy: AccuracySummary;
  /** With poisoned sites: the summary over honest sites only. */
  honestAccuracy?: AccuracySummary;
  /**
   * Each site's final model on the pooled test splits of all sites (what it
   * knows beyond its own distribution), summarized over sites; with pooled
   * standardization only.
   */
  pooledAccuracy?: AccuracySummary;
  bytesSent: number;
  /** Sites that share bodies: the part of `bytesSent` that were bodies. */
  bodyBytesSent?: number;
  wallSeconds: number;
  peers: PeerResult[];
  rounds: RoundResult[];
}

/**
 * What `simulate` returns (and `dflmoe simulate` writes to `results.json`):
 * the settings, the data, and every algorithm's result.
 */
export interface SimulationResults {
  config: SimulationConfig;
  backend: string;
  dataset: { name: string; samples: number; classes: string[]; sampleShape: number[]; source: string };
  labelHistograms: number[][];
  algorithms: Partial<Record<AlgorithmName, AlgorithmResult>>;
}

/** What `simulate` reports as it runs: a logger, each round, the live view's status. */
export interface SimulationHooks {
  logger?: Logger;
  onRound?: (algorithm: AlgorithmName, r: RoundResult, totalRounds: number) => void;
  /** The live view's status: every site of every algorithm, fed round by round. */
  status?: StatusBoard;
}

/** Results of `cfg` before any algorithm ran: the settings, backend, dataset and partition. */
export function emptyResults(cfg: SimulationConfig, backend: string, ds: Dataset, splits: PeerSplit[]): SimulationResults {
  return {
    config: cfg,
    backend,
    dataset: { name: ds.name, samples: ds.numSamples, classes: ds.classNames, sampleShape: ds.sampleShape, source: ds.source },
    labelHistograms: partitionHistograms(ds.labels, splits, ds.classNames.length),
    algorithms: {},
  };
}

/** Run the configured algorithms and collect comparable results. */
export async function simulate(partial: Partial<SimulationConfig> & { dataset: string }, hooks: SimulationHooks = {}): Promise<SimulationResults> {
  const cfg: SimulationConfig = { ...DEFAULT_SIMULATION, ...partial };
  if ((cfg.standardize as string) === 'global') cfg.standardize = 'federated';
  validateConfig(cfg);
  const log = hooks.logger ?? createLogger('simulate');
  const backend = await initBackend();
  let ds = await loadDatasetAsync(cfg.dataset, { seed: cfg.seed, ...cfg.datasetOptions });
  const splits = siteSplits(ds, cfg);
  if (cfg.featureShift.length > 0) ds = shiftDatasetBySite(ds, splits, deriveSeed(cfg.seed, 'shift'), cfg.featureShift);
  const bodies = cfg.peers > 0 ? Array.from({ length: cfg.peers }, (_, i) => cfg.bodies[i % cfg.bodies.length]) : [];
  // Each body once: a saved model (tfjs:<dir>) is read here.
  const specs = new Map<string, BodySpec>();
  for (const b of new Set(bodies)) specs.set(b, await resolveBody(b));
  const results = emptyResults(cfg, backend.name, ds, splits);
  log.info(
    `${ds.name}: ${ds.numSamples} samples, ${cfg.peers} peers, ${formatPartition(parsePartition(cfg.partition))}, ` +
      `${cfg.rounds} rounds x ${cfg.epochs} epoch(s), bodies ${[...new Set(bodies)].join(', ')}`,
  );
  const initialBody = cfg.pretrainedBody !== undefined ? readBodyWeights(cfg.pretrainedBody) : undefined;
  if (initialBody) {
    checkBodyStandardizer(initialBody, featureSize(ds), ds.featureNames);
    log.info(`every site starts from the pretrained body ${initialBody.source}${cfg.freezeBody ? ' (frozen)' : ''}${initialBody.standardizer ? ', inputs standardized as it was trained' : ''}`);
  }
  // A pretrained body's own input statistics win: it learnt on inputs scaled with them.
  const st = initialBody?.standardizer ?? (cfg.standardize === 'federated' ? federatedStandardizer(ds, splits) : undefined);
  const flipped = (i: number) => cfg.poisonKind === 'flipped' && i >= cfg.peers - cfg.poisoned;
  const datas = splits.map((s, i) => preparePeerData(flipped(i) ? flipLabels(ds) : ds, s, st));
  // Every site's test rows together, for the pooled metric.
  const pooled = st ? preparePeerData(ds, { train: new Int32Array(0), test: Int32Array.from(splits.flatMap((s) => [...s.test])) }, st) : undefined;
  try {
    for (const alg of cfg.algorithms) {
      results.algorithms[alg] = await runAlgorithm(alg, cfg, datas, bodies, specs, hooks, log, pooled, initialBody);
      const a = results.algorithms[alg]!;
      log.info(`${alg}: mean accuracy ${a.accuracy.mean.toFixed(4)} (min ${a.accuracy.min.toFixed(4)}), ${a.wallSeconds.toFixed(1)} s`);
    }
  } finally {
    datas.forEach(disposePeerData);
    if (pooled) disposePeerData(pooled);
  }
  return results;
}

/** The sites' splits: partition, then the optional cap on training samples, then the optional validation holdout. */
function siteSplits(ds: Dataset, cfg: SimulationConfig): PeerSplit[] {
  let splits = partition(ds.labels, ds.classNames.length, cfg.peers, parsePartition(cfg.partition), {
    seed: cfg.seed, testFraction: cfg.testFraction, minSize: cfg.minSize,
  });
  if (cfg.trainPerSite !== undefined) splits = capTrainPerSite(splits, ds.labels, cfg.trainPerSite, deriveSeed(cfg.seed, 'cap'));
  if (cfg.evaluateOn === 'validation') {
    splits = splits.map((s, i) => {
      const h = holdoutSplit(s.train, ds.labels, { seed: deriveSeed(cfg.seed, 'validation', i) });
      return { train: h.train, test: h.validation };
    });
  }
  return splits;
}

/** Accuracy of `site`'s model on `data`'s test rows. */
function accuracyOn(site: AlgorithmSite, data: PeerData): number {
  const pred = predictClasses(data.xTest, (xb) => site.predict!(xb));
  return accuracy(pred, data.yTest);
}

function validateConfig(c: SimulationConfig): void {
  const posInt = (k: keyof SimulationConfig) => {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
  };
  (['peers', 'rounds', 'epochs', 'batchSize', 'featureDim', 'gateHidden', 'fineTuneEpochs'] as const).forEach(posInt);
  if (!Number.isInteger(c.headEpochs) || c.headEpochs < 0) throw new Error(`headEpochs must be a non-negative integer, got ${c.headEpochs}`);
  if (c.standardize !== 'federated' && c.standardize !== 'local') throw new Error(`standardize must be federated or local, got ${c.standardize}`);
  if (!(c.learningRate > 0)) throw new Error(`learningRate must be positive, got ${c.learningRate}`);
  if (!(c.alpha >= 0 && c.alpha <= 1)) throw new Error(`alpha must be in [0, 1], got ${c.alpha}`);
  if (c.trainPerSite !== undefined && (!Number.isInteger(c.trainPerSite) || c.trainPerSite < 1)) throw new Error(`trainPerSite must be a positive integer, got ${c.trainPerSite}`);
  for (const k of c.featureShift) if (!SHIFT_KINDS.includes(k)) throw new Error(`unknown feature shift "${k}"; choose from ${SHIFT_KINDS.join(', ')}`);
  if (c.evaluateOn !== 'test' && c.evaluateOn !== 'validation') throw new Error(`evaluateOn must be test or validation, got ${String(c.evaluateOn)}`);
  if (!FST_KINDS.includes(c.fst)) throw new Error(`fst must be one of ${FST_KINDS.join(', ')}, got ${c.fst}`);
  if (!(c.distill >= 0)) throw new Error(`distill must be a non-negative number, got ${c.distill}`);
  if (!Number.isInteger(c.maxExperts) || c.maxExperts < 0) throw new Error(`maxExperts must be a non-negative integer (0: all), got ${c.maxExperts}`);
  if (!Number.isInteger(c.bodyEvery) || c.bodyEvery < 1) throw new Error(`bodyEvery must be a positive integer, got ${c.bodyEvery}`);
  parseBodyCombiner(c.bodyCombiner);
  parseTopology(c.topology);
  const sharing = bodySharingProblem(c) ?? secureAggregationProblem(c);
  if (sharing) throw new Error(sharing);
  if (c.headPrecision !== undefined && !PRECISIONS.includes(c.headPrecision)) throw new Error(`headPrecision must be one of ${PRECISIONS.join(', ')}, got ${c.headPrecision}`);
  if (c.algorithms.length === 0) throw new Error('no algorithms selected');
  c.algorithms.forEach(getAlgorithm);
  if (c.bodies.length === 0) throw new Error('at least one body is needed');
  if (!Number.isInteger(c.poisoned) || c.poisoned < 0 || c.poisoned >= c.peers) throw new Error(`poisoned must be an integer in [0, peers), got ${c.poisoned}`);
  c.bodies.forEach(parseBodySpec);
}

/** The same dataset with every label `y` replaced by `C-1-y` (a label-flipping attacker's data). */
function flipLabels(ds: Dataset): Dataset {
  const c = ds.classNames.length;
  return { ...ds, labels: Int32Array.from(ds.labels, (y) => c - 1 - y) };
}

/** One initial model per body architecture for the whole consortium. */
export function sharedInitSeed(seed: number, body: string): number {
  return deriveSeed(seed, 'shared-init', body);
}

function peerOptions(cfg: SimulationConfig, data: PeerData, i: number, body: string, bodySpec: BodySpec, initialBody?: BodyWeights): PeerModelOptions {
  return {
    id: `peer-${i}`,
    data,
    body: bodySpec,
    featureDim: cfg.featureDim,
    headHidden: cfg.headHidden,
    train: {
      epochs: cfg.epochs, batchSize: cfg.batchSize, learningRate: cfg.learningRate, optimizer: cfg.optimizer,
      seed: deriveSeed(cfg.seed, 'peer', i), ...(cfg.dp ? { dp: cfg.dp } : {}),
    },
    ...(cfg.sharedInit ? { initSeed: sharedInitSeed(cfg.seed, body) } : {}),
    ...(initialBody ? { initialBody } : {}),
    freezeBody: cfg.freezeBody,
  };
}

function algorithmOptions(cfg: SimulationConfig, i: number): AlgorithmOptions {
  return {
    ...DEFAULT_ALGORITHM_OPTIONS,
    seed: cfg.seed, alpha: cfg.alpha, gateHidden: cfg.gateHidden, expertLrScale: cfg.expertLrScale, admission: cfg.admission, fst: cfg.fst, distill: cfg.distill, headPrecision: cfg.headPrecision,
    maxExperts: cfg.maxExperts,
    shareBody: cfg.shareBody, bodyEvery: cfg.bodyEvery, bodyCombiner: cfg.bodyCombiner, topology: cfg.topology, ...(cfg.secureAggregation ? { secureAggregation: true } : {}),
    ...(i >= cfg.peers - cfg.poisoned && cfg.poisonKind !== 'flipped' ? { poisonBody: cfg.poisonKind } : {}),
    maxStaleness: cfg.maxStaleness, fineTuneEpochs: cfg.fineTuneEpochs, headEpochs: cfg.headEpochs, maxModelBytes: 1 << 30,
    randomUpdates: cfg.poisonKind === 'random' && i >= cfg.peers - cfg.poisoned,
  };
}

async function runAlgorithm(
  name: AlgorithmName, cfg: SimulationConfig, datas: PeerData[], bodies: string[], specs: ReadonlyMap<string, BodySpec>, hooks: SimulationHooks, log: Logger,
  pooled?: PeerData, initialBody?: BodyWeights,
): Promise<AlgorithmResult> {
  const alg = getAlgorithm(name);
  const t0 = performance.now();
  const sites: AlgorithmSite[] = [];
  try {
    datas.forEach((d, i) => sites.push(alg.createSite(peerOptions(cfg, d, i, bodies[i], specs.get(bodies[i])!, initialBody), algorithmOptions(cfg, i))));
    if (alg.sameModel) checkSameArchitecture(sites, alg.label, REGISTRY.filter((a) => !a.sameModel).map((a) => a.name).join(' and '));
    const nets = memoryNetworks(alg, sites, 1 << 30, log);
    const ids = sites.map((s) => s.id);
    // A site's members in the live view: the other sites (serverless), the server, or none (local-only).
    const memberIds = (i: number) => (alg.network === 'peers' ? ids.filter((o) => o !== ids[i]) : alg.network === 'server' ? ['server'] : []);
    const feeds = hooks.status && sites.map((s, i) => hooks.status!.site({ id: s.id, algorithm: name, rounds: cfg.rounds, members: memberIds(i).map((id) => ({ id })), state: 'training' }));
    // A round's result once every site has finished it.
    const records = sites.map(() => [] as SiteRoundRecord[]);
    const rounds: RoundResult[] = [];
    let prevBytes = 0;
    let prevTime = performance.now();
    const onRecord = (i: number, rec: SiteRoundRecord) => {
      records[i].push(rec);
      if (feeds) {
        feeds[i].round({ ...rec, gate: gateWeights(ids[i], rec.experts), epsilon: rec.privacy?.epsilon, delta: rec.privacy?.delta });
        feeds[i].members(alg.network === 'server' ? [{ id: 'server', connected: true, lastHeadRound: rec.round }] : networkMembers(nets[i], memberIds(i)));
      }
      if (records.some((rs) => rs.length < rec.round)) return;
      const recs = records.map((rs) => rs[rec.round - 1]);
      const accs = recs.map((x) => x.accuracy);
      const s = summarize(accs);
      const total = networkBytes(alg, recs);
      const now = performance.now();
      const r: RoundResult = {
        round: rec.round, accuracyMean: s.mean, accuracyStd: s.std, accuracyMin: s.min, peerAccuracy: accs,
        loss: recs.reduce((a, x) => a + x.loss, 0) / recs.length, bytesSent: total - prevBytes, seconds: (now - prevTime) / 1000,
      };
      prevBytes = total;
      prevTime = now;
      rounds.push(r);
      hooks.onRound?.(name, r, cfg.rounds);
    };
    await Promise.all(sites.map((site, i) => runSite(site, nets[i], { rounds: cfg.rounds, onRound: (rec) => onRecord(i, rec) }).then(
      () => feeds?.[i].state('done'),
      (e: unknown) => {
        feeds?.[i].state('failed', e instanceof Error ? e.message : String(e));
        throw e;
      },
    )));
    const last = records.map((rs) => rs.at(-1)!);
    const peerResults: PeerResult[] = sites.map((p, i) => ({
      id: p.id,
      accuracy: last[i].accuracy,
      ownHeadAccuracy: last[i].ownHeadAccuracy,
      bytesSent: last[i].bytesSent,
      bytesReceived: last[i].bytesReceived,
      ...(last[i].bodyBytesSent !== undefined ? { bodyBytesSent: last[i].bodyBytesSent, bodyBytesReceived: last[i].bodyBytesReceived } : {}),
      trainSamples: p.data.trainSamples,
      testSamples: p.data.testSamples,
      body: bodies[i],
      ...(last[i].privacy ? { privacy: last[i].privacy } : {}),
      ...(p.resultExtras ? p.resultExtras() : Object.keys(last[i].rejected).length ? { rejected: last[i].rejected } : {}),
    }));
    if (pooled && sites.every((s) => s.predict)) sites.forEach((s, i) => (peerResults[i].pooledAccuracy = accuracyOn(s, pooled)));
    const honest = (i: number) => i < cfg.peers - cfg.poisoned;
    const summary = (keep: (i: number) => boolean) =>
      summarize(peerResults.filter((_, i) => keep(i)).map((p) => p.accuracy), peerResults.filter((_, i) => keep(i)).map((p) => p.testSamples));
    return {
      accuracy: summary(() => true),
      ...(cfg.poisoned > 0 ? { honestAccuracy: summary(honest) } : {}),
      ...(peerResults.every((p) => p.pooledAccuracy !== undefined) ? { pooledAccuracy: summarize(peerResults.map((p) => p.pooledAccuracy!)) } : {}),
      bytesSent: networkBytes(alg, last),
      ...(last.some((r) => r.bodyBytesSent !== undefined) ? { bodyBytesSent: last.reduce((a, r) => a + (r.bodyBytesSent ?? 0), 0) } : {}),
      wallSeconds: (performance.now() - t0) / 1000,
      peers: peerResults,
      rounds,
    };
  } finally {
    sites.forEach((p) => p.dispose());
  }
}
