/**
 * FedAvg (McMahan et al., 2017): a server averages whole models, weighted by
 * each client's number of training samples, every round. Evaluated as the
 * global model on each peer's own test split.
 */
import * as tf from '@tensorflow/tfjs-core';
import { decodeBundle, encodeBundle, CodecError, type DecodeLimits, type NamedArray } from '../codec.js';
import { formatBodySpec } from '../model.js';
import { trainEpochs } from '../train.js';
import { SupervisedModel, crossEntropy, type PeerEval } from './common.js';

export class FedAvgClient extends SupervisedModel {
  /** A string that two clients share exactly when their models can be averaged. */
  architecture(): string {
    return `${formatBodySpec(this.bodySpec)}|in=${this.data.sampleShape.join('x')}|head=${this.headSpec.inputDim}-${this.headSpec.hidden.join('-')}-${this.headSpec.outputDim}`;
  }

  getWeights(): NamedArray[] {
    return this.variables().map((v, i) => ({ name: `w${i}`, shape: v.shape, data: v.dataSync() as Float32Array }));
  }

  setWeights(ws: NamedArray[]): void {
    const vars = this.variables();
    if (ws.length !== vars.length) throw new CodecError('shape', `model has ${ws.length} tensors, expected ${vars.length}`);
    vars.forEach((v, i) => {
      if (ws[i].shape.join() !== v.shape.join()) throw new CodecError('shape', `tensor ${i}: shape [${ws[i].shape}] differs from [${v.shape}]`);
    });
    vars.forEach((v, i) => tf.tidy(() => v.assign(tf.tensor(ws[i].data.slice(), v.shape))));
  }

  encodeModel(round: number): Uint8Array {
    return encodeBundle('model', { arch: this.architecture(), round, samples: this.data.trainSamples }, this.getWeights());
  }

  /** Load a model sent by the server (validated). */
  loadModel(bytes: Uint8Array, limits: DecodeLimits): void {
    const b = decodeBundle(bytes, limits);
    if (b.kind !== 'model') throw new CodecError('kind', `expected a model, got a ${b.kind}`);
    if (b.meta.arch !== this.architecture()) throw new CodecError('mismatch', `model architecture "${String(b.meta.arch)}" differs from ours`);
    this.setWeights(b.tensors);
  }

  /**
   * Clients keep no optimizer state between rounds: each round starts a fresh
   * optimizer (same settings) from the global weights, as in FedAvg.
   */
  trainRound(round: number): number {
    this.optimizer.dispose();
    this.optimizer = tf.train.adam(this.train.learningRate);
    this.account();
    return trainEpochs(this.data, this.train, round, () => this.paramGroups(), (x, y) => crossEntropy(this.logits(x, true), y));
  }

  evaluate(): PeerEval {
    const a = this.evaluateOwn();
    return { accuracy: a, ownHeadAccuracy: a };
  }
}

/** Average models weighted by sample count (all must share names and shapes). */
export function federatedAverage(models: { weights: NamedArray[]; samples: number }[]): NamedArray[] {
  if (models.length === 0) throw new Error('nothing to average');
  const total = models.reduce((a, m) => a + m.samples, 0);
  if (!(total > 0)) throw new Error('total sample count must be positive');
  return models[0].weights.map((w0, i) => {
    const data = new Float32Array(w0.data.length);
    for (const m of models) {
      const w = m.weights[i];
      if (!w || w.data.length !== data.length) throw new Error(`model tensor ${i} differs in size between clients`);
      const f = m.samples / total;
      for (let j = 0; j < data.length; j++) data[j] += f * w.data[j];
    }
    return { name: w0.name, shape: w0.shape, data };
  });
}

/** Throws a clear error when clients cannot be averaged (heterogeneous bodies). */
export function checkSameArchitecture(clients: { id: string; architecture(): string }[]): void {
  const first = clients[0]?.architecture();
  const odd = clients.find((c) => c.architecture() !== first);
  if (odd) {
    throw new Error(
      `FedAvg needs the same model at every site, but ${clients[0].id} has "${first}" and ${odd.id} has "${odd.architecture()}". ` +
        'Heterogeneous bodies work with dflmoe and local only.',
    );
  }
}
