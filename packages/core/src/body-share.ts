/**
 * Body sharing: the one place where a site publishes its body, pulls its
 * partners' bodies, checks them and combines them into its own. Used by
 * dFLMoE with `shareBody` (heads stay experts, bodies are averaged) and by
 * `fedrep-p2p` (FedRep without a server). There is no server and no global
 * model: every site combines what it received with its own body
 * (decentralized SGD, Lian et al., NeurIPS 2017), and heads, gates and
 * transforms stay personal.
 *
 * - **Publish**: after training a round `r` with `r % every == 0`, the site
 *   sends its body (a bundle of kind `body`, in the head precision) on the
 *   body exchange, a `HeadExchange` of its own (in-memory hub, or libp2p on
 *   `/dflmoe/body/1.0.0` with the same announcements, signatures, allowlist,
 *   size limits and strikes as heads).
 * - **Pull**: the site asks only for its partners' bodies of that round: every
 *   member (`full`), its two neighbours in peer-id order (`ring`), or `k`
 *   members drawn afresh each round from a seeded generator (`random:k`), so
 *   that a site's body bytes stay flat as the consortium grows.
 * - **Check**: a received body is untrusted: size, format, kind, sender,
 *   finite values, shapes and version are checked; a bad one is counted,
 *   logged and reported to the transport (strikes). A body of another
 *   architecture is no offence: the site averages only within its group and
 *   says so once per member.
 * - **Combine**: `mean` (weighted by training rows, clipped like a server
 *   clips them), coordinate-wise `median`, or `trimmed:<f>` (coordinate-wise
 *   mean after dropping the lowest and highest fraction `f`).
 * - **Secure aggregation** (`secureAggregation`, mean only): no body travels
 *   in the clear; each round's groups sum masked bodies and every member
 *   takes its group's mean (`SecureBodyRounds`, docs/secure-aggregation.md).
 */
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { Rng, deriveSeed } from '@dflmoe/data/internal';
import { CodecError, decodeBundle, encodeBundle, modelBundleMeta, type CodecReason, type NamedArray, type Precision } from './codec.js';
import { DepartedMembers, absorbMessages, awaitRound, type HeadExchange, type RoundWait } from './exchange.js';
import type { Logger } from './log.js';
import { formatBodySpec, type BodySpec } from './model.js';
import { boundSampleCounts, federatedAverage } from './averaging.js';
import { defineSettings, parsedString, type SettingsOf } from './settings.js';
import { SecureBodyRounds } from './secure-agg/body-rounds.js';

// ---------------------------------------------------------------- settings

/**
 * How a site combines its partners' bodies with its own: the row-weighted
 * mean, the coordinate-wise median or trimmed mean.
 */
export type BodyCombiner = { kind: 'mean' } | { kind: 'median' } | { kind: 'trimmed'; fraction: number };
/**
 * Whose bodies a site takes: every member (`full`), its two neighbours in
 * peer-ID order (`ring`), or k drawn per round (`random`).
 */
export type Topology = { kind: 'full' } | { kind: 'ring' } | { kind: 'random'; k: number };

/** `mean`, `median` or `trimmed:<fraction>` with 0 <= fraction < 0.5. */
export function parseBodyCombiner(s: string): BodyCombiner {
  if (s === 'mean' || s === 'median') return { kind: s };
  const m = /^trimmed:([0-9.]+)$/.exec(s);
  if (m) {
    const fraction = Number(m[1]);
    if (Number.isFinite(fraction) && fraction >= 0 && fraction < 0.5) return { kind: 'trimmed', fraction };
    throw new Error(`bad body combiner "${s}": the trimmed fraction must be at least 0 and below 0.5`);
  }
  throw new Error(`unknown body combiner "${s}": use mean, median or trimmed:<fraction> (e.g. trimmed:0.1)`);
}

export function formatBodyCombiner(c: BodyCombiner): string {
  return c.kind === 'trimmed' ? `trimmed:${c.fraction}` : c.kind;
}

