/**
 * FedAvg (McMahan et al., 2017): a server averages whole models, weighted by
 * each client's number of training samples, every round. Evaluated as the
 * global model on each peer's own test split. `FedAvgSite` is also the
 * client side of the other server algorithms (fedavg-ft, fedrep).
 */
import * as tf from '@tensorflow/tfjs-core';
import { deriveSeed } from '@dflmoe/data/internal';
import { decodeBundle, encodeBundle, CodecError, type DecodeLimits, type NamedArray } from '../codec.js';
import { formatBodySpec } from '../model.js';
import { federatedAverage } from '../averaging.js';
import { createOptimizer } from '../train.js';
import type { Algorithm, AlgorithmBaseOptions, SiteNetwork, SiteRound } from './api.js';
import { SupervisedModel } from './common.js';
import { ModelSite, secondsSince } from './site.js';

/** Seed of the one initial model that the sites of model-averaging algorithms share. */
export function sharedModelSeed(seed: number): number {
  return deriveSeed(seed, 'fedavg-init');
}

/** Copies of `vars` as named arrays (`w0`, `w1`, ...). */
export function readVariables(vars: tf.Variable[]): NamedArray[] {
  return vars.map((v, i) => ({ name: `w${i}`, shape: v.shape, data: Float32Array.from(v.dataSync()) }));
}

/** Throws a CodecError unless `ws` has exactly the count and shapes of `vars`. */
export function checkShapes(vars: tf.Variable[], ws: NamedArray[]): void {
  if (ws.length !== vars.length) throw new CodecError('shape', `model has ${ws.length} tensors, expected ${vars.length}`);
  vars.forEach((v, i) => {
    if (ws[i].shape.join() !== v.shape.join()) throw new CodecError('shape', `tensor ${i}: shape [${ws[i].shape}] differs from [${v.shape}]`);
  });
}

/** Assign `ws` to `vars` after checking count and shapes. */
export function assignVariables(vars: tf.Variable[], ws: NamedArray[]): void {
  checkShapes(vars, ws);
  vars.forEach((v, i) => tf.tidy(() => v.assign(tf.tensor(ws[i].data.slice(), v.shape))));
}

export class FedAvgClient extends SupervisedModel {
  /** A string that two clients share exactly when their models can be averaged. */
  architecture(): string {
    return `${formatBodySpec(this.bodySpec)}|in=${this.data.sampleShape.join('x')}|head=${this.headSpec.inputDim}-${this.headSpec.hidden.join('-')}-${this.headSpec.outputDim}`;
  }

  /** The variables that travel to the server and back (default: all). */
  sharedVariables(): tf.Variable[] {
    return this.variables();
  }

  getWeights(): NamedArray[] {
    return readVariables(this.sharedVariables());
  }

  setWeights(ws: NamedArray[]): void {
    assignVariables(this.sharedVariables(), ws);
  }

  encodeModel(round: number, meta: Record<string, unknown> = {}): Uint8Array {
    return encodeBundle('model', { arch: this.architecture(), round, samples: this.data.trainSamples, ...meta }, this.getWeights());
  }

  /** Decode a model bundle and check that it fits this client (kind, architecture, shapes); throws a CodecError. */
  decodeModel(bytes: Uint8Array, limits: DecodeLimits): { meta: Record<string, unknown>; weights: NamedArray[] } {
    const b = decodeBundle(bytes, limits);
    if (b.kind !== 'model') throw new CodecError('kind', `expected a model, got a ${b.kind}`);
    if (b.meta.arch !== this.architecture()) throw new CodecError('mismatch', `model architecture "${String(b.meta.arch).slice(0, 200)}" differs from ours`);
    checkShapes(this.sharedVariables(), b.tensors);
    return { meta: b.meta, weights: b.tensors };
  }

  /** Load a model sent by the server (validated). */
  loadModel(bytes: Uint8Array, limits: DecodeLimits): void {
    this.setWeights(this.decodeModel(bytes, limits).weights);
  }

  /** A fresh optimizer (same settings): clients keep no optimizer state between rounds, as in FedAvg. */
  protected resetOptimizer(): void {
    this.optimizer.dispose();
    this.optimizer = createOptimizer(this.train);
  }

  /** Train every variable from the current (global) weights with a fresh optimizer. */
  trainRound(round: number): Promise<number> {
    this.resetOptimizer();
    return this.trainOwn(round);
  }
}

/**
 * A client of a server algorithm: train, upload, download the aggregate
 * and load it. A global model that fails validation is counted, logged and
 * skipped (the site keeps its own weights).
 */
export class FedAvgSite<C extends FedAvgClient = FedAvgClient> extends ModelSite<C> {
  protected readonly limits: DecodeLimits;

  constructor(client: C, o: Pick<AlgorithmBaseOptions, 'maxModelBytes'>) {
    super(client);
    this.limits = { maxBytes: o.maxModelBytes };
  }

  architecture(): string {
    return this.model.architecture();
  }

  async runRound(round: number, net: SiteNetwork): Promise<SiteRound> {
    const t0 = performance.now();
    const loss = await this.model.trainRound(round);
    const trainSeconds = secondsSince(t0);
    const tw = performance.now();
    await net.server!.upload(round, this.model.encodeModel(round), this.data.trainSamples);
    const global = await net.server!.download(round);
    const waitSeconds = secondsSince(tw);
    let fresh = 0;
    try {
      this.model.loadModel(global, this.limits);
      fresh = 1;
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
      this.refuse(e.reason);
      net.logger.warn(`dropped the global model of round ${round}: ${e.message}; keeping our own`);
    }
    await this.afterGlobal(round);
    return { loss, trainSeconds, waitSeconds, fresh };
  }

  /** Called once the round's global model is loaded (fedavg-ft fine-tunes here). */
  protected async afterGlobal(_round: number): Promise<void> {}
}

/** Throws a clear error when sites cannot be averaged (heterogeneous bodies). */
export function checkSameArchitecture(clients: { id: string; architecture?(): string }[], label = 'FedAvg', heterogeneousOk = 'dflmoe and local'): void {
  const arch = (c: { architecture?(): string }) => c.architecture?.() ?? '';
  const first = clients[0] ? arch(clients[0]) : '';
  const odd = clients.find((c) => arch(c) !== first);
  if (odd) {
    throw new Error(
      `${label} needs the same model at every site, but ${clients[0].id} has "${first}" and ${odd.id} has "${arch(odd)}". ` +
        `Heterogeneous bodies work with ${heterogeneousOk} only.`,
    );
  }
}

export const fedavg: Algorithm<'fedavg'> = {
  name: 'fedavg',
  label: 'FedAvg',
  description: 'a server averages whole models (sample-weighted) every round; each site is evaluated with the global model',
  color: '#b2182b',
  network: 'server',
  message: 'model',
  sameModel: true,
  settings: [],
  createSite: (base, o) => new FedAvgSite(new FedAvgClient({ ...base, initSeed: sharedModelSeed(o.seed) }), o),
  multiTask: () => ({ heads: 'own', body: 'server' }),
  aggregate: federatedAverage,
};
