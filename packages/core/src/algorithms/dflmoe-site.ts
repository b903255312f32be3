/**
 * dFLMoE as a registered algorithm: `DflmoePeer` (unchanged) plus the round
 * that the simulator, `dflmoe peer` and the embedding API all run.
 */
import * as tf from '@tensorflow/tfjs-core';
import { deriveSeed } from '@dflmoe/data/internal';
import { restoreLatestCheckpoint, saveCheckpoint } from './dflmoe-checkpoint.js';
import { encodeHead } from '../codec.js';
import { DepartedMembers, absorbMessages, awaitRound, type HeadExchange } from '../exchange.js';
import type { Logger } from '../log.js';
import { createHead } from '../model.js';
import type { Algorithm, AlgorithmBaseOptions, AlgorithmSite, ExpertInfo, SiteCheckpointing, SiteNetwork, SiteRound } from './api.js';
import { DflmoePeer } from './dflmoe.js';
import { prefixKeys, secondsSince, siteBodyShare, waitOptions } from './site.js';
import { bodySettings, type BodySettings, type BodyShare, type MixedBody } from '../body-share.js';
import { stalenessSettings, type StalenessSettings } from '../experts.js';
import { dflmoeSettings, type DflmoeSettings } from './dflmoe-settings.js';
import { resolveSettings } from '../settings.js';

/** A head of random weights, encoded as `peer`'s next version (a poisoning attacker). */
function randomHead(peer: DflmoePeer, version: number, seed: number): Uint8Array {
  const h = createHead(peer.headSpec, seed);
  const layers = h.map((l) => tf.tidy(() => ({ kernel: tf.mul(l.kernel, 5).dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array })));
  h.forEach((l) => tf.dispose([l.kernel, l.bias]));
  return encodeHead({ spec: peer.headSpec, version, peer: peer.id }, layers);
}

export class DflmoeSite implements AlgorithmSite {
  readonly checkpoint: SiteCheckpointing;
  /** Members that disconnected and have not come back (watched from the first round on). */
  private readonly departed = new DepartedMembers();

  /**
   * @param bodyShare with `shareBody`: the site also publishes its body and,
   * before each round's training, combines its partners' bodies into its own.
   */
  constructor(
    readonly peer: DflmoePeer,
    private readonly o: Partial<Pick<AlgorithmBaseOptions, 'randomUpdates' | 'poisonBody' | 'seed'>> = {},
    readonly bodyShare?: BodyShare,
  ) {
    this.checkpoint = {
      save: (dir, round, extra, keep) => saveCheckpoint(dir, peer, round, extra, keep, bodyShare),
      restore: async (dir, logger) => {
        const r = await restoreLatestCheckpoint(dir, peer, logger, bodyShare);
        return r && { ...r, summary: `${peer.pool.size} experts in the pool` };
      },
    };
  }

  get id(): string {
    return this.peer.id;
  }

  get data() {
    return this.peer.data;
  }

  /**
   * Take in every head waiting in the exchange; returns how many were
   * accepted. `refused` counts the others that are this round's word from
   * their sender (refused by validation or the admission check, not stale
   * or unselected).
   */
  absorb(ex: HeadExchange, round: number, log: Logger, refused?: { count: number }): number {
    return absorbMessages(ex, log, 'head', (m) => {
      const r = this.peer.receiveHead(m.payload, m.from, round);
      if (refused && r !== 'added' && r !== 'replaced' && r !== 'stale-version' && r !== 'not-selected') refused.count++;
      return r;
    });
  }