/** `full`, `ring` or `random:<k>` with k a positive integer. */
export function parseTopology(s: string): Topology {
  if (s === 'full' || s === 'ring') return { kind: s };
  const m = /^random:(\d+)$/.exec(s);
  if (m && Number(m[1]) >= 1) return { kind: 'random', k: Number(m[1]) };
  throw new Error(`unknown topology "${s}": use full, ring or random:<k> (k a positive integer)`);
}

export function formatTopology(t: Topology): string {
  return t.kind === 'random' ? `random:${t.k}` : t.kind;
}

export interface BodyShareOptions {
  /** Publish and combine bodies every this many rounds. */
  every: number;
  combiner: BodyCombiner;
  topology: Topology;
  /** Precision of published bodies (the head precision). */
  precision: Precision;
  /** Largest body message accepted, in bytes. */
  maxBytes: number;
  /** Rounds a received body stays usable. */
  maxStaleness: number;
  /** The consortium's seed (draws of `random:k` partners). */
  seed: number;
  /** Combine under secure aggregation (the mean only): no member sees another's body. */
  secureAggregation?: boolean;
}

/** How bodies are shared (dFLMoE with `shareBody`, fedrep-p2p): the site config's `bodies` section. */
export const bodySettings = defineSettings({
  section: 'bodies',
  usedBy: 'dflmoe --share-body and fedrep-p2p',
  shape: {
    bodyEvery: z.number().int().min(1).default(1).describe('publish and combine bodies every this many rounds'),
    bodyCombiner: parsedString(parseBodyCombiner).default('mean').describe('mean (weighted by training rows), median or trimmed:<fraction> (coordinate-wise)'),
    topology: parsedString(parseTopology)
      .default('full')
      .describe('whose bodies a site combines: full (every member), ring (its two neighbours by id) or random:<k> (k drawn afresh each round)'),
    gossipPeers: z.number().int().min(1).optional().describe('combine with k members drawn afresh each round (topology random:<k>)'),
    secureAggregation: z
      .boolean()
      .default(false)
      .describe("combine bodies under secure aggregation (pairwise masks, mean only): no member sees another's body"),
  },
  keys: { bodyEvery: 'every', bodyCombiner: 'combiner' },
  // gossipPeers is a shorthand: expanded here, once.
  finish: (v) => {
    if (v.gossipPeers !== undefined) v.topology = `random:${v.gossipPeers as number}`;
    const secure = secureAggregationProblem(v as { secureAggregation?: boolean; bodyCombiner?: string });
    return secure ? ['bodyCombiner', secure] : undefined;
  },
});

/** Body sharing's settings, resolved. */
export type BodySettings = SettingsOf<typeof bodySettings>;

/** Why these settings cannot combine under secure aggregation, or undefined when they can. */
export function secureAggregationProblem(o: { secureAggregation?: boolean; bodyCombiner?: string }): string | undefined {
  return o.secureAggregation && (o.bodyCombiner ?? 'mean') !== 'mean'
    ? `secure aggregation combines bodies by their mean only: under masking no site sees another's body, so the ${o.bodyCombiner} cannot be taken (use the mean combiner, or turn secure aggregation off)`
    : undefined;
}

// ---------------------------------------------------------------- combining

/**
 * Combine bodies (own included) into one. `parts` must be in a canonical
 * order (by site id) so that every site sums in the same order; all share
 * tensor names and shapes. `mean` weights by `samples`; the robust
 * combiners ignore them (a count is a claim, and they are for distrust).
 */
