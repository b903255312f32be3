import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { deriveSeed } from '@dflmoe/data/internal';
import { bodyVariables, buildBody, createHead, headLogits, type BodySpec, type DenseLayer, type HeadSpec } from '../model.js';
import { bodySpecOf, buildCustomBody, type BodyBuilder } from '../custom-body.js';
import { applyBodyWeights, type BodyWeights } from '../pretrained.js';
import { RdpAccountant } from '../privacy.js';
import { DEFAULT_TRAIN, createOptimizer, evaluateTask, trainEpochs, type ParamGroup, type PeerData, type TrainOptions } from '../train.js';
import { taskKind, type TaskKind, type TaskMetrics } from '../tasks/index.js';

/** What every peer of every algorithm is built from. */
export interface PeerModelOptions {
  id: string;
  data: PeerData;
  /**
   * A spec (`parseBodySpec`), a tfjs LayersModel (the site trains a copy of
   * it) or a function building one from the input shape and `featureDim`.
   */
  body: BodySpec | tfl.LayersModel | BodyBuilder;
  /** Size of the feature vector the body produces (the head's input). */
  featureDim: number;
  /** Hidden layer sizes of the head (empty: linear head). */
  headHidden: number[];
  train: Partial<TrainOptions>;
  /** Seed for the initial weights (default: derived from `train.seed`). FedAvg clients share one. */
  initSeed?: number;
  /** Start the body from these weights (a body pretrained on public data) instead of its seeded initial weights. */
  initialBody?: BodyWeights;
  /** Never train the body: only the head (and, for dFLMoE, the gate and transforms) learn. */
  freezeBody?: boolean;
  /**
   * Use this body as it is instead of building one (`body`, `initSeed` and
   * `initialBody` then only describe it): the tasks of a multi-task site
   * share their site's body. The caller disposes it.
   */
  sharedBody?: SiteBody;
}

/** A site's body: the tfjs model and the spec it was built from. */
export interface SiteBody {
  /** The body's layers model. */
  model: tfl.LayersModel;
  /** What it was built from (a custom body's spec carries its architecture string). */
  spec: BodySpec;
}

/** The body a site built from `o` starts with: seeded from its initial seed, or the host's own network, then the pretrained weights if given. */
export function buildSiteBody(o: PeerModelOptions, initSeed: number): SiteBody {
  const spec = bodySpecOf(o.body);
  let body: SiteBody;
  if (spec.kind === 'custom') {
    // The host's own network: built (or copied) and checked; its architecture string says which bodies it combines with.
    const { model, arch } = buildCustomBody(spec, o.data.sampleShape, o.featureDim);
    body = { model, spec: { ...spec, arch } };
  } else {
    body = { model: buildBody(spec, o.data.sampleShape, o.featureDim, deriveSeed(initSeed, 'body')), spec };
  }
  try {
    if (o.initialBody) applyBodyWeights(body.model, o.initialBody);
  } catch (e) {
    body.model.dispose();
    throw e;
  }
  return body;
}

/** Result of one peer's evaluation on its own test split. */
export interface PeerEval {
  /** The task's metrics (`accuracy`, ... or `rmse`, ...; see `TaskKind.metricNames`). */
  metrics: TaskMetrics;
  /** The own head alone (dFLMoE only; else equal to `metrics`). */
  ownHeadMetrics: TaskMetrics;
  /** `metrics.accuracy` (NaN for a task without accuracy). */
  accuracy: number;
  /** `ownHeadMetrics.accuracy`. */
  ownHeadAccuracy: number;
}

/** A `PeerEval` from the site's metrics and its own head's (the same model when not given). */
export function peerEval(metrics: TaskMetrics, ownHeadMetrics: TaskMetrics = metrics): PeerEval {
  return { metrics, ownHeadMetrics, accuracy: metrics.accuracy ?? NaN, ownHeadAccuracy: ownHeadMetrics.accuracy ?? NaN };
}

