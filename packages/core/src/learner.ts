/**
 * The embedding API: one dFLMoE site as an object. Give it data, a model
 * spec and a `HeadExchange`; call `runRound()` as often as you like; read
 * the metrics it returns. `dflmoe peer` is this plus libp2p and a config file.
 */
import type * as tfl from '@tensorflow/tfjs-layers';
import { featureSize, fitStandardizer, partition, type Dataset, type PeerSplit, type Standardizer } from '@dflmoe/data';
import { parsePartition } from '@dflmoe/data/internal';
import { DflmoePeer } from './algorithms/dflmoe.js';
import { DflmoeSite } from './algorithms/dflmoe-site.js';
import { DEFAULT_LIMITS, type SiteNetwork } from './algorithms/api.js';
import { dflmoe } from './algorithms/dflmoe-site.js';
import type { DflmoeSettings } from './algorithms/dflmoe-settings.js';
import { algorithmSettings, type AlgorithmSettings } from './algorithms/registry.js';
import type { StalenessSettings } from './experts.js';
import { siteBodyShare } from './algorithms/site.js';
import { siteRound, type SiteRoundRecord } from './rounds.js';
import { initBackend } from './backend.js';
import type { HeadExchange } from './exchange.js';
import type { AgreedData } from './agree.js';
import { throwIfInterrupted, unlessInterrupted } from './interrupt.js';
import type { BodySettings } from './body-share.js';
import { createLogger, type Logger } from './log.js';
import { resolveBody, type BodyInput } from './custom-body.js';
import { checkBodyStandardizer, readBodyWeights } from './pretrained.js';
import { disposePeerData, preparePeerData, type TrainOptions } from './train.js';
import { scaledTask, taskKind } from './tasks/index.js';
import { SitePredictor, evaluatePredictions, sitePredictions, type Evaluation, type Predictions, type SampleInput } from './predict.js';

/**
 * What `createLearner` takes: the site's id and data, its model and training
 * settings, the exchange its heads travel on, and dFLMoE's settings as a
 * site config's `dflmoe`, `bodies` and `round.maxStaleness` have them
 * (`alpha`, `gateHidden`, `fst`, `maxExperts`, `headPrecision`, ...;
 * `bodyEvery`, `bodyCombiner`, `topology`, `gossipPeers`), with the same
 * defaults and checks.
 */
export interface LearnerOptions extends Partial<DflmoeSettings>, Partial<BodySettings>, Partial<StalenessSettings> {
  /** This site's id; must equal `exchange.selfId`. */
  id: string;
  /** The site's samples (raw: the learner standardizes them); give this or `data`. */
  dataset?: Dataset;
  /**
   * The site's data after federated preprocessing (`agreeOnData`): its rows
   * in the agreed layout, its split and the standardizer agreed on. Give
   * this or `dataset`.
   */
  data?: AgreedData;
  /** Rows of `dataset` this site trains and tests on (default: all, 80/20 split). */
  split?: PeerSplit;
  /** Feature statistics to standardize with (default: the site's own training rows). */
  standardizer?: Standardizer;
  /**
   * `pretrainedBody`: start the body from this directory (as `dflmoe pretrain`
   * writes); its standardizer, when it has one, replaces the default one.
   * `freezeBody`: never train the body.
   */
  model?: {
    /**
     * `mlp[:h1xh2]`, `cnn[:...]`, `tfjs:<dir>` (a saved tfjs layers model), a
     * spec, a tfjs LayersModel (the site trains a copy) or a function
     * `(inputShape, featureDim) => LayersModel`; default `mlp`.
     */
    body?: BodyInput;
    featureDim?: number;
    headHidden?: number[];
    pretrainedBody?: string;
    freezeBody?: boolean;
    /** Seed of the initial body and head (default: derived from `train.seed`); sites that share bodies should start from one. */
    initSeed?: number;
  };
  /** Local training: epochs, batch size, learning rate, optimiser, seed, DP-SGD; unset fields take `DEFAULT_TRAIN`'s values. */
  train?: Partial<TrainOptions>;
  /** Largest head message accepted, in bytes (default 64 MiB). */
  maxHeadBytes?: number;
  /** Where the site publishes its head and takes in the others' (a `MemoryHub` member, or libp2p's `headExchange`). */
  exchange: HeadExchange;
  /**
   * Share bodies too (dFLMoE's `shareBody`): the exchange bodies travel on,
   * apart from heads (another `MemoryHub`, or the body protocol over
   * libp2p). Before each round the site combines its partners' bodies into
   * its own; heads stay experts. Give every site the same `model.initSeed`.
   * Giving it sets `shareBody`, which brings its own defaults: no
   * feature-space transforms, two local epochs per round (unless set).
   */
  bodies?: HeadExchange;
  /** After publishing its head, wait for at least this many fresh heads... (default 0) */
  quorum?: number;
  /** ...but no longer than this (default 0: do not wait). */
  roundDeadlineMs?: number;
  /** Where the learner logs (default a logger named `learner:<id>`). */
  logger?: Logger;
}