  /**
   * Settle before the first round (a late joiner starts with the newest
   * heads), take in waiting heads, drop stale experts, train, (bounded
   * mixture: choose the experts to pull and tell the exchange), publish the
   * head, wait (bounded) for the others' heads of this round, take them in.
   */
  async runRound(round: number, net: SiteNetwork): Promise<SiteRound> {
    const ex = net.exchange!;
    const t0 = performance.now();
    if (round === 1 && net.deadlineMs > 0) await ex.settle?.(net.deadlineMs);
    // With shareBody: the partners' bodies of the last round that published them, combined into this site's before it trains.
    const share = net.bodies ? this.bodyShare : undefined;
    let bodies: MixedBody[] | undefined;
    if (share && round > 1 && share.due(round - 1)) {
      await share.gather(net.bodies!, round - 1, { quorum: net.quorum, deadlineMs: net.deadlineMs, logger: net.logger, ...waitOptions(net, 'bodies') });
      bodies = share.mix(round - 1, round, net.bodies!.members());
    }
    let waitSeconds = secondsSince(t0);
    let fresh = this.absorb(ex, round, net.logger);
    const expired = this.peer.startRound(round);
    // A late joiner may have caught up with more heads than it mixes: keep the best.
    if (this.peer.maxExperts > 0 && this.peer.pool.size > this.peer.maxExperts) this.peer.selectExperts(round, []);
    const tt = performance.now();
    const loss = await this.peer.trainRound(round);
    const trainSeconds = secondsSince(tt);
    let quorum = net.quorum;
    let chosen: string[] | undefined;
    if (this.peer.maxExperts > 0 && ex.select) {
      chosen = this.peer.selectExperts(round, [...new Set([...ex.members(), ...(ex.announced?.().keys() ?? [])])]) ?? undefined;
      if (chosen) {
        ex.select(chosen, round);
        quorum = Math.min(quorum, chosen.length);
      }
    }
    const head = this.o.randomUpdates ? randomHead(this.peer, round, deriveSeed(this.o.seed ?? 0, 'poison', this.id, round)) : this.peer.encodeHead(round);
    await ex.publish(head, round);
    // The body goes out with the head; its partners pull it while this site waits for heads.
    if (share?.due(round)) await share.publish(net.bodies!, round, this.o.poisonBody ? share.encodePoisoned(this.o.poisonBody, round) : undefined);
    // A site that lags behind already holds some of this round's heads (they came while it trained):
    // they count towards the quorum, or it would wait out the whole deadline for heads that never come;
    // so do heads it refused (an attacker's, say), which no longer wait in the exchange.
    const refused = { count: 0 };
    fresh += this.absorb(ex, round, net.logger, refused);
    const tw = performance.now();
    if (net.deadlineMs > 0) fresh += await this.waitForRound(ex, net, round, quorum, chosen, refused);
    waitSeconds += secondsSince(tw);
    fresh += this.absorb(ex, round, net.logger);
    return { loss, trainSeconds, waitSeconds, fresh, expired, ...(bodies ? { bodies } : {}) };
  }

  /** Wait (bounded) for this round's heads; members that left are not waited for (see `awaitRound`). */
  private waitForRound(
    ex: HeadExchange,
    net: SiteNetwork,
    round: number,
    quorum: number,
    chosen: string[] | undefined,
    refused: { count: number },
  ): Promise<number> {
    return awaitRound(ex, this.departed, {
      round,
      quorum,
      candidates: chosen?.length ?? net.others ?? quorum,
      ...(chosen ? { from: chosen } : {}),
      deadlineMs: net.deadlineMs,
      ...waitOptions(net, 'heads'),
      delivered: () =>
        new Set(
          this.peer.pool
            .list()
            .filter((e) => e.version >= round)
            .map((e) => e.peer),
        ),
      refused: () => refused.count,
      absorb: () => this.absorb(ex, round, net.logger, refused),
    });
  }

  evaluate() {
    return this.peer.evaluate();
  }

  /** The mixture's class probabilities (own head and received experts, weighted by the gate). */
  predict(x: tf.Tensor): tf.Tensor2D {
    return tf.tidy(() => this.peer.moeProbs(x));
  }

  experts(): ExpertInfo[] {
    const gw = this.peer.meanGateWeights();
    return this.peer.pool.list().map((e) => ({ peer: e.peer, version: e.version, gateWeight: gw[e.peer] ?? 0 }));
  }

  rejected(): Record<string, number> {
    return { ...this.peer.counters.rejected, ...prefixKeys(this.bodyShare?.counters, 'body:') } as Record<string, number>;
  }

  privacySpent() {
    return this.peer.privacySpent();
  }

  resultExtras() {
    return { gateWeights: this.peer.meanGateWeights(), rejectedHeads: this.rejected() };
  }

  dispose(): void {
    this.peer.dispose();
  }
}

/** What dFLMoE's sites are made with: its settings, body sharing's and the staleness bound. */
export type DflmoeSiteOptions = AlgorithmBaseOptions & DflmoeSettings & BodySettings & StalenessSettings;

export const dflmoe: Algorithm<'dflmoe', DflmoeSiteOptions> = {
  name: 'dflmoe',
  label: 'dFLMoE',
  description: 'serverless: each site shares only its head and mixes the heads it receives with a learned gate',
  color: '#1b7837',
  network: 'peers',
  message: 'head',
  sameModel: false,
  bodies: 'opt-in',
  settings: [dflmoeSettings, bodySettings, stalenessSettings],
  multiTask: (o) => ({ heads: 'experts', body: o.shareBody ? 'peers' : 'none' }),
  createSite: (base, o) => {
    // The settings' own checks (a frozen body cannot be shared), whoever built `o`.
    resolveSettings([dflmoeSettings], [], o, { freezeBody: base.freezeBody });
    if (o.loraRank > 0 && base.sharedBody)
      throw new Error('loraRank covers single-task sites; a multi-task site shares one body among its tasks (drop loraRank)');
    if (o.crossTask)
      throw new Error(
        'crossTask reads the heads of other tasks: it needs multi-task sites (a multi-task dataset such as digits-tasks); this site learns one task',
      );
    const peer = new DflmoePeer({ ...base, ...o });
    return new DflmoeSite(peer, o, o.shareBody ? siteBodyShare(peer, o) : undefined);
  },
};
