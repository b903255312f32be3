import type { Algorithm, SiteRound } from './api.js';
import { SupervisedModel } from './common.js';
import { ModelSite, secondsSince } from './site.js';

/** Local-only baseline: each peer trains on its own data and never communicates. */
export class LocalPeer extends SupervisedModel {
  trainRound(round: number): Promise<number> {
    return this.trainOwn(round);
  }
}

class LocalSite extends ModelSite<LocalPeer> {
  async runRound(round: number): Promise<SiteRound> {
    const t0 = performance.now();
    const loss = await this.model.trainRound(round);
    return { loss, trainSeconds: secondsSince(t0), waitSeconds: 0, fresh: 0 };
  }
}

export const local: Algorithm<'local'> = {
  name: 'local',
  label: 'local-only',
  description: 'each site trains on its own data and never communicates',
  color: '#5e6c84',
  network: 'none',
  sameModel: false,
  settings: [],
  createSite: (base) => new LocalSite(new LocalPeer(base)),
  multiTask: () => ({ heads: 'own', body: 'none' }),
};
