/**
 * Gossip averaging (decentralized FedAvg, D-PSGD on the complete graph of
 * members; Lian et al., NeurIPS 2017): no server. Each round every site
 * trains its whole model locally (fresh optimizer, as a FedAvg client),
 * sends it to the other members, waits (bounded) for theirs, and replaces
 * its model by the sample-weighted average of its own and the freshest
 * model it holds from each member, if received at most `maxStaleness`
 * rounds ago. Received models are untrusted: size, format, architecture,
 * shapes, finite values, sender and round are checked; a bad one is
 * counted, logged and dropped. A member's sample count (its weight in the
 * average) is the one it declared first, clipped like a server clips it
 * (`boundSampleCounts`): at most 10 times the median of the mix.
 */
import { CodecError, modelBundleMeta, type DecodeLimits, type NamedArray } from '../codec.js';
import { DepartedMembers, absorbMessages, awaitRound } from '../exchange.js';
import { boundSampleCounts, federatedAverage } from '../averaging.js';
import type { Algorithm, AlgorithmBaseOptions, SiteNetwork, SiteRound } from './api.js';
import { stalenessSettings, type StalenessSettings } from '../experts.js';
import type { PeerModelOptions } from './common.js';
import { FedAvgClient, sharedModelSeed } from './fedavg.js';
import { ModelSite, secondsSince, waitOptions } from './site.js';

interface Held {
  round: number;
  receivedRound: number;
  samples: number;
  weights: NamedArray[];
}

export type GossipTake = 'added' | 'replaced' | 'stale-version' | 'self' | 'sender-mismatch' | CodecError['reason'];

export class GossipSite extends ModelSite<FedAvgClient> {
  private held = new Map<string, Held>();
  /** The sample count each member declared first; later claims do not change it. */
  private declared = new Map<string, number>();
  private readonly limits: DecodeLimits;
  private readonly maxStaleness: number;
  /** Members that disconnected and have not come back: a round does not wait for their models. */
  private readonly departed = new DepartedMembers();

  constructor(base: PeerModelOptions, o: Pick<AlgorithmBaseOptions, 'seed' | 'maxModelBytes'> & StalenessSettings) {
    super(new FedAvgClient({ ...base, initSeed: sharedModelSeed(o.seed) }));
    this.limits = { maxBytes: o.maxModelBytes, maxParams: this.model.variables().reduce((a, v) => a + v.size, 0) };
    this.maxStaleness = o.maxStaleness;
  }

  architecture(): string {
    return this.model.architecture();
  }

  /** This site's model of `round`, for the other members. */
  encode(round: number): Uint8Array {
    return this.model.encodeModel(round, { peer: this.id });
  }

  /** Validate a model received from `from` (as the transport authenticated it) and keep it as that member's freshest. */
  take(payload: Uint8Array, from: string, round: number): GossipTake {
    let r: GossipTake;
    try {
      const { meta, weights } = this.model.decodeModel(payload, this.limits);
      const m = modelBundleMeta.safeParse(meta);
      if (!m.success) r = 'header';
      else if (m.data.peer !== from) r = 'sender-mismatch';
      else if (from === this.id) r = 'self';
      else if (m.data.round <= (this.held.get(from)?.round ?? 0)) r = 'stale-version';
      else {
        r = this.held.has(from) ? 'replaced' : 'added';
        if (!this.declared.has(from)) this.declared.set(from, m.data.samples);
        else if (this.declared.get(from) !== m.data.samples) this.refuse('samples-changed');
        this.held.set(from, { round: m.data.round, receivedRound: round, samples: this.declared.get(from)!, weights });
      }
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
      r = e.reason;
    }
    if (r !== 'added' && r !== 'replaced') this.refuse(r);
    return r;
  }

  /**
   * Replace the own model by the sample-weighted average of itself and every
   * held model at most `maxStaleness` rounds old (by sender id, own included,
   * so that every site sums in the same order). Returns how many others were mixed in.
   */
  mix(round: number): number {
    for (const [peer, h] of this.held) if (round - h.receivedRound > this.maxStaleness) this.held.delete(peer);
    if (this.held.size === 0) return 0;
    const parts = [
      { id: this.id, weights: this.model.getWeights(), samples: this.data.trainSamples },
      ...[...this.held].map(([id, h]) => ({ id, weights: h.weights, samples: h.samples })),
    ].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const bounded = boundSampleCounts(parts.map((p) => p.samples));
    this.model.setWeights(federatedAverage(parts.map((p, i) => ({ weights: p.weights, samples: bounded[i] }))));
    return this.held.size;
  }

  async runRound(round: number, net: SiteNetwork): Promise<SiteRound> {
    const ex = net.exchange!;
    const t0 = performance.now();
    const loss = await this.model.trainRound(round);
    const trainSeconds = secondsSince(t0);
    await ex.publish(this.encode(round), round);
    const tw = performance.now();
    const absorb = () => absorbMessages(ex, net.logger, 'model', (m) => this.take(m.payload, m.from, round));
    let fresh = absorb();
    if (net.quorum > 0 && net.deadlineMs > 0) {
      fresh += await awaitRound(ex, this.departed, {
        round,
        quorum: net.quorum,
        candidates: net.others ?? net.quorum,
        deadlineMs: net.deadlineMs,
        absorb,
        ...waitOptions(net, 'models'),
        // A member's model of this round (or a newer one, from a site ahead of this one).
        delivered: () => new Set([...this.held].filter(([, h]) => h.round >= round).map(([id]) => id)),
      });
    }
    const waitSeconds = secondsSince(tw);
    fresh += absorb();
    this.mix(round);
    return { loss, trainSeconds, waitSeconds, fresh };
  }
}

export const gossip: Algorithm<'gossip', AlgorithmBaseOptions & StalenessSettings> = {
  name: 'gossip',
  label: 'gossip',
  description: 'serverless: each site sends its whole model to the other members and averages (sample-weighted) with the models it received',
  color: '#762a83',
  network: 'peers',
  message: 'model',
  sameModel: true,
  settings: [stalenessSettings],
  createSite: (base, o) => new GossipSite(base, o),
};