export function combineBodies(parts: { weights: NamedArray[]; samples: number }[], c: BodyCombiner): NamedArray[] {
  if (parts.length === 0) throw new Error('nothing to combine');
  const n = parts.length;
  if (c.kind === 'mean') {
    const bounded = boundSampleCounts(parts.map((p) => p.samples));
    return federatedAverage(parts.map((p, i) => ({ weights: p.weights, samples: bounded[i] })));
  }
  const drop = c.kind === 'trimmed' ? Math.floor(c.fraction * n) : 0;
  const col = new Float64Array(n);
  return parts[0].weights.map((w0, i) => {
    const data = new Float32Array(w0.data.length);
    for (let j = 0; j < data.length; j++) {
      for (let k = 0; k < n; k++) col[k] = parts[k].weights[i].data[j];
      col.sort();
      if (c.kind === 'median') data[j] = n % 2 ? col[(n - 1) / 2] : (col[n / 2 - 1] + col[n / 2]) / 2;
      else {
        let s = 0;
        for (let k = drop; k < n - drop; k++) s += col[k];
        data[j] = s / (n - 2 * drop);
      }
    }
    return { name: w0.name, shape: w0.shape, data };
  });
}

/**
 * The members whose bodies a site pulls and combines in `round`: all of
 * them, its ring neighbours (by peer id, itself included in the ring), or
 * `k` drawn afresh each round (seeded by the consortium's seed, the site and
 * the round, so a re-run draws the same).
 */
export function choosePartners(self: string, members: readonly string[], round: number, t: Topology, seed: number): string[] {
  const others = [...new Set(members)].filter((m) => m !== self).sort();
  if (t.kind === 'full') return others;
  if (t.kind === 'ring') {
    const ring = [...others, self].sort();
    const i = ring.indexOf(self);
    return [...new Set([ring[(i + ring.length - 1) % ring.length], ring[(i + 1) % ring.length]])].filter((m) => m !== self);
  }
  if (others.length <= t.k) return others;
  const rng = new Rng(deriveSeed(seed, 'body-partners', self, round));
  const pick = [...others];
  for (let i = 0; i < t.k; i++) {
    const j = i + rng.int(pick.length - i);
    [pick[i], pick[j]] = [pick[j], pick[i]];
  }
  return pick.slice(0, t.k).sort();
}

// ---------------------------------------------------------------- the share

export type BodyTake = 'added' | 'replaced' | 'stale-version' | 'self' | 'sender-mismatch' | 'other-architecture' | 'not-selected' | CodecReason;

/** A body that went into a combination, for the audit trail. */
export interface MixedBody {
  /** The member whose body it was. */
  peer: string;
  /** The round of that member's body. */
  version: number;
  /** SHA-256 (hex) of the bytes received. */
  digest: string;
}

interface HeldBody extends MixedBody {
  receivedRound: number;
  samples: number;
  weights: NamedArray[];
}

/** What a checkpoint keeps of a share (besides the held bodies' tensors). */
export interface BodyShareState {
  held: { peer: string; version: number; receivedRound: number; samples: number; digest: string; tensors: number }[];
  declared: [string, number][];
  otherArch: [string, string][];
  counters: Record<string, number>;
}

export const digestHex = (bytes: Uint8Array): string => bytesToHex(sha256(bytes));

export class BodyShare {
  readonly counters: Record<string, number> = {};
  private held = new Map<string, HeldBody>();
  /** The sample count each member declared first; later claims do not change it. */
  private declared = new Map<string, number>();
  /** Members whose body has another architecture (averaged only within groups). */
  private otherArch = new Map<string, string>();
  private readonly departed = new DepartedMembers();
  /** Partners drawn per round. */
  private drawn = new Map<number, string[]>();
  /** What went into the last combination, and the digest of the last body published. */
  lastMixed: MixedBody[] = [];
  lastPublished?: { version: number; digest: string };
  /** With secure aggregation: the rounds' protocol. */
  private readonly secure?: SecureBodyRounds;