/**
 * What one round of a `DflmoeLearner` did: the round loop's record, the same
 * one the simulator, `dflmoe peer`'s metrics.jsonl and the live view read
 * (accuracy, loss, the experts and their gate weights, heads taken in or
 * refused, bytes so far and seconds).
 */
export type LearnerRoundMetrics = SiteRoundRecord;

/** The round loop's part of `LearnerOptions`: the exchanges, the settings, the wait for heads and where to log. */
export interface LearnerLoopOptions {
  /** Where heads travel. */
  exchange: HeadExchange;
  /** Where bodies travel, when the site shares them. */
  bodies?: HeadExchange;
  /** dFLMoE's settings, resolved (`algorithmSettings`). */
  settings: AlgorithmSettings;
  /** After publishing its head, wait for at least this many fresh heads (default 0)... */
  quorum?: number;
  /** ...but no longer than this many milliseconds (default 0: do not wait). */
  roundDeadlineMs?: number;
  /** Where the round loop logs (default a logger named `learner:<id>`). */
  logger?: Logger;
}

/**
 * One dFLMoE site as an object (`createLearner`): it trains on its own data,
 * exchanges heads through its `HeadExchange`, and predicts with its mixture
 * of experts.
 */
export interface DflmoeLearner {
  /** This site's id (the exchange's `selfId`). */
  readonly id: string;
  /** Rounds run so far. */
  readonly round: number;
  /** The class names, in the order of the model's outputs. */
  readonly classNames: string[];
  /** The site's own body: the copy it trains (of a `LayersModel` given as `model.body`, or the one it built). */
  readonly body: tfl.LayersModel;
  /**
   * The mixture's prediction for raw samples (the dataset's layout, not
   * standardized: the learner standardizes them as it did its training
   * data): predicted class, the probability of every class and the gate
   * weight of every expert, per sample.
   */
  predict(x: SampleInput): Predictions;
  /**
   * Accuracy, per-class recall and confusion matrix on raw samples and
   * their class indices; without arguments, on the site's own test split.
   */
  evaluate(x?: SampleInput, labels?: ArrayLike<number>): Evaluation;
  /** Take in every head waiting in the exchange; returns how many were accepted. */
  absorb(): number;
  /**
   * One round: train, publish the head, wait for the quorum (bounded), take
   * in heads, evaluate. With `signal`, every wait of the round (the others'
   * heads, with `bodies` their bodies) ends as soon as it aborts, and the
   * round rejects with `Interrupted` (`isInterrupted(e)`); a round stopped
   * while waiting has trained and published, and the next call runs the
   * next round.
   */
  runRound(o?: { signal?: AbortSignal }): Promise<LearnerRoundMetrics>;
  /**
   * The rounds as an async iterable: each round's metrics as it ends.
   * `rounds` bounds how many (default: until `signal` aborts or the loop
   * breaks); when `signal` aborts, the wait under way ends at once and the
   * iteration rejects with `Interrupted`.
   *
   *     for await (const m of site.rounds({ rounds: 10, signal })) console.log(m.round, m.accuracy);
   */
  rounds(o?: { rounds?: number; signal?: AbortSignal }): AsyncGenerator<LearnerRoundMetrics, void, undefined>;
  /** Free the site's tensors. */
  dispose(): void;
}

