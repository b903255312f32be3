/** Shared parts of the sites built on one `SupervisedModel` (every algorithm but dFLMoE). */
import * as tf from '@tensorflow/tfjs-core';
import type { AlgorithmSite, SiteNetwork, SiteRound } from './api.js';
import type { PeerEval, SupervisedModel } from './common.js';

export const secondsSince = (t0: number) => (performance.now() - t0) / 1000;

/** Class probabilities of one body + head model: the softmax of its logits. */
export function modelProbs(model: SupervisedModel, x: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => tf.softmax(model.logits(x)));
}

export abstract class ModelSite<M extends SupervisedModel & { evaluate(): PeerEval }> implements AlgorithmSite {
  private readonly counters: Record<string, number> = {};

  constructor(readonly model: M) {}

  get id(): string {
    return this.model.id;
  }

  get data() {
    return this.model.data;
  }

  abstract runRound(round: number, net: SiteNetwork): Promise<SiteRound>;

  evaluate(): PeerEval {
    return this.model.evaluate();
  }

  /** Class probabilities of the site's own model (softmax of its logits). */
  predict(x: tf.Tensor): tf.Tensor2D {
    return modelProbs(this.model, x);
  }

  rejected(): Record<string, number> {
    return { ...this.counters };
  }

  /** Count received input refused for `reason`. */
  protected refuse(reason: string): void {
    this.counters[reason] = (this.counters[reason] ?? 0) + 1;
  }

  privacySpent() {
    return this.model.privacySpent();
  }

  dispose(): void {
    this.model.dispose();
  }
}