  /**
   * @param vars the body's variables, in a fixed order (read and assigned in place)
   * @param arch a string two sites share exactly when their bodies can be averaged
   * @param samples this site's training rows (its weight in a mean)
   */
  constructor(
    readonly selfId: string,
    private readonly vars: () => tf.Variable[],
    readonly arch: string,
    readonly samples: number,
    readonly o: BodyShareOptions,
  ) {
    if (!Number.isInteger(o.every) || o.every < 1) throw new Error(`bodyEvery must be a positive integer, got ${o.every}`);
    if (o.secureAggregation) {
      const problem = secureAggregationProblem({ secureAggregation: true, bodyCombiner: formatBodyCombiner(o.combiner) });
      if (problem) throw new Error(problem);
      this.secure = new SecureBodyRounds(selfId, vars, arch, samples, { topology: o.topology, seed: o.seed, maxBytes: o.maxBytes, every: o.every }, (r) =>
        this.count(r),
      );
    }
  }

  /** Bodies are published after training round `round`, and combined before the next. */
  due(round: number): boolean {
    return round % this.o.every === 0;
  }

  /**
   * The members whose bodies go into round `round`'s combination (known
   * other architectures left out): drawn once, when the body of that round
   * is published, and kept for its gathering and combination.
   */
  partners(round: number, members: readonly string[]): string[] {
    const drawn = this.drawn.get(round);
    if (drawn) return drawn.filter((m) => !this.otherArch.has(m));
    const p = choosePartners(
      this.selfId,
      members.filter((m) => !this.otherArch.has(m)),
      round,
      this.o.topology,
      this.o.seed,
    );
    this.drawn.set(round, p);
    for (const r of this.drawn.keys()) if (r < round - 2 * this.o.every) this.drawn.delete(r);
    return p;
  }

  /** This site's body as a bundle (`version` is the round it was trained in). */
  encode(version: number): Uint8Array {
    const weights = this.vars().map((v, i) => ({ name: `b${i}`, shape: v.shape, data: v.dataSync() as Float32Array }));
    return encodeBundle('body', { arch: this.arch, round: version, samples: this.samples, peer: this.selfId }, weights, this.o.precision);
  }

  /**
   * A body an attacker would send (robustness experiments): `random`, Gaussian
   * weights five times as large as the own body's; `sign-flip`, the own body
   * negated and scaled by 5 (so that it outweighs the honest bodies in a mean).
   */
  encodePoisoned(kind: 'random' | 'sign-flip', version: number): Uint8Array {
    const rng = new Rng(deriveSeed(this.o.seed, 'poison-body', this.selfId, version));
    const weights = this.vars().map((v, i) => {
      const own = v.dataSync() as Float32Array;
      const scale = Math.sqrt(own.reduce((a, x) => a + x * x, 0) / Math.max(1, own.length)) || 1;
      const data = kind === 'sign-flip' ? own.map((x) => -5 * x) : own.map(() => 5 * scale * rng.normal());
      return { name: `b${i}`, shape: v.shape, data };
    });
    return encodeBundle('body', { arch: this.arch, round: version, samples: this.samples, peer: this.selfId }, weights, this.o.precision);
  }

  /**
   * Publish the body of `round` (or `payload`, an attacker's body in
   * robustness experiments) and pull only this round's partners' bodies.
   */
  async publish(ex: HeadExchange, round: number, payload = this.encode(round)): Promise<void> {
    this.lastPublished = { version: round, digest: digestHex(payload) };
    // Under secure aggregation the body stays here: the site advertises its keys for the round.
    if (this.secure) return this.secure.begin(ex, round);
    const partners = this.partners(round, ex.members());
    // Every member (also ones that join later) unless the topology or the architecture groups narrow it.
    ex.select?.(this.o.topology.kind === 'full' && this.otherArch.size === 0 ? undefined : partners, round);
    await ex.publish(payload, round);
  }

