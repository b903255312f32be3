/**
 * Secure aggregation on a body exchange: a site's side of each round's
 * protocol (`SecAggMember`), run over the same `HeadExchange` that carries
 * plain bodies (in memory, or libp2p on `/dflmoe/body/1.0.0`).
 *
 * Phase p of round r travels as version `4 r + p - 1` (the exchange moves
 * each member's newest message, versions only forward). A site publishes
 * its keys with its body's round (`begin`, where it would publish its
 * body), then runs the other three phases where it would gather bodies
 * (`run`), each waiting (bounded by the round deadline; members that left
 * are not waited for) for the group members that can still send; `mix`
 * then replaces its body by the group's mean. A message of a later round
 * is kept until that round begins; one of an earlier round is stale.
 */
import * as tf from '@tensorflow/tfjs-core';
import { DepartedMembers, absorbMessages, awaitRound, type HeadExchange, type RoundWait } from '../exchange.js';
import type { Logger } from '../log.js';
import { SecAggError, decodeSecAgg } from './messages.js';
import { SECAGG_BENIGN, SecAggMember, type SecAggResult } from './protocol.js';
import { secAggGroupOf, secAggGroupSize } from './groups.js';

/** A body that went into a secure combination, for the audit trail: whose masked input, which round, its digest. */
export interface MaskedBody {
  peer: string;
  version: number;
  digest: string;
}

export interface SecureBodyOptions {
  /** Whose bodies a site combines (body sharing's `Topology`, written out: body-share.ts imports this file). */
  topology: { kind: 'full' } | { kind: 'ring' } | { kind: 'random'; k: number };
  seed: number;
  maxBytes: number;
  /** Rounds between two body rounds (for how far behind a member may be). */
  every: number;
}

/** The exchange version of phase `phase` (1 to 4) of round `round`. */
export const secAggVersion = (round: number, phase: number): number => 4 * round + phase - 1;

export class SecureBodyRounds {
  /** Every member seen; groups are drawn from it (a member that left stays in it, and drops out of its group). */
  private readonly roster = new Set<string>();
  private current?: { round: number; member: SecAggMember; refused: Set<string> };
  /** Messages of rounds not begun yet, newest per sender. */
  private readonly early = new Map<string, { round: number; payload: Uint8Array }>();
  private readonly results = new Map<number, SecAggResult>();
  private readonly departed = new DepartedMembers();

  constructor(
    readonly selfId: string,
    private readonly vars: () => tf.Variable[],
    readonly arch: string,
    readonly samples: number,
    private readonly o: SecureBodyOptions,
    private readonly count: (reason: string) => void,
  ) {}

  /** Draw this round's group and publish this site's keys. */
  async begin(ex: HeadExchange, round: number): Promise<void> {
    // Watch departures before the roster is read: a member that leaves between now and the first wait is not waited for.
    this.departed.of(ex);
    for (const m of [...ex.members(), ...(ex.announced?.().keys() ?? [])]) if (m !== this.selfId) this.roster.add(m);
    const group = secAggGroupOf(this.selfId, [...this.roster], round, secAggGroupSize(this.o.topology, this.roster.size + 1), this.o.seed);
    const length = this.vars().reduce((a, v) => a + v.size, 0);
    const member = await SecAggMember.create(this.selfId, group, length, { samples: this.samples, arch: this.arch }, this.o.maxBytes);
    this.current = { round, member, refused: new Set() };
    ex.select?.(
      group.members.filter((m) => m !== this.selfId),
      secAggVersion(round, 1),
    );
    for (const [from, e] of [...this.early]) {
      if (e.round <= round) this.early.delete(from);
      if (e.round === round) this.take(e.payload, from);
    }
    await ex.publish(member.advertise(), secAggVersion(round, 1));
  }

  /** One message into the round's member; what `absorbMessages` is told. */
  private take(payload: Uint8Array, from: string): string {
    const cur = this.current!;
    const r = cur.member.receive(payload, from);
    if (r === 'ok') return 'added';
    if (r === 'wrong-round') {
      let round = 0;
      try {
        round = decodeSecAgg(payload, { maxBytes: this.o.maxBytes }).round;
      } catch (e) {
        if (!(e instanceof SecAggError)) throw e;
      }
      if (round > cur.round) {
        this.early.set(from, { round, payload });
        return 'not-selected';
      }
      if (round < cur.round) return 'stale-version';
    }
    // A member whose message was refused has spoken: it is not waited for.
    cur.refused.add(from);
    this.count(`secagg-${r}`);
    return SECAGG_BENIGN.has(r) ? (r === 'late' ? 'stale-version' : r) : `secagg-${r}`;
  }