/** The class behind `createLearner`; the workspace reaches the site's model through `peer` and `site`. */
export class Learner implements DflmoeLearner {
  round = 0;
  /** The same site the simulator and `dflmoe peer` run. */
  readonly site: DflmoeSite;
  private net: SiteNetwork;

  /** Standardizes raw samples as the training data was, then predicts. */
  private readonly predictor: SitePredictor;

  constructor(
    readonly peer: DflmoePeer,
    o: LearnerLoopOptions & { standardizer: Standardizer; classNames: string[] },
  ) {
    const share = o.bodies ? siteBodyShare(peer, { ...o.settings, seed: peer.train.seed, maxModelBytes: DEFAULT_LIMITS.maxModelBytes }) : undefined;
    this.site = new DflmoeSite(peer, {}, share);
    // The exchanges' waits end with Interrupted when the signal of the running round aborts.
    const stoppable = (ex: HeadExchange) => interruptible(ex, () => this.signal);
    this.net = {
      exchange: stoppable(o.exchange),
      ...(o.bodies ? { bodies: stoppable(o.bodies) } : {}),
      quorum: o.quorum ?? 0,
      deadlineMs: o.roundDeadlineMs ?? 0,
      logger: o.logger ?? createLogger(`learner:${peer.id}`),
    };
    this.predictor = new SitePredictor(this.site, o.standardizer, peer.data.sampleShape, o.classNames, peer.data.task);
  }

  get id(): string {
    return this.peer.id;
  }

  get body(): tfl.LayersModel {
    return this.peer.body;
  }

  get classNames(): string[] {
    return this.predictor.classNames;
  }

  /**
   * The mixture's prediction for raw samples (the dataset's layout, not
   * standardized: the learner standardizes them as it did its training
   * data): predicted class, the probability of every class and the gate
   * weight of every expert, per sample.
   */
  predict(x: SampleInput): Predictions {
    return this.predictor.predict(x);
  }

  /**
   * Accuracy, per-class recall and confusion matrix on raw samples and
   * their class indices; without arguments, on the site's own test split.
   */
  evaluate(x?: SampleInput, labels?: ArrayLike<number>): Evaluation {
    if (x === undefined) {
      const task = this.peer.data.task;
      const p: Predictions = sitePredictions(this.site, this.peer.data.xTest, this.classNames, 512, task);
      return evaluatePredictions(p, taskKind(task).toUnits(Float32Array.from(this.peer.data.yTest.dataSync()), task));
    }
    if (labels === undefined) throw new Error('evaluate(x, labels): give the class index of every sample');
    return this.predictor.evaluate(x, labels);
  }

  /** Take in every head waiting in the exchange; returns how many were accepted. */
  absorb(): number {
    return this.site.absorb(this.net.exchange!, this.round, this.net.logger);
  }

  /** The signal of the round running now (`runRound`, `rounds`). */
  private signal?: AbortSignal;

  /**
   * One round: train, publish the head, wait for the quorum (bounded), take
   * in heads, evaluate. With `signal`, every wait of the round (the others'
   * heads, with `bodies` their bodies) ends as soon as it aborts, and the
   * round rejects with `Interrupted` (`isInterrupted(e)`); a round stopped
   * while waiting has trained and published, and the next call runs the
   * next round.
   */
  async runRound(o: { signal?: AbortSignal } = {}): Promise<LearnerRoundMetrics> {
    throwIfInterrupted(o.signal);
    this.signal = o.signal;
    try {
      return await siteRound(this.site, this.net, ++this.round);
    } finally {
      this.signal = undefined;
    }
  }

