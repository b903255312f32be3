/**
 * FedRep (Collins et al., "Exploiting Shared Representations for
 * Personalized Federated Learning", ICML 2021): the server averages only
 * the body (the representation); each site keeps its own head. Each round a
 * site first trains its head with the body frozen for `headEpochs` epochs,
 * then the body with the head frozen for `epochs` epochs, and uploads the
 * body. As in PFLlib's clientRep, the head has its own optimizer, kept
 * across rounds (the head never leaves the site); the body's optimizer is
 * fresh every round, as for every FedAvg client here.
 */
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { deriveSeed } from '@dflmoe/data/internal';
import { defineSettings, type SettingsOf } from '../settings.js';
import { stalenessSettings, type StalenessSettings } from '../experts.js';
import { bodyVariables, headLogits } from '../model.js';
import { createOptimizer, trainEpochs } from '../train.js';
import type { Algorithm, AlgorithmBaseOptions, SiteNetwork, SiteRound } from './api.js';
import { bodySettings, type BodySettings, type BodyShare } from '../body-share.js';
import { secondsSince, siteBodyShare, waitOptions } from './site.js';
import type { PeerModelOptions } from './common.js';
import { FedAvgClient, FedAvgSite, sharedModelSeed } from './fedavg.js';
import { federatedAverage } from '../averaging.js';

export class FedRepClient extends FedAvgClient {
  private headOptimizer: tf.Optimizer;

  constructor(
    o: PeerModelOptions,
    readonly headEpochs: number,
  ) {
    super(o);
    if (!Number.isInteger(headEpochs) || headEpochs < 0) throw new Error(`headEpochs must be a non-negative integer, got ${headEpochs}`);
    this.headOptimizer = createOptimizer(this.train);
  }

  override architecture(): string {
    return `${super.architecture()}|body-only`;
  }

  /** Only the body travels. */
  override sharedVariables(): tf.Variable[] {
    return bodyVariables(this.body);
  }

  override async trainRound(round: number): Promise<number> {
    this.account(this.headEpochs + this.train.epochs);
    const head = this.headVariables();
    const headLoss = await trainEpochs(
      this.data,
      { ...this.train, epochs: this.headEpochs, seed: deriveSeed(this.train.seed, 'fedrep-head') },
      round,
      () => [{ optimizer: this.headOptimizer, vars: head }],
      (x, y) => this.task.loss(headLogits(this.head, this.features(x, false)), y),
    );
    this.resetOptimizer();
    // A frozen body: the head epochs are the whole round.
    if (this.freezeBody) return headLoss;
    const body = this.sharedVariables();
    return trainEpochs(
      this.data,
      this.train,
      round,
      () => [{ optimizer: this.optimizer, vars: body }],
      (x, y) => this.ownLoss(x, y),
    );
  }

  /** The head's optimizer, kept across rounds (and in checkpoints). */
  get headOptimizerState(): tf.Optimizer {
    return this.headOptimizer;
  }

  override dispose(): void {
    super.dispose();
    this.headOptimizer.dispose();
  }
}

class FedRepSite extends FedAvgSite<FedRepClient> {
  protected override checkpointOptimizers(): Record<string, tf.Optimizer> {
    return { ...super.checkpointOptimizers(), head: this.model.headOptimizerState };
  }
}

/** FedRep's settings (and fedrep-p2p's): the site config's `fedrep` section. */
export const fedrepSettings = defineSettings({
  section: 'fedrep',
  usedBy: 'fedrep and fedrep-p2p',
  shape: {
    headEpochs: z.number().int().min(0).default(1).describe('head-only epochs (body frozen) before the body epochs'),
  },
});

/** FedRep's settings, resolved. */
export type FedRepSettings = SettingsOf<typeof fedrepSettings>;

/** What fedrep-p2p's sites are made with: FedRep's settings and body sharing's. */
type FedRepP2pOptions = AlgorithmBaseOptions & FedRepSettings & BodySettings & StalenessSettings;

export const fedrep: Algorithm<'fedrep', AlgorithmBaseOptions & FedRepSettings> = {
  name: 'fedrep',
  label: 'FedRep',
  description:
    'a server averages only the body; each site keeps its own head, trained first each round with the body frozen (headEpochs), then the body with the head frozen',
  color: '#2166ac',
  network: 'server',
  message: 'model',
  sameModel: true,
  settings: [fedrepSettings],
  createSite: (base, o) => new FedRepSite(new FedRepClient({ ...base, initSeed: sharedModelSeed(o.seed) }, o.headEpochs), o),
  multiTask: () => ({ heads: 'own', body: 'server' }),
  aggregate: federatedAverage,
};

/**
 * FedRep without a server: the same client rounds (head epochs, then body
 * epochs), but instead of uploading its body to a server a site publishes
 * it to the members and replaces it with the combination of its own and its
 * partners' bodies of the round (`BodyShare`: mean by default, peer to
 * peer). With every member as a partner, the mean and no faults, every site
 * ends each round with the body a FedRep server would have sent it. No
 * experts: the ablation that shows what dFLMoE's mixture adds on a shared body.
 */
class FedRepP2pSite extends FedRepSite {
  override readonly bodyShare: BodyShare;

  constructor(
    client: FedRepClient,
    private readonly o: FedRepP2pOptions,
  ) {
    super(client, o);
    this.bodyShare = siteBodyShare(client, o);
  }

  override async runRound(round: number, net: SiteNetwork): Promise<SiteRound> {
    const t0 = performance.now();
    const loss = await this.model.trainRound(round);
    const trainSeconds = secondsSince(t0);
    const tw = performance.now();
    const ex = net.bodies;
    if (!ex || !this.bodyShare.due(round)) return { loss, trainSeconds, waitSeconds: 0, fresh: 0 };
    const share = this.bodyShare;
    await share.publish(ex, round, this.o.poisonBody ? share.encodePoisoned(this.o.poisonBody, round) : undefined);
    const fresh = await share.gather(ex, round, { quorum: net.quorum, deadlineMs: net.deadlineMs, logger: net.logger, ...waitOptions(net, 'bodies') });
    const bodies = share.mix(round, round, ex.members());
    return { loss, trainSeconds, waitSeconds: secondsSince(tw), fresh, bodies };
  }
}

export const fedrepP2p: Algorithm<'fedrep-p2p', FedRepP2pOptions> = {
  name: 'fedrep-p2p',
  label: 'FedRep-p2p',
  description: "serverless FedRep: each site keeps its own head and combines its body with the members' bodies peer to peer every round (no experts)",
  color: '#67a9cf',
  network: 'peers',
  message: 'body',
  sameModel: true,
  bodies: 'always',
  settings: [fedrepSettings, bodySettings, stalenessSettings],
  createSite: (base, o) => new FedRepP2pSite(new FedRepClient({ ...base, initSeed: sharedModelSeed(o.seed) }, o.headEpochs), o),
  multiTask: () => ({ heads: 'own', body: 'peers' }),
};
