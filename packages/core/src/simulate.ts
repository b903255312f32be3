/**
 * In-process simulation: every algorithm runs on the same data, partition,
 * models (same initial weights per peer), epochs and optimiser settings.
 * All sites of an algorithm run the same round loop as `dflmoe peer`
 * (`runSite`), concurrently, over in-memory transports.
 */
import {
  featureSize,
  labelledRows,
  loadDatasetAsync,
  partition,
  SHIFT_KINDS,
  taskDataset,
  type Dataset,
  type LoadOptions,
  type Modality,
  type PeerSplit,
  type ShiftKind,
  type Standardizer,
} from '@dflmoe/data';
import {
  agreedStandardizer,
  capTrainPerSite,
  federatedAgreement,
  federatedTaskAgreement,
  deriveSeed,
  holdoutSplit,
  partitionHistograms,
  formatPartition,
  parsePartition,
  shiftDatasetBySite,
} from '@dflmoe/data/internal';
import { initBackend } from './backend.js';
import { DEFAULT_LIMITS, type Algorithm, type AlgorithmSite } from './algorithms/api.js';
import type { PeerModelOptions } from './algorithms/common.js';
import { checkSameArchitecture } from './algorithms/fedavg.js';
import { REGISTRY, algorithmSettings, getAlgorithm, type AlgorithmName, type AlgorithmOptions, type AlgorithmSettings } from './algorithms/registry.js';
import { parseBodySpec, type BodySpec } from './model.js';
import { resolveBody } from './custom-body.js';
import { checkBodyStandardizer, readBodyWeights, type BodyWeights } from './pretrained.js';
import { summarize, type AccuracySummary } from './metrics.js';
import { memoryNetworks, networkBytes, runSite, type SiteRoundRecord } from './rounds.js';
import { datasetTask, metricOf, oneClassification, scaledTask, taskKind, type TaskKindName, type TaskResult } from './tasks/index.js';
import {
  DEFAULT_TRAIN,
  disposePeerData,
  evaluateTask,
  preparePeerData,
  prepareSiteTasks,
  siteTasksData,
  type DpOptions,
  type OptimizerKind,
  type PeerData,
  type SiteTasks,
} from './train.js';
import { createMultiTaskSite } from './algorithms/multi-task.js';
import { createLogger, type Logger } from './log.js';
import { checkModalities, siteBodies, siteModality, siteViews, type SiteView } from './site-views.js';
import { networkMembers, type StatusBoard } from './status.js';

/**
 * A simulation, as `dflmoe simulate` takes it: the dataset and its partition,
 * the algorithms, model, training and network settings, and any of the
 * algorithms' settings (`AlgorithmSettings`; what is left unset takes each
 * algorithm's default, which its variants may choose: see `algorithmSettings`).
 */
