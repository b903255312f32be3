import { trainEpochs } from '../train.js';
import { SupervisedModel, crossEntropy, type PeerEval } from './common.js';

/** Local-only baseline: each peer trains on its own data and never communicates. */
export class LocalPeer extends SupervisedModel {
  trainRound(round: number): number {
    this.account();
    return trainEpochs(this.data, this.train, round, () => this.paramGroups(), (x, y) => crossEntropy(this.logits(x, true), y));
  }

  evaluate(): PeerEval {
    const a = this.evaluateOwn();
    return { accuracy: a, ownHeadAccuracy: a };
  }
}
