/**
 * FedAvg with local fine-tuning (FedAvg-FT): FedAvg as usual, and each round
 * every site copies the new global model, fine-tunes the copy on its own
 * training data for `fineTuneEpochs` epochs with a fresh optimizer, and is
 * evaluated with the copy. The global model (what the site trains and
 * uploads next round) is not changed by it; the copy never leaves the site
 * (with DP-SGD it trains with DP too, and the reported epsilon covers the
 * uploads, which is what leaves the site).
 */
import type * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { deriveSeed } from '@dflmoe/data/internal';
import { defineSettings, type SettingsOf } from '../settings.js';
import type { Algorithm, AlgorithmBaseOptions } from './api.js';
import type { PeerEval, PeerModelOptions, SupervisedModel } from './common.js';
import { FedAvgClient, FedAvgSite, sharedModelSeed } from './fedavg.js';
import { federatedAverage } from '../averaging.js';
import { modelProbs } from './site.js';

/** FedAvg-FT's settings: the site config's `finetune` section. */
export const fineTuneSettings = defineSettings({
  section: 'finetune',
  usedBy: 'fedavg-ft',
  shape: {
    fineTuneEpochs: z.number().int().min(1).default(1).describe('epochs of fine-tuning the global model before evaluating'),
  },
  keys: { fineTuneEpochs: 'epochs' },
  flags: { fineTuneEpochs: 'finetune-epochs' },
});

/** FedAvg-FT's settings, resolved. */
export type FineTuneSettings = SettingsOf<typeof fineTuneSettings>;

export class FedAvgFtSite extends FedAvgSite {
  /** The personalized copy: the global model after fine-tuning. */
  readonly tuned: FedAvgClient;

  constructor(base: PeerModelOptions, o: AlgorithmBaseOptions & FineTuneSettings) {
    const init = { ...base, initSeed: sharedModelSeed(o.seed) };
    super(new FedAvgClient(init), o);
    const seed = deriveSeed(this.model.train.seed, 'finetune');
    this.tuned = new FedAvgClient({ ...init, train: { ...this.model.train, epochs: o.fineTuneEpochs, seed } });
  }

  protected override checkpointModels(): SupervisedModel[] {
    return [this.model, this.tuned];
  }

  protected override async afterGlobal(round: number): Promise<void> {
    this.tuned.setWeights(this.model.getWeights());
    await this.tuned.trainRound(round);
  }

  override evaluate(): PeerEval {
    return this.tuned.evaluate();
  }

  /** The fine-tuned copy's probabilities (what the site is evaluated with). */
  override predict(x: tf.Tensor): tf.Tensor2D {
    return modelProbs(this.tuned, x);
  }

  override dispose(): void {
    super.dispose();
    this.tuned.dispose();
  }
}

export const fedavgFt: Algorithm<'fedavg-ft', AlgorithmBaseOptions & FineTuneSettings> = {
  name: 'fedavg-ft',
  label: 'FedAvg-FT',
  description: 'FedAvg, then each site fine-tunes a copy of the global model on its own data (fineTuneEpochs) and is evaluated with the copy',
  color: '#ef8a62',
  network: 'server',
  message: 'model',
  sameModel: true,
  settings: [fineTuneSettings],
  createSite: (base, o) => new FedAvgFtSite(base, o),
  multiTask: () => ({ heads: 'own', body: 'server' }),
  aggregate: federatedAverage,
};