export interface SimulationConfig extends Partial<AlgorithmSettings> {
  /** The dataset to load by name (a built-in one or a CSV path, as `loadDatasetAsync` takes it). */
  dataset: string;
  /** Options for loading the dataset (a data directory, a row cap, a seed, synthetic data's shape); default none. */
  datasetOptions?: LoadOptions;
  /** The number of simulated sites (default 4). */
  peers: number;
  /**
   * A multi-task dataset (`digits-tasks`, ...): the tasks each site learns,
   * by site number, cycled over the sites; default the dataset's own
   * assignment (`Dataset.siteTasks`), else every task at every site.
   */
  siteTasks?: string[][];
  /**
   * How each site holds the data, by site number, cycled (issue #28): an
   * image dataset as `image`s or as a `table` of its pixels. A site's body
   * then takes its form (unless `bodies` is given: a CNN for images, an MLP
   * for tables), and sites agree on standardization with the sites of their
   * form; heads mix across forms. Default: every site holds the dataset as it is.
   */
  siteModalities?: Modality[];
  /** How the dataset is split over the sites: `iid`, `dirichlet:ALPHA`, ... (default `dirichlet:0.3`). */
  partition: string;
  /** Communication rounds each algorithm runs (default 10). */
  rounds: number;
  /** The algorithms to run, one after the other on the same split (default dFLMoE, FedAvg, local-only). */
  algorithms: AlgorithmName[];
  /** Seed of the partition, initialisation and training order: equal seeds give equal runs (default 1). */
  seed: number;
  /** Body per peer, cycled over peers: `["mlp"]`, `["mlp:64", "cnn:8x16"]`. */
  bodies: string[];
  /** Width of the feature vector each body outputs and each head takes (default 64). */
  featureDim: number;
  /** Hidden layer widths of each head (default none: a linear head). */
  headHidden: number[];
  /** Local epochs per round; unset: 1, or what an algorithm's variant says (dFLMoE with shared bodies: 2). */
  epochs?: number;
  /** Local training batch size. */
  batchSize: number;
  /** Local optimiser's learning rate. */
  learningRate: number;
  /** Local optimiser of every algorithm. */
  optimizer: OptimizerKind;
  /** The part of each site's rows held out as its test split (0..1, default 0.2). */
  testFraction: number;
  /** The fewest rows a site may get from the partition (default 10). */
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
  /** Robustness experiments: the last `poisoned` sites are adversarial... */
  poisoned: number;
  /**
   * ...publishing random heads (dFLMoE only) and, where bodies are shared,
   * random bodies (`random`); training on flipped labels (`y -> C-1-y`,
   * `flipped`); or, where bodies are shared, publishing their body negated (`sign-flip`).
   */
  poisonKind: 'random' | 'flipped' | 'sign-flip';
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

/** What `simulate` uses for every setting not given (the command's defaults); the algorithms' settings have theirs in their own schemas. */
export const DEFAULT_SIMULATION: Omit<SimulationConfig, 'dataset'> = {
  peers: 4,
  partition: 'dirichlet:0.3',
  rounds: 10,
  algorithms: ['dflmoe', 'fedavg', 'local'],
  seed: 1,
  bodies: ['mlp'],
  featureDim: 64,
  headHidden: [],
  batchSize: DEFAULT_TRAIN.batchSize,
  learningRate: DEFAULT_TRAIN.learningRate,
  optimizer: DEFAULT_TRAIN.optimizer,
  testFraction: 0.2,
  minSize: 10,
  standardize: 'federated',
  sharedInit: true,
  freezeBody: false,
  poisoned: 0,
  poisonKind: 'flipped',
  featureShift: [],
  evaluateOn: 'test',
};

/** One site's result in one algorithm's run: accuracy, bytes, seconds, and what the algorithm adds. */
export interface PeerResult {
  /** The site's id in the simulation (`site-0`, `site-1`, ...). */
  id: string;
  /** The site's test accuracy after the last round (0..1). */
  accuracy: number;
  /** The test accuracy of the site's own head alone after the last round. */
  ownHeadAccuracy: number;
  /** Bytes the site sent over the whole run (cumulative, bodies included). */
  bytesSent: number;
  /** Bytes the site received over the whole run (cumulative, bodies included). */
  bytesReceived: number;
  /** Sites that share bodies: the part of the bytes that were bodies. */
  bodyBytesSent?: number;
  /** Sites that share bodies: of `bytesReceived`, the bytes that were bodies. */
  bodyBytesReceived?: number;
  /** Rows in the site's training split. */
  trainSamples: number;
  /** Rows in the site's test split. */
  testSamples: number;
  /** The site's body architecture (`mlp`, `cnn:8x16`, ...). */
  body: string;
  /** How the site held the data (`SimulationConfig.siteModalities`). */
  modality?: Modality;
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
  /** Every task of the site: kind, test rows, metrics (see `SiteRoundRecord.tasks`). */
  tasks: Record<string, TaskResult>;
}

/** One task's metrics summarized over the sites that learn it. */
export interface TaskSummary {
  /** The task's kind (`classification`, `regression`). */
  kind: TaskKindName;
  /** Sites that learn the task. */
  sites: number;
  /** Each metric over those sites (the weighted mean by test rows). */
  metrics: Record<string, AccuracySummary>;
}

/** One round of one algorithm over all sites: accuracy across sites, loss, bytes and seconds. */
export interface RoundResult {
  /** The round (from 1). */
  round: number;
  /** Mean test accuracy over the sites after this round (unweighted). */
  accuracyMean: number;
  /** Standard deviation of the sites' test accuracy after this round. */
  accuracyStd: number;
  /** The worst site's test accuracy after this round. */
  accuracyMin: number;
  /** Each site's test accuracy after this round, in site order. */
  peerAccuracy: number[];
  /** Each task's headline metric over the sites that learn it (accuracy, RMSE, ...): its mean and its worst site. */
  tasks: Record<string, RoundHeadline>;
  /** Mean training loss over the sites this round. */
  loss: number;
  /** Bytes that crossed the network in this round alone (all sites' sends, plus the server's downloads), not cumulative. */
  bytesSent: number;
  /** Wall-clock seconds since the previous round finished. */
  seconds: number;
}

/** A task's headline metric in one round: which, its mean over the sites that learn the task, and the worst site's. */
export interface RoundHeadline {
  /** The task's kind. */
  kind: TaskKindName;
  /** The headline metric's name (`accuracy`, `rmse`, ...). */
  metric: string;
  /** The metric's mean over the sites that learn the task. */
  mean: number;
  /** The worst site's value (lowest, or highest where lower is better). */
  worst: number;
}

/** One algorithm's run: the accuracy summary across sites, bytes, seconds, every round and every site. */
export interface AlgorithmResult {
  /** The algorithm's settings in this run (what was set, its variants' defaults, the rest's defaults) and its local epochs. */
  settings: AlgorithmSettings & { epochs: number };
  /** Final test accuracy summarized over all sites (its `weightedMean` weighs each by its test rows). */
  accuracy: AccuracySummary;
  /** Every task's metrics over the sites that learn it, by task name. */
  tasks: Record<string, TaskSummary>;
  /** With poisoned sites: the summary over honest sites only. */
  honestAccuracy?: AccuracySummary;
  /**
   * Each site's final model on the pooled test splits of all sites (what it
   * knows beyond its own distribution), summarized over sites; with pooled
   * standardization only.
   */
  pooledAccuracy?: AccuracySummary;
  /** Bytes that crossed the network over the whole run, all sites (plus the server's downloads). */
  bytesSent: number;
  /** Sites that share bodies: the part of `bytesSent` that were bodies. */
  bodyBytesSent?: number;
  /** Wall-clock seconds of the algorithm's whole run. */
  wallSeconds: number;
  /** Each site's final result, in site order. */
  peers: PeerResult[];
  /** Every round's result, in order. */
  rounds: RoundResult[];
}

/**
 * What `simulate` returns (and `dflmoe simulate` writes to `results.json`):
 * the settings, the data, and every algorithm's result.
 */
export interface SimulationResults {
  /** The settings of the run, defaults filled in. */
  config: SimulationConfig;
  /** The TensorFlow.js backend that ran it (`wasm`, `cpu`, ...). */
  backend: string;
  /** The dataset: name, rows, class names, sample shape, where it came from, and its task. */
  dataset: {
    name: string;
    samples: number;
    classes: string[];
    sampleShape: number[];
    source: string;
    task: { name: string; kind: TaskKindName };
    /** A multi-task dataset: its tasks, and the tasks each site learns (by site). */
    tasks?: { name: string; kind: TaskKindName }[];
    siteTasks?: string[][];
  };
  /** Rows per class at each site after partitioning (site, then class). */
  labelHistograms: number[][];
  /** Each algorithm's result, by name (those that ran). */
  algorithms: Partial<Record<AlgorithmName, AlgorithmResult>>;
  /** Algorithms asked for that did not run, and why (one that needs the same model everywhere, given mixed bodies). */
  skipped?: Partial<Record<AlgorithmName, string>>;
}

/** An algorithm that cannot run on this consortium (mixed bodies where it averages models; no multi-task form): the others still run. */
class MixedBodiesRefused extends Error {}

/** What `simulate` reports as it runs: a logger, each round, the live view's status. */
export interface SimulationHooks {
  /** Where progress lines go (default none). */
  logger?: Logger;
  /** Called after each round of each algorithm with that round's result across sites. */
  onRound?: (algorithm: AlgorithmName, r: RoundResult, totalRounds: number) => void;
  /** The live view's status: every site of every algorithm, fed round by round. */
  status?: StatusBoard;
}

/** Results of `cfg` before any algorithm ran: the settings, backend, dataset and partition. */
export function emptyResults(cfg: SimulationConfig, backend: string, ds: Dataset, splits: PeerSplit[]): SimulationResults {
  return {
    config: cfg,
    backend,
    dataset: {
      name: ds.name,
      samples: ds.numSamples,
      classes: ds.classNames,
      sampleShape: ds.sampleShape,
      source: ds.source,
      task: (({ name, kind }) => ({ name, kind }))(datasetTask(ds)),
      ...(ds.tasks ? { tasks: ds.tasks.map((t) => ({ name: t.name, kind: t.kind })), siteTasks: splits.map((_, i) => assignedTasks(ds, cfg, i)) } : {}),
    },
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
  for (const w of ds.warnings ?? []) log.warn(`${ds.name}: ${w}`);
  if (cfg.siteTasks && !ds.tasks) throw new Error(`siteTasks needs a multi-task dataset (digits-tasks, fashion-mnist-tasks); ${ds.name} has one task`);
  const splits = siteSplits(ds, cfg);
  if (cfg.featureShift.length > 0) ds = shiftDatasetBySite(ds, splits, deriveSeed(cfg.seed, 'shift'), cfg.featureShift);
  const bodies = siteBodies(cfg.peers, cfg.bodies, partial.bodies !== undefined, cfg.siteModalities);
  // Sites whose bodies their modalities chose: the results name each site's.
  if (cfg.siteModalities && partial.bodies === undefined) cfg.bodies = bodies;
  // Each body once: a saved model (tfjs:<dir>) is read here.
  const specs = new Map<string, BodySpec>();
  for (const b of new Set(bodies)) specs.set(b, await resolveBody(b));
  const results = emptyResults(cfg, backend.name, ds, splits);
  log.info(
    `${ds.name}: ${ds.numSamples} samples, ${cfg.peers} sites, ${formatPartition(parsePartition(cfg.partition))}, ` +
      `${cfg.rounds} rounds${cfg.epochs !== undefined ? ` x ${cfg.epochs} epoch(s)` : ''}, bodies ${[...new Set(bodies)].join(', ')}`,
  );
  const initialBody = cfg.pretrainedBody !== undefined ? readBodyWeights(cfg.pretrainedBody) : undefined;
  if (initialBody) {
    checkBodyStandardizer(initialBody, featureSize(ds), ds.featureNames);
    log.info(
      `every site starts from the pretrained body ${initialBody.source}${cfg.freezeBody ? ' (frozen)' : ''}${initialBody.standardizer ? ', inputs standardized as it was trained' : ''}`,
    );
  }
  // A pretrained body's own input statistics win: it learnt on inputs scaled with them.
  const agreement = cfg.standardize === 'federated' ? federatedAgreement(ds, splits) : undefined;
  const st = initialBody?.standardizer ?? (agreement ? agreedStandardizer(agreement) : undefined);
  const flipped = (i: number) => cfg.poisonKind === 'flipped' && i >= cfg.peers - cfg.poisoned;
  // A regression target is standardized like the features: pooled over every site's training rows, or each site's own.
  // (The agreement's scale, from the sites' sums: what site processes agree on, to the bit.)
  const task = st ? scaledTask(ds, Int32Array.from(splits.flatMap((s) => [...s.train])), agreement?.task?.scale) : undefined;
  // Each site's form of the data, and the standardization agreed by the sites of its form.
  const views = siteViews(ds, splits, cfg.siteModalities, cfg.standardize === 'federated', st);
  const multi = ds.tasks ? multiTaskData(ds, cfg, splits, st, views) : undefined;
  const datas = multi
    ? multi.map(siteTasksData)
    : splits.map((s, i) => preparePeerData(flipped(i) ? flipLabels(views[i].ds) : views[i].ds, s, views[i].st, task));
  // Every site's test rows together, for the pooled metric (in each form of the data, standardized as its sites agreed).
  const allTest = { train: new Int32Array(0), test: Int32Array.from(splits.flatMap((s) => [...s.test])) };
  const pooledByForm = new Map<Modality | undefined, PeerData>();
  if (st && !multi) for (const v of views) if (!pooledByForm.has(v.modality)) pooledByForm.set(v.modality, preparePeerData(v.ds, allTest, v.st, task));
  const pooled = pooledByForm.size ? views.map((v) => pooledByForm.get(v.modality)!) : undefined;
  try {
    for (const alg of cfg.algorithms) {
      try {
        results.algorithms[alg] = await runAlgorithm(alg, cfg, datas, bodies, specs, hooks, log, pooled, initialBody, multi);
      } catch (e) {
        if (!(e instanceof MixedBodiesRefused) || cfg.algorithms.length === 1) throw e;
        log.warn(`skipped ${alg}: ${e.message}`);
        results.skipped = { ...results.skipped, [alg]: e.message };
        continue;
      }
      const a = results.algorithms[alg]!;
      log.info(`${alg}: ${headlineLine(a)}, ${a.wallSeconds.toFixed(1)} s`);
    }
  } finally {
    datas.forEach(disposePeerData);
    pooledByForm.forEach(disposePeerData);
  }
  return results;
}

/** The tasks site `i` learns in a simulation of the multi-task `ds` (see `SimulationConfig.siteTasks`). */
export function assignedTasks(ds: Dataset, cfg: Pick<SimulationConfig, 'siteTasks'>, i: number): string[] {
  const plan = cfg.siteTasks ?? ds.siteTasks ?? [ds.tasks!.map((t) => t.name)];
  return plan[i % plan.length];
}

/**
 * Each site's tasks of a multi-task dataset, as tensors: every task's
 * regression scale pooled over the training rows of the sites that learn it.
 */
function multiTaskData(ds: Dataset, cfg: SimulationConfig, splits: PeerSplit[], st: Standardizer | undefined, views: SiteView[]): SiteTasks[] {
  if (cfg.poisoned > 0) throw new Error('poisoned sites are not simulated with a multi-task dataset');
  const names = new Set(ds.tasks!.map((t) => t.name));
  const plan = splits.map((_, i) => assignedTasks(ds, cfg, i));
  for (const [i, ts] of plan.entries()) {
    const bad = ts.find((t) => !names.has(t));
    if (bad !== undefined) throw new Error(`site ${i}'s task "${bad}" is not a task of ${ds.name}; its tasks are ${[...names].join(', ')}`);
    if (ts.length === 0) throw new Error(`site ${i} has no task to learn`);
  }
  // A regression target's pooled scale from the sites' sums, as site processes agree on it (to the bit).
  const agreed = cfg.standardize === 'federated' ? federatedTaskAgreement(ds, splits, plan) : undefined;
  const infos = new Map(
    [...names].map((name) => {
      const view = taskDataset(ds, name);
      const rows = Int32Array.from(splits.flatMap((s, i) => (plan[i].includes(name) ? [...labelledRows(view, s.train)] : [])));
      return [name, st ? scaledTask(view, rows, agreed?.find((a) => a.name === name)?.scale) : datasetTask(view)];
    }),
  );
  const out: SiteTasks[] = [];
  try {
    for (const [i, s] of splits.entries())
      out.push(
        prepareSiteTasks(
          views[i].ds,
          s,
          views[i].st,
          plan[i].map((t) => infos.get(t)!),
        ),
      );
  } catch (e) {
    out.forEach((m) => m.tasks.forEach(disposePeerData));
    throw e;
  }
  return out;
}

/** The sites' splits: partition, then the optional cap on training samples, then the optional validation holdout. */
function siteSplits(ds: Dataset, cfg: SimulationConfig): PeerSplit[] {
  let splits = partition(ds.labels, ds.classNames.length, cfg.peers, parsePartition(cfg.partition), {
    seed: cfg.seed,
    testFraction: cfg.testFraction,
    minSize: cfg.minSize,
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

/** Each task's metrics over the sites that learn it. */
export function summarizeTasks(peers: { tasks: Record<string, TaskResult> }[]): Record<string, TaskSummary> {
  const out: Record<string, TaskSummary> = {};
  const names = [...new Set(peers.flatMap((p) => Object.keys(p.tasks)))].sort();
  for (const name of names) {
    const rs = peers.flatMap((p) => (p.tasks[name] ? [p.tasks[name]] : []));
    const kind = taskKind(rs[0].kind);
    out[name] = {
      kind: kind.name,
      sites: rs.length,
      metrics: Object.fromEntries(
        kind.metricNames.map((m) => [
          m,
          summarize(
            rs.map((r) => metricOf(r, m)),
            rs.map((r) => r.testRows),
          ),
        ]),
      ),
    };
  }
  return out;
}

/** Each task's headline metric over the sites' records of one round. */
export function roundHeadlines(recs: Pick<SiteRoundRecord, 'tasks'>[]): Record<string, RoundHeadline> {
  const out: Record<string, RoundHeadline> = {};
  for (const [name, t] of Object.entries(summarizeTasks(recs))) {
    const h = taskKind(t.kind).headline;
    const m = t.metrics[h.metric];
    out[name] = { kind: t.kind, metric: h.metric, mean: m.mean, worst: h.higherIsBetter ? m.min : m.max };
  }
  return out;
}

/** `mean accuracy 0.9113 (min 0.8438)`, or each task's headline metric (`label: mean rmse 54.2 (worst 61.0)`) when a site learns another kind. */
export function headlineLine(a: Pick<AlgorithmResult, 'accuracy' | 'tasks'>): string {
  if (oneClassification(a.tasks)) return `mean accuracy ${a.accuracy.mean.toFixed(4)} (min ${a.accuracy.min.toFixed(4)})`;
  return Object.entries(a.tasks)
    .map(([name, t]) => {
      const h = taskKind(t.kind).headline;
      const m = t.metrics[h.metric];
      return `${name}: mean ${h.metric} ${m.mean.toPrecision(4)} (worst ${(h.higherIsBetter ? m.min : m.max).toPrecision(4)})`;
    })
    .join('; ');
}

/** Accuracy of `site`'s model on `data`'s test rows. */
function accuracyOn(site: AlgorithmSite, data: PeerData): number {
  return evaluateTask(data.task, data.xTest, data.yTest, (xb) => site.predict!(xb)).accuracy ?? NaN;
}

function validateConfig(c: SimulationConfig): void {
  const posInt = (k: keyof SimulationConfig) => {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
  };
  (['peers', 'rounds', 'batchSize', 'featureDim'] as const).forEach(posInt);
  if (c.epochs !== undefined) posInt('epochs');
  if (c.standardize !== 'federated' && c.standardize !== 'local') throw new Error(`standardize must be federated or local, got ${c.standardize}`);
  if (!(c.learningRate > 0)) throw new Error(`learningRate must be positive, got ${c.learningRate}`);
  if (c.trainPerSite !== undefined && (!Number.isInteger(c.trainPerSite) || c.trainPerSite < 1))
    throw new Error(`trainPerSite must be a positive integer, got ${c.trainPerSite}`);
  for (const k of c.featureShift) if (!SHIFT_KINDS.includes(k)) throw new Error(`unknown feature shift "${k}"; choose from ${SHIFT_KINDS.join(', ')}`);
  if (c.evaluateOn !== 'test' && c.evaluateOn !== 'validation') throw new Error(`evaluateOn must be test or validation, got ${String(c.evaluateOn)}`);
  if (c.algorithms.length === 0) throw new Error('no algorithms selected');
  // Every algorithm's settings, checked by their schemas before anything runs.
  for (const a of c.algorithms) simulationSettings(c, a);
  if (c.bodies.length === 0) throw new Error('at least one body is needed');
  if (!Number.isInteger(c.poisoned) || c.poisoned < 0 || c.poisoned >= c.peers) throw new Error(`poisoned must be an integer in [0, peers), got ${c.poisoned}`);
  c.bodies.forEach(parseBodySpec);
  checkModalities(c.siteModalities);
  if (c.siteModalities && c.pretrainedBody !== undefined)
    throw new Error('a pretrained body takes one form of the data; it is not simulated with siteModalities');
}

/** The settings algorithm `name` runs with in simulation `c`, and its local epochs (see `algorithmSettings`). */
export function simulationSettings(c: SimulationConfig, name: AlgorithmName): AlgorithmSettings & { epochs: number } {
  const { settings, epochs } = algorithmSettings(getAlgorithm(name), c, { freezeBody: c.freezeBody });
  return { ...settings, epochs: epochs ?? DEFAULT_TRAIN.epochs };
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

/**
 * Make the algorithm's sites (into `sites`, so that the caller disposes those
 * made before a refusal): a multi-task site per site with several tasks; an
 * algorithm that needs one model everywhere refuses sites with different ones.
 */
function createSites(
  sites: AlgorithmSite[],
  alg: Algorithm,
  cfg: SimulationConfig,
  settings: AlgorithmSettings & { epochs: number },
  datas: PeerData[],
  bodies: string[],
  specs: ReadonlyMap<string, BodySpec>,
  initialBody?: BodyWeights,
  multi?: SiteTasks[],
): void {
  datas.forEach((d, i) => {
    const base = peerOptions(cfg, settings.epochs, d, i, bodies[i], specs.get(bodies[i])!, initialBody);
    if (multi && !alg.multiTask)
      throw new MixedBodiesRefused(`${alg.label} has no multi-task form: it averages whole models, and a multi-task site's heads stay its own`);
    sites.push(multi ? createMultiTaskSite(alg, base, multi[i], algorithmOptions(cfg, settings, i)) : alg.createSite(base, algorithmOptions(cfg, settings, i)));
  });
  if (alg.sameModel) {
    try {
      checkSameArchitecture(
        sites,
        alg.label,
        REGISTRY.filter((a) => !a.sameModel)
          .map((a) => a.name)
          .join(' and '),
      );
    } catch (e) {
      throw new MixedBodiesRefused((e as Error).message);
    }
  }
}

/** An algorithm's accuracy over its sites (weighted by test rows; the honest ones apart when some are poisoned), per task, and its bytes. */
function algorithmSummary(
  alg: Algorithm,
  cfg: SimulationConfig,
  peerResults: PeerResult[],
  last: SiteRoundRecord[],
): Omit<AlgorithmResult, 'settings' | 'wallSeconds' | 'peers' | 'rounds'> {
  const honest = (i: number) => i < cfg.peers - cfg.poisoned;
  const summary = (keep: (i: number) => boolean) =>
    summarize(
      peerResults.filter((_, i) => keep(i)).map((p) => p.accuracy),
      peerResults.filter((_, i) => keep(i)).map((p) => p.testSamples),
    );
  return {
    accuracy: summary(() => true),
    tasks: summarizeTasks(peerResults),
    ...(cfg.poisoned > 0 ? { honestAccuracy: summary(honest) } : {}),
    ...(peerResults.every((p) => p.pooledAccuracy !== undefined) ? { pooledAccuracy: summarize(peerResults.map((p) => p.pooledAccuracy!)) } : {}),
    bytesSent: networkBytes(alg, last),
    ...(last.some((r) => r.bodyBytesSent !== undefined) ? { bodyBytesSent: last.reduce((a, r) => a + (r.bodyBytesSent ?? 0), 0) } : {}),
  };
}

/** A site's result: its last round's record, its data's size, body and form, and what its algorithm adds. */
function peerResult(p: AlgorithmSite, last: SiteRoundRecord, body: string, modality: Modality | undefined): PeerResult {
  return {
    id: p.id,
    accuracy: last.accuracy,
    ownHeadAccuracy: last.ownHeadAccuracy,
    bytesSent: last.bytesSent,
    bytesReceived: last.bytesReceived,
    ...(last.bodyBytesSent !== undefined ? { bodyBytesSent: last.bodyBytesSent, bodyBytesReceived: last.bodyBytesReceived } : {}),
    trainSamples: p.data.trainSamples,
    testSamples: p.data.testSamples,
    body,
    ...(modality ? { modality } : {}),
    ...(last.privacy ? { privacy: last.privacy } : {}),
    ...(p.resultExtras ? p.resultExtras() : Object.keys(last.rejected).length ? { rejected: last.rejected } : {}),
    tasks: last.tasks,
  };
}

function peerOptions(
  cfg: SimulationConfig,
  epochs: number,
  data: PeerData,
  i: number,
  body: string,
  bodySpec: BodySpec,
  initialBody?: BodyWeights,
): PeerModelOptions {
  return {
    id: `site-${i}`,
    data,
    body: bodySpec,
    featureDim: cfg.featureDim,
    headHidden: cfg.headHidden,
    train: {
      epochs,
      batchSize: cfg.batchSize,
      learningRate: cfg.learningRate,
      optimizer: cfg.optimizer,
      seed: deriveSeed(cfg.seed, 'peer', i),
      ...(cfg.dp ? { dp: cfg.dp } : {}),
    },
    ...(cfg.sharedInit ? { initSeed: sharedInitSeed(cfg.seed, body) } : {}),
    ...(initialBody ? { initialBody } : {}),
    freezeBody: cfg.freezeBody,
  };
}

function algorithmOptions(cfg: SimulationConfig, settings: AlgorithmSettings, i: number): AlgorithmOptions {
  const poisoned = i >= cfg.peers - cfg.poisoned;
  return {
    ...settings,
    seed: cfg.seed,
    maxHeadBytes: DEFAULT_LIMITS.maxHeadBytes,
    maxModelBytes: 1 << 30,
    ...(poisoned && cfg.poisonKind !== 'flipped' ? { poisonBody: cfg.poisonKind } : {}),
    randomUpdates: cfg.poisonKind === 'random' && poisoned,
  };
}

async function runAlgorithm(
  name: AlgorithmName,
  cfg: SimulationConfig,
  datas: PeerData[],
  bodies: string[],
  specs: ReadonlyMap<string, BodySpec>,
  hooks: SimulationHooks,
  log: Logger,
  pooled?: PeerData[],
  initialBody?: BodyWeights,
  multi?: SiteTasks[],
): Promise<AlgorithmResult> {
  const alg = getAlgorithm(name);
  const t0 = performance.now();
  const sites: AlgorithmSite[] = [];
  const settings = simulationSettings(cfg, name);
  try {
    createSites(sites, alg, cfg, settings, datas, bodies, specs, initialBody, multi);
    const nets = memoryNetworks(alg, sites, 1 << 30, log);
    const ids = sites.map((s) => s.id);
    // A site's members in the live view: the other sites (serverless), the server, or none (local-only).
    const memberIds = (i: number) => (alg.network === 'peers' ? ids.filter((o) => o !== ids[i]) : alg.network === 'server' ? ['server'] : []);
    const feeds =
      hooks.status &&
      sites.map((s, i) =>
        hooks.status!.site({
          id: s.id,
          algorithm: name,
          ...(cfg.siteModalities ? { modality: siteModality(cfg.siteModalities, i) } : {}),
          rounds: cfg.rounds,
          members: memberIds(i).map((id) => ({ id })),
          state: 'training',
        }),
      );
    // A round's result once every site has finished it.
    const records = sites.map(() => [] as SiteRoundRecord[]);
    const rounds: RoundResult[] = [];
    let prevBytes = 0;
    let prevTime = performance.now();
    const onRecord = (i: number, rec: SiteRoundRecord) => {
      records[i].push(rec);
      if (feeds) {
        feeds[i].record(rec);
        feeds[i].members(alg.network === 'server' ? [{ id: 'server', connected: true, lastHeadRound: rec.round }] : networkMembers(nets[i], memberIds(i)));
      }
      if (records.some((rs) => rs.length < rec.round)) return;
      const recs = records.map((rs) => rs[rec.round - 1]);
      const accs = recs.map((x) => x.accuracy);
      const s = summarize(accs);
      const total = networkBytes(alg, recs);
      const now = performance.now();
      const r: RoundResult = {
        round: rec.round,
        accuracyMean: s.mean,
        accuracyStd: s.std,
        accuracyMin: s.min,
        peerAccuracy: accs,
        tasks: roundHeadlines(recs),
        loss: recs.reduce((a, x) => a + x.loss, 0) / recs.length,
        bytesSent: total - prevBytes,
        seconds: (now - prevTime) / 1000,
      };
      prevBytes = total;
      prevTime = now;
      rounds.push(r);
      hooks.onRound?.(name, r, cfg.rounds);
    };
    await Promise.all(
      sites.map((site, i) =>
        runSite(site, nets[i], { rounds: cfg.rounds, onRound: (rec) => onRecord(i, rec) }).then(
          () => feeds?.[i].state('done'),
          (e: unknown) => {
            feeds?.[i].state('failed', e instanceof Error ? e.message : String(e));
            throw e;
          },
        ),
      ),
    );
    const last = records.map((rs) => rs.at(-1)!);
    const peerResults = sites.map((p, i) => peerResult(p, last[i], bodies[i], cfg.siteModalities ? siteModality(cfg.siteModalities, i) : undefined));
    if (pooled && sites.every((s) => s.predict)) sites.forEach((s, i) => (peerResults[i].pooledAccuracy = accuracyOn(s, pooled[i])));
    return { settings, ...algorithmSummary(alg, cfg, peerResults, last), wallSeconds: (performance.now() - t0) / 1000, peers: peerResults, rounds };
  } finally {
    sites.forEach((p) => p.dispose());
  }
}