/** A body and a head trained with its task's loss (cross-entropy, squared error): local-only peers and FedAvg clients. */
export class SupervisedModel {
  readonly id: string;
  readonly data: PeerData;
  readonly body: tfl.LayersModel;
  readonly head: DenseLayer<tf.Variable>[];
  readonly headSpec: HeadSpec;
  readonly train: TrainOptions;
  optimizer: tf.Optimizer;
  readonly bodySpec: BodySpec;
  readonly freezeBody: boolean;
  /** The kind of task the site learns: its loss, outputs and metrics. */
  readonly task: TaskKind;
  /** Whether the body is this model's own (else a multi-task site's, shared by its tasks). */
  private readonly ownsBody: boolean;

  constructor(o: PeerModelOptions) {
    this.id = o.id;
    this.data = o.data;
    this.task = taskKind(o.data.task);
    this.train = { ...DEFAULT_TRAIN, ...o.train };
    const init = o.initSeed ?? this.train.seed;
    const body = o.sharedBody ?? buildSiteBody(o, init);
    this.ownsBody = !o.sharedBody;
    this.body = body.model;
    this.bodySpec = body.spec;
    this.freezeBody = o.freezeBody ?? false;
    this.headSpec = { inputDim: o.featureDim, hidden: o.headHidden, outputDim: this.task.outputDim(o.data.task) };
    this.head = createHead(this.headSpec, deriveSeed(init, 'head'));
    this.optimizer = createOptimizer(this.train);
  }

  features(x: tf.Tensor, training: boolean): tf.Tensor2D {
    return this.body.apply(x, { training }) as tf.Tensor2D;
  }

  logits(x: tf.Tensor, training = false): tf.Tensor2D {
    return headLogits(this.head, this.features(x, training));
  }

  /** Trainable variables in a fixed order (body, then head). */
  variables(): tf.Variable[] {
    return [...bodyVariables(this.body), ...this.headVariables()];
  }

  /** The variables local training updates: all of them, or the head's alone with a frozen body. */
  trainableVariables(): tf.Variable[] {
    return this.freezeBody ? this.headVariables() : this.variables();
  }

  headVariables(): tf.Variable[] {
    return this.head.flatMap((l) => [l.kernel, l.bias]);
  }

  /** With DP-SGD: the privacy spent so far by this site's training. */
  readonly accountant = new RdpAccountant();

  /** Record the DP-SGD steps of one round of `epochs` passes (a no-op without DP). */
  protected account(epochs = this.train.epochs): void {
    const dp = this.train.dp;
    if (!dp) return;
    const q = Math.min(1, this.train.batchSize / this.data.trainSamples);
    const steps = epochs * Math.ceil(this.data.trainSamples / this.train.batchSize);
    this.accountant.compose(q, dp.noiseMultiplier, steps);
  }

  /** (epsilon, delta) spent so far, or undefined without DP. */
  privacySpent(): { epsilon: number; delta: number; steps: number } | undefined {
    const dp = this.train.dp;
    if (!dp) return undefined;
    const delta = dp.delta ?? 1e-5;
    return { epsilon: this.accountant.epsilon(delta), delta, steps: this.accountant.steps };
  }

  /** Parameter groups for `trainEpochs`: one optimizer over body and head. */
  paramGroups(): ParamGroup[] {
    return [{ optimizer: this.optimizer, vars: this.trainableVariables() }];
  }

  /** The own model's (body and head) metrics on the site's test split. */
  evaluateOwn(): TaskMetrics {
    return evaluateTask(this.data.task, this.data.xTest, this.data.yTest, (xb) => this.logits(xb));
  }

  /** A round of training the own model (body and head) on the site's rows, privacy accounted; the mean loss. */
  protected trainOwn(round: number): Promise<number> {
    this.account();
    return trainEpochs(
      this.data,
      this.train,
      round,
      () => this.paramGroups(),
      (x, y) => this.ownLoss(x, y),
    );
  }

  /** The own model's metrics as the site's. */
  evaluate(): PeerEval {
    return peerEval(this.evaluateOwn());
  }

  /** The task's loss of the own model's outputs on a batch. */
  ownLoss(x: tf.Tensor, y: tf.Tensor2D, training = true): tf.Scalar {
    return this.task.loss(this.logits(x, training), y);
  }

  dispose(): void {
    if (this.ownsBody) this.body.dispose();
    for (const l of this.head) tf.dispose([l.kernel, l.bias]);
    this.optimizer.dispose();
  }
}