  /**
   * The rounds as an async iterable: each round's metrics as it ends.
   * `rounds` bounds how many (default: until `signal` aborts or the loop
   * breaks); when `signal` aborts, the wait under way ends at once and the
   * iteration rejects with `Interrupted`.
   *
   *     for await (const m of site.rounds({ rounds: 10, signal })) console.log(m.round, m.accuracy);
   */
  async *rounds(o: { rounds?: number; signal?: AbortSignal } = {}): AsyncGenerator<LearnerRoundMetrics, void, undefined> {
    for (let i = 0; o.rounds === undefined || i < o.rounds; i++) yield await this.runRound({ signal: o.signal });
  }

  dispose(): void {
    this.peer.dispose();
    disposePeerData(this.peer.data);
  }
}

/**
 * `ex` whose waits (`waitForHeads`, `settle`) end with `Interrupted` when
 * the signal `signal()` gives at the time aborts; the same object for the
 * life of a learner (membership watchers key on it).
 */
function interruptible(ex: HeadExchange, signal: () => AbortSignal | undefined): HeadExchange {
  return new Proxy(ex, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      if (prop === 'waitForHeads' || prop === 'settle') {
        return (...args: unknown[]) => unlessInterrupted((v as (...a: unknown[]) => Promise<unknown>).apply(target, args), signal());
      }
      return (v as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

/** Create a dFLMoE site. Picks the compute backend on first use. */
export async function createLearner(o: LearnerOptions): Promise<DflmoeLearner> {
  if (o.exchange.selfId !== o.id) throw new Error(`learner id "${o.id}" differs from the exchange's "${o.exchange.selfId}"`);
  if ((o.dataset === undefined) === (o.data === undefined)) throw new Error('createLearner: give either dataset (raw samples) or data (from agreeOnData)');
  // dFLMoE's settings as the simulator and site configs resolve them: checked, with their defaults and variants.
  const shareBody = o.shareBody ?? o.bodies !== undefined;
  if (shareBody && !o.bodies) throw new Error('createLearner: shareBody needs `bodies`, the exchange bodies travel on');
  const { settings, epochs } = algorithmSettings(dflmoe, { ...o, shareBody, epochs: o.train?.epochs }, { freezeBody: o.model?.freezeBody });
  await initBackend({ logger: o.logger });
  const dataset = o.data?.dataset ?? o.dataset!;
  const split = o.split ?? o.data?.split ?? partition(dataset.labels, dataset.classNames.length, 1, parsePartition('iid'), { seed: o.train?.seed ?? 0 })[0];
  const pre = o.model?.pretrainedBody !== undefined ? readBodyWeights(o.model.pretrainedBody) : undefined;
  if (pre) checkBodyStandardizer(pre, featureSize(dataset), dataset.featureNames);
  const standardizer = o.standardizer ?? pre?.standardizer ?? o.data?.standardizer ?? fitStandardizer(dataset.features, featureSize(dataset), split.train);
  const data = preparePeerData(dataset, split, standardizer, scaledTask(dataset, split.train, o.data?.targetScale));
  let body;
  try {
    body = await resolveBody(o.model?.body);
  } catch (e) {
    disposePeerData(data);
    throw e;
  }
  let peer: DflmoePeer;
  try {
    peer = new DflmoePeer({
      id: o.id,
      data,
      body,
      featureDim: o.model?.featureDim ?? 64,
      headHidden: o.model?.headHidden ?? [],
      train: { ...o.train, ...(epochs !== undefined ? { epochs } : {}) },
      ...settings,
      maxHeadBytes: o.maxHeadBytes,
      ...(pre ? { initialBody: pre } : {}),
      freezeBody: o.model?.freezeBody ?? false,
      ...(o.model?.initSeed !== undefined ? { initSeed: o.model.initSeed } : {}),
    });
  } catch (e) {
    disposePeerData(data);
    throw e;
  }
  return new Learner(peer, { ...o, settings, standardizer, classNames: data.task.classNames });
}