  private absorb(ex: HeadExchange, log: Logger): number {
    const n = absorbMessages(ex, log, 'secure aggregation message', (m) => this.take(m.payload, m.from));
    // Refusals found after a message was taken (keys that agree no secret, shares that do not decrypt).
    for (const { peer, reason } of this.current?.member.refusals() ?? []) {
      this.count(`secagg-${reason}`);
      log.warn(`dropped a secure aggregation message from ${peer}: ${reason}`);
      ex.reportBad?.(peer, `secagg-${reason}`);
    }
    return n;
  }

  /**
   * Wait (at most the round's deadline) until the members `from()` names
   * (others than this site) have delivered what `have()` lists. Each phase
   * waits only for members that delivered the phase before, so a member
   * that goes silent without its departure being seen (frozen, or cut off)
   * costs the round one deadline, in the phase it went silent in.
   */
  private async wait(
    ex: HeadExchange,
    round: number,
    phase: number,
    from: () => string[],
    have: () => string[],
    w: { deadlineMs: number; logger: Logger } & Pick<RoundWait, 'awaited'>,
  ): Promise<void> {
    this.absorb(ex, w.logger);
    const want = from().filter((m) => m !== this.selfId);
    if (want.length === 0 || w.deadlineMs <= 0) return;
    const t0 = performance.now();
    await awaitRound(ex, this.departed, {
      round: secAggVersion(round, phase),
      step: 4 * this.o.every,
      quorum: want.length,
      candidates: want.length,
      from: want,
      deadlineMs: w.deadlineMs,
      ...(w.awaited ? { awaited: w.awaited } : {}),
      delivered: () => new Set([...have(), ...this.current!.refused].filter((m) => want.includes(m))),
      absorb: () => this.absorb(ex, w.logger),
    });
    const got = have().filter((m) => want.includes(m)).length;
    w.logger.debug(`secure aggregation, round ${round} phase ${phase}: ${got} of ${want.length} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  }

  /** Phases 2 to 4 of `round` (after `begin`); the outcome waits for `mix`. Returns how many members' masked inputs were summed. */
  async run(ex: HeadExchange, round: number, w: { deadlineMs: number; logger: Logger } & Pick<RoundWait, 'awaited'>): Promise<number> {
    if (this.current?.round !== round) await this.begin(ex, round);
    const m = this.current!.member;
    const wait = (phase: number, from: () => string[], have: () => string[]) => this.wait(ex, round, phase, from, have, w);
    const t = m.group.threshold;
    const done = (r: SecAggResult) => {
      this.results.set(round, r);
      for (const k of this.results.keys()) if (k < round) this.results.delete(k);
      if (!r.ok) {
        this.count(`secagg-${r.reason}`);
        for (const f of r.faulty ?? []) ex.reportBad?.(f, 'secagg-equivocation');
        w.logger.warn(`secure aggregation of round ${round} refused, keeping this site's own body: ${r.detail}`);
      }
      return r.ok ? r.survivors.length - 1 : 0;
    };
    await wait(
      1,
      () => m.group.members,
      () => m.advertised(),
    );
    const shares = await m.shareKeys();
    if (!shares)
      return done({ ok: false, reason: 'too-few', detail: `${m.advertised().length} members of the group advertised keys, fewer than the threshold ${t}` });
    this.absorb(ex, w.logger);
    await ex.publish(shares, secAggVersion(round, 2));
    await wait(
      2,
      () => m.advertised(),
      () => m.sharers(),
    );
    const flat = new Float32Array(m.length);
    let at = 0;
    for (const v of this.vars()) {
      flat.set(v.dataSync() as Float32Array, at);
      at += v.size;
    }
    const masked = m.maskedInput(flat);
    if (!masked)
      return done({ ok: false, reason: 'too-few', detail: `${m.sharers().length} members of the group shared their keys, fewer than the threshold ${t}` });
    if (masked.clipped) this.count('secagg-clipped');
    await ex.publish(masked.message, secAggVersion(round, 3));
    await wait(
      3,
      () => m.sharers(),
      () => m.holders(),
    );
    await ex.publish(m.reveal()!, secAggVersion(round, 4));
    await wait(
      4,
      () => m.holders(),
      () => m.revealers(),
    );
    return done(await m.result());
  }

  /**
   * Replace the body by the group's mean of `round`, if the round completed;
   * returns the masked inputs summed besides the own one (none when refused).
   */
  mix(round: number): MaskedBody[] {
    const r = this.results.get(round);
    if (!r?.ok) return [];
    let at = 0;
    for (const v of this.vars()) {
      const part = r.mean.subarray(at, at + v.size);
      at += v.size;
      tf.tidy(() => v.assign(tf.tensor(part, v.shape)));
    }
    return [...r.digests].map(([peer, digest]) => ({ peer, version: round, digest }));
  }
}