  /** Validate a body received from `from` (as the transport authenticated it) and keep it as that member's newest. */
  take(payload: Uint8Array, from: string, round: number, log?: Logger): BodyTake {
    let r: BodyTake;
    try {
      // Bounded by bytes only: a body of another architecture may be larger than ours, and is no offence.
      const b = decodeBundle(payload, { maxBytes: this.o.maxBytes });
      const m = modelBundleMeta.safeParse(b.meta);
      if (b.kind !== 'body') r = 'kind';
      else if (!m.success) r = 'header';
      else if (m.data.peer !== from) r = 'sender-mismatch';
      else if (from === this.selfId) r = 'self';
      else if (m.data.arch !== this.arch) {
        r = 'other-architecture';
        if (!this.otherArch.has(from)) {
          this.otherArch.set(from, m.data.arch);
          log?.info(`${from} has another body (${m.data.arch.slice(0, 120)}); bodies are combined only within this site's architecture group (${this.arch})`);
        }
      } else if (m.data.round <= (this.held.get(from)?.version ?? 0)) r = 'stale-version';
      else {
        const vars = this.vars();
        if (b.tensors.length !== vars.length || b.tensors.some((t, i) => t.shape.join() !== vars[i].shape.join())) {
          throw new CodecError('shape', `body tensors do not match this site's body (${b.tensors.length} tensors, expected ${vars.length})`);
        }
        r = this.held.has(from) ? 'replaced' : 'added';
        if (!this.declared.has(from)) this.declared.set(from, m.data.samples);
        else if (this.declared.get(from) !== m.data.samples) this.count('samples-changed');
        this.held.set(from, {
          peer: from,
          version: m.data.round,
          receivedRound: round,
          samples: this.declared.get(from)!,
          weights: b.tensors,
          digest: digestHex(payload),
        });
      }
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
      r = e.reason;
    }
    if (r !== 'added' && r !== 'replaced' && r !== 'other-architecture' && r !== 'stale-version') this.count(r);
    return r;
  }

  private count(reason: string): void {
    this.counters[reason] = (this.counters[reason] ?? 0) + 1;
  }

  /** Take in every body waiting in `ex`; returns how many were accepted. */
  absorb(ex: HeadExchange, round: number, log: Logger, refused?: { count: number }): number {
    return absorbMessages(ex, log, 'body', (m) => {
      const r = this.take(m.payload, m.from, round, log);
      if (refused && r !== 'added' && r !== 'replaced' && r !== 'stale-version') refused.count++;
      return r;
    });
  }

  /**
   * Wait (at most `deadlineMs`) for the partners' bodies of `round`, taking
   * them in as they come; members that left are not waited for. Returns how
   * many bodies were accepted.
   */
  async gather(ex: HeadExchange, round: number, w: { quorum: number; deadlineMs: number; logger: Logger } & Pick<RoundWait, 'notice'>): Promise<number> {
    if (this.secure) return this.secure.run(ex, round, w);
    const partners = this.partners(round, ex.members());
    const refused = { count: 0 };
    let fresh = this.absorb(ex, round, w.logger, refused);
    if (w.deadlineMs > 0 && partners.length > 0) {
      fresh += await awaitRound(ex, this.departed, {
        round,
        step: this.o.every,
        quorum: Math.min(w.quorum, partners.length),
        candidates: partners.length,
        from: partners,
        deadlineMs: w.deadlineMs,
        delivered: () => new Set(partners.filter((p) => (this.held.get(p)?.version ?? 0) >= round)),
        refused: () => refused.count,
        absorb: () => this.absorb(ex, round, w.logger, refused),
        ...(w.notice ? { notice: w.notice } : {}),
      });
    }
    return fresh + this.absorb(ex, round, w.logger, refused);
  }

  /**
   * Replace the body by the combination of its own and the partners' bodies
   * of `round` held at most `maxStaleness` rounds (counted from `now`).
   * Returns the bodies combined besides the own one (also kept in `lastMixed`).
   */
  mix(round: number, now: number, members: readonly string[]): MixedBody[] {
    if (this.secure) return (this.lastMixed = this.secure.mix(round));
    for (const [peer, h] of this.held) if (now - h.receivedRound > this.o.maxStaleness) this.held.delete(peer);
    const partners = new Set(this.partners(round, [...members, ...this.held.keys()]));
    const used = [...this.held.values()].filter((h) => partners.has(h.peer));
    this.lastMixed = used.map(({ peer, version, digest }) => ({ peer, version, digest }));
    if (used.length === 0) return [];
    const vars = this.vars();
    const own = vars.map((v, i) => ({ name: `b${i}`, shape: v.shape, data: v.dataSync() as Float32Array }));
    const parts = [{ id: this.selfId, weights: own, samples: this.samples }, ...used.map((h) => ({ id: h.peer, weights: h.weights, samples: h.samples }))].sort(
      (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
    );
    const combined = combineBodies(parts, this.o.combiner);
    vars.forEach((v, i) => tf.tidy(() => v.assign(tf.tensor(combined[i].data, v.shape))));
    return this.lastMixed;
  }

  /** The held bodies and bookkeeping, for a checkpoint (tensors named `bodies/<peer>/<i>`). */
  exportState(): { meta: BodyShareState; tensors: NamedArray[] } {
    const held = [...this.held.values()];
    return {
      meta: {
        held: held.map((h) => ({
          peer: h.peer,
          version: h.version,
          receivedRound: h.receivedRound,
          samples: h.samples,
          digest: h.digest,
          tensors: h.weights.length,
        })),
        declared: [...this.declared],
        otherArch: [...this.otherArch],
        counters: { ...this.counters },
      },
      tensors: held.flatMap((h) => h.weights.map((w, i) => ({ ...w, name: `bodies/${h.peer}/${i}` }))),
    };
  }

  /** Restore what `exportState` saved; `tensors` may hold other names too. */
  importState(meta: BodyShareState, tensors: NamedArray[]): void {
    const byName = new Map(tensors.map((t) => [t.name, t]));
    const vars = this.vars();
    this.held.clear();
    for (const h of meta.held) {
      const weights = Array.from({ length: h.tensors }, (_, i) => {
        const t = byName.get(`bodies/${h.peer}/${i}`);
        if (!t) throw new Error(`checkpoint lacks the body of ${h.peer} (tensor ${i})`);
        if (t.shape.join() !== vars[i]?.shape.join()) throw new Error(`checkpoint holds a body of ${h.peer} that does not fit this site's body`);
        return { name: `b${i}`, shape: t.shape, data: t.data };
      });
      this.held.set(h.peer, { peer: h.peer, version: h.version, receivedRound: h.receivedRound, samples: h.samples, digest: h.digest, weights });
    }
    this.declared = new Map(meta.declared);
    this.otherArch = new Map(meta.otherArch);
    Object.assign(this.counters, meta.counters);
  }

  /** Members whose body is held now, with its version. */
  heldVersions(): Map<string, number> {
    return new Map([...this.held].map(([p, h]) => [p, h.version]));
  }
}

/** The algorithm options a body share is made from: its settings, the head precision, the model size limit and the staleness bound. */
export interface BodySharingSettings extends Pick<BodySettings, 'bodyEvery' | 'bodyCombiner' | 'topology'>, Partial<Pick<BodySettings, 'secureAggregation'>> {
  headPrecision?: Precision;
  maxModelBytes: number;
  maxStaleness: number;
  seed: number;
}

/** A body share for a site's body, from the algorithm options (the head precision and model size limit apply). */
export function createBodyShare(
  id: string,
  body: { vars: () => tf.Variable[]; spec: BodySpec; sampleShape: number[]; featureDim: number; samples: number },
  o: BodySharingSettings,
): BodyShare {
  const arch = `${formatBodySpec(body.spec)}|in=${body.sampleShape.join('x')}|features=${body.featureDim}`;
  return new BodyShare(id, body.vars, arch, body.samples, {
    every: o.bodyEvery,
    combiner: parseBodyCombiner(o.bodyCombiner),
    topology: parseTopology(o.topology),
    precision: o.headPrecision ?? 'float32',
    maxBytes: o.maxModelBytes,
    maxStaleness: o.maxStaleness,
    seed: o.seed,
    ...(o.secureAggregation ? { secureAggregation: true } : {}),
  });
}
