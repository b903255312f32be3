/**
 * `HeadExchange`: all that a serverless algorithm knows about the network.
 * A peer publishes its head (dFLMoE) or model (gossip), takes the messages
 * that arrived, and hears about members joining and leaving. The simulator
 * uses `MemoryHub`; a real peer uses the libp2p implementation in `@dflmoe/p2p`.
 */
import type { Logger } from './log.js';

/** A head as a transport delivers it: the encoded head and its authenticated sender. */
export interface HeadMessage {
  /** Sender as authenticated by the transport (not as the message claims). */
  from: string;
  /** The encoded head (or model, body) as it was sent. */
  payload: Uint8Array;
}

/** A member connected (`join`) or went away (`leave`). */
export interface MembershipEvent {
  /** 'leave'; | Whether the member connected or went away. */
  type: 'join' | 'leave';
  /** The member's id (its peer ID on libp2p). */
  peer: string;
}

/** What an exchange has moved so far, in bytes and messages, both ways. */
export interface ExchangeStats {
  /** Payload bytes sent so far, cumulative since the exchange was created. */
  bytesSent: number;
  /** Payload bytes received so far, cumulative since the exchange was created. */
  bytesReceived: number;
  /** Messages sent so far (cumulative); one message per recipient. */
  messagesSent: number;
  /** Messages received so far (cumulative). */
  messagesReceived: number;
}

/**
 * All a serverless algorithm knows about the network: publish the own head,
 * take in the members' heads, wait for them. `MemoryHub` gives in-memory ones;
 * `@dflmoe/p2p`'s `headExchange` a libp2p one.
 */
export interface HeadExchange {
  /** This peer's own id on the exchange. */
  readonly selfId: string;
  /** Send this peer's head (already encoded) to the other members. */
  publish(payload: Uint8Array, version: number): Promise<void>;
  /** Heads that arrived since the last call, oldest first. */
  drain(): HeadMessage[];
  /**
   * Resolve once at least `count` heads are waiting to be drained, or after
   * `timeoutMs`; resolves to the number waiting.
   */
  waitForHeads(count: number, timeoutMs: number): Promise<number>;
  /**
   * Optional: resolve once the heads that reachable members hold now have
   * been fetched (or after `timeoutMs`). A site calls it before its first
   * round, so that a late joiner starts with the newest heads.
   */
  settle?(timeoutMs: number): Promise<void>;
  /**
   * Optional, for a bounded mixture: from now on take in only these
   * members' messages, and only versions of at least `minVersion`; others
   * are neither requested nor delivered (`undefined`: every member's, as
   * before the first call). A member newly selected whose newest message
   * qualifies is pulled at once.
   */
  select?(peers: readonly string[] | undefined, minVersion?: number): void;
  /** Optional: members known to hold a message (announced or published), with its newest version. */
  announced?(): Map<string, number>;
  /** Optional: the learner found a head from `peer` unusable (a transport may disconnect repeat offenders). */
  reportBad?(peer: string, reason: string): void;
  /** Subscribe to membership changes; returns an unsubscribe function. */
  onMembership(listener: (e: MembershipEvent) => void): () => void;
  /** Current members other than this peer. */
  members(): string[];
  /** What the exchange has moved so far (cumulative bytes and messages). */
  stats(): ExchangeStats;
  /** Leave the network; publishing afterwards throws. */
  close(): Promise<void>;
}

/** Messages a `HeadInbox` with `every` keeps per sender. */
const EVERY_KEPT = 8;

/**
 * Heads waiting to be taken in, newest per sender, with waiters that wake
 * when enough have arrived. Shared by the exchange implementations.
 */
export class HeadInbox {
  private pending = new Map<string, HeadMessage>();
  /** With `every`: every message waiting, oldest first. */
  private queue?: HeadMessage[];
  private waiters = new Set<(force: boolean) => void>();

  /**
   * @param o `every`: keep every message (at most `EVERY_KEPT` per sender,
   * the oldest dropped beyond), not only the newest per sender, for a
   * protocol of several messages per round (secure aggregation's phases).
   */
  constructor(o: { every?: boolean } = {}) {
    if (o.every) this.queue = [];
  }

  /** Keep `m`, replacing an older message from the same sender (with `every`: after them). */
  put(m: HeadMessage): void {
    if (this.queue) {
      this.queue.push(m);
      const mine = this.queue.filter((x) => x.from === m.from);
      if (mine.length > EVERY_KEPT) this.queue.splice(this.queue.indexOf(mine[0]), 1);
    } else {
      this.pending.delete(m.from);
      this.pending.set(m.from, m);
    }
    this.wake();
  }

  /** The number of senders with a head waiting. */
  get size(): number {
    return this.queue ? new Set(this.queue.map((m) => m.from)).size : this.pending.size;
  }

  /** Take every waiting head (the newest per sender; with `every`, all of them, oldest first), leaving the inbox empty. */
  drain(): HeadMessage[] {
    if (this.queue) return this.queue.splice(0);
    const out = [...this.pending.values()];
    this.pending.clear();
    return out;
  }

  /** Let waiters re-check their condition; with `force`, release them all (on close). */
  wake(force = false): void {
    for (const w of [...this.waiters]) w(force);
  }

  /** Resolve once `count` senders have heads waiting, or after `timeoutMs` (the timer does not hold the process). */
  waitFor(count: number, timeoutMs: number): Promise<number> {
    if (this.size >= count) return Promise.resolve(this.size);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(this.size);
      };
      const check = (force: boolean) => {
        if (force || this.size >= count) done();
      };
      const timer = setTimeout(done, timeoutMs);
      timer.unref();
      this.waiters.add(check);
    });
  }
}

/**
 * In-process exchange for simulations. A published message is released to
 * the other members at once, or with `lockstep` once every member has
 * published that version (synchronous rounds, whatever order the sites run
 * in). A member receives a released message when it wants the sender (all
 * senders, unless it called `select`); bytes count on delivery, so a member
 * that pulls only k heads costs k heads.
 */
export class MemoryHub {
  private peers = new Map<string, MemoryExchange>();
  private held = new Map<number, Map<string, Uint8Array>>();
  /** Newest released message per sender. */
  private released = new Map<string, { version: number; payload: Uint8Array }>();

  constructor(private readonly o: { lockstep?: boolean } = {}) {}

  /** Add a member with this id and return its exchange; the others hear it join. Throws when the id has joined already. */
  join(id: string): MemoryExchange {
    if (this.peers.has(id)) throw new Error(`peer ${id} already joined`);
    const ex = new MemoryExchange(id, this);
    for (const p of this.peers.values()) p.emit({ type: 'join', peer: id });
    this.peers.set(id, ex);
    return ex;
  }

  /** Remove a member (its exchange was closed); the others hear it leave, and lockstep versions it held back are released. @internal */
  leave(id: string): void {
    if (!this.peers.delete(id)) return;
    this.released.delete(id);
    for (const p of this.peers.values()) p.emit({ type: 'leave', peer: id });
    for (const v of [...this.held.keys()]) this.release(v);
  }

  /** @internal Returns the number of members that may take the message. */
  deliver(from: string, payload: Uint8Array, version = 0): number {
    const recipients = [...this.peers.keys()].filter((id) => id !== from).length;
    if (!this.o.lockstep) {
      this.send(from, payload, version);
      return recipients;
    }
    const held = this.held.get(version) ?? new Map<string, Uint8Array>();
    held.set(from, payload);
    this.held.set(version, held);
    this.release(version);
    return recipients;
  }

  private release(version: number): void {
    const held = this.held.get(version)!;
    if ([...this.peers.keys()].some((id) => !held.has(id))) return;
    this.held.delete(version);
    for (const [from, payload] of held) this.send(from, payload, version);
  }

  private send(from: string, payload: Uint8Array, version: number): void {
    const old = this.released.get(from);
    if (!old || version >= old.version) this.released.set(from, { version, payload });
    for (const [id, p] of this.peers) if (id !== from) this.offer(p, from, { version, payload });
  }

  /**
   * @internal Hand `to` a message of `from` if it wants it: a `fresh` one
   * (being published) always, else the newest released one (`select`
   * pulling) when `to` does not hold that version yet.
   */
  offer(to: MemoryExchange, from: string, fresh?: { version: number; payload: Uint8Array }): void {
    const r = fresh ?? this.released.get(from);
    if (!r || !to.wants(from, r.version, fresh !== undefined)) return;
    to.receive({ from, payload: r.payload }, r.version);
    this.peers.get(from)?.countSent(r.payload.length);
  }

  /** @internal Senders with a released message, and its version. */
  releasedVersions(): Map<string, number> {
    return new Map([...this.released].map(([id, r]) => [id, r.version]));
  }

  /** The ids of every member now, this hub's own included. */
  memberIds(): string[] {
    return [...this.peers.keys()];
  }
}

/**
 * One member's `HeadExchange` on a `MemoryHub` (`hub.join(id)`): heads go to
 * the other members of the hub in the same process.
 */
export class MemoryExchange implements HeadExchange {
  private inbox = new HeadInbox();
  private listeners = new Set<(e: MembershipEvent) => void>();
  private s: ExchangeStats = { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0 };
  private closed = false;
  private wanted?: Set<string>;
  private minVersion = -Infinity;
  /** Newest version taken per sender. */
  private taken = new Map<string, number>();

  constructor(
    /** This member's id on the hub. */
    readonly selfId: string,
    private hub: MemoryHub,
  ) {}

  /** {@inheritDoc HeadExchange.publish} */
  async publish(payload: Uint8Array, version?: number): Promise<void> {
    if (this.closed) throw new Error('exchange is closed');
    this.hub.deliver(this.selfId, payload, version);
  }

  /** Whether this member takes `from`'s message of `version` now (selected, new enough, not taken yet unless `fresh`). @internal */
  wants(from: string, version: number, fresh: boolean): boolean {
    return !this.closed && (this.wanted?.has(from) ?? true) && version >= this.minVersion && (fresh || version > (this.taken.get(from) ?? -Infinity));
  }

  /** Put a delivered message in the inbox and count its bytes. @internal */
  receive(m: HeadMessage, version = 0): void {
    this.taken.set(m.from, version);
    this.inbox.put(m);
    this.s.bytesReceived += m.payload.length;
    this.s.messagesReceived++;
  }

  /** Count one message of `bytes` that this member's publish delivered to another. @internal */
  countSent(bytes: number): void {
    this.s.bytesSent += bytes;
    this.s.messagesSent++;
  }

  /** {@inheritDoc HeadExchange.select} */
  select(peers: readonly string[] | undefined, minVersion = -Infinity): void {
    this.wanted = peers ? new Set(peers) : undefined;
    this.minVersion = minVersion;
    for (const id of this.hub.memberIds()) if (id !== this.selfId) this.hub.offer(this, id);
  }

  /** {@inheritDoc HeadExchange.announced} */
  announced(): Map<string, number> {
    const m = this.hub.releasedVersions();
    m.delete(this.selfId);
    return m;
  }

  /** Tell this member's listeners of a membership change. @internal */
  emit(e: MembershipEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** {@inheritDoc HeadExchange.drain} */
  drain(): HeadMessage[] {
    return this.inbox.drain();
  }

  /** {@inheritDoc HeadExchange.waitForHeads} */
  waitForHeads(count: number, timeoutMs: number): Promise<number> {
    return this.inbox.waitFor(count, timeoutMs);
  }

  /** {@inheritDoc HeadExchange.onMembership} */
  onMembership(listener: (e: MembershipEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** {@inheritDoc HeadExchange.members} */
  members(): string[] {
    return this.hub.memberIds().filter((id) => id !== this.selfId);
  }

  /** {@inheritDoc HeadExchange.stats} */
  stats(): ExchangeStats {
    return { ...this.s };
  }

  /** {@inheritDoc HeadExchange.close} */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hub.leave(this.selfId);
  }
}

/**
 * Refusals that are no fault of the sender: an old version, a head the site
 * no longer selects (it arrived late), a body of another architecture (bodies
 * are combined within architecture groups).
 */
const BENIGN_REFUSALS: ReadonlySet<string> = new Set(['stale-version', 'not-selected', 'other-architecture']);

/**
 * Take in every waiting message with `take` (which validates it and returns
 * `added`, `replaced` or why it refused it). Refusals other than stale
 * versions and heads no longer selected are logged and reported to the transport. Returns the accepted count.
 */
export function absorbMessages(ex: HeadExchange, log: Logger, what: string, take: (m: HeadMessage) => string): number {
  let accepted = 0;
  for (const m of ex.drain()) {
    const r = take(m);
    if (r === 'added' || r === 'replaced') accepted++;
    else if (!BENIGN_REFUSALS.has(r)) {
      log.warn(`dropped a ${what} from ${m.from}: ${r}`);
      ex.reportBad?.(m.from, r);
    }
  }
  return accepted;
}

/**
 * `exchange` without the messages of `excluded` members (those left out of
 * the data agreement: another task, or data that does not fit): their heads
 * are dropped when drained, each sender logged once and counted in
 * `dropped`, and they are not among `members()` or `announced()`.
 */
export function withoutMembers<E extends HeadExchange>(
  exchange: E,
  excluded: ReadonlySet<string>,
  log: Logger,
  why = 'left out of the data agreement',
): E & { dropped: number } {
  let dropped = 0;
  const told = new Set<string>();
  const drain = () =>
    exchange.drain().filter((m) => {
      if (!excluded.has(m.from)) return true;
      dropped++;
      if (!told.has(m.from)) log.info(`not taking messages from ${m.from}: ${why}`);
      told.add(m.from);
      return false;
    });
  const members = () => exchange.members().filter((p) => !excluded.has(p));
  const announced = exchange.announced && (() => new Map([...exchange.announced!()].filter(([p]) => !excluded.has(p))));
  return new Proxy(exchange, {
    get(target, key) {
      if (key === 'drain') return drain;
      if (key === 'members') return members;
      if (key === 'announced') return announced;
      if (key === 'dropped') return dropped;
      const v = Reflect.get(target, key, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as E & { dropped: number };
}

/**
 * Members that disconnected and have not come back, as an exchange reports
 * them (watched from the first call of `of` on): a round does not wait for
 * messages they can no longer send.
 */
export class DepartedMembers {
  private readonly gone = new Set<string>();
  private watching?: HeadExchange;

  /** The departed members of `ex` (starts watching it on the first call). */
  of(ex: HeadExchange): ReadonlySet<string> {
    if (this.watching !== ex) {
      this.watching = ex;
      this.gone.clear();
      ex.onMembership((e) => (e.type === 'leave' ? this.gone.add(e.peer) : this.gone.delete(e.peer)));
    }
    return this.gone;
  }
}

/**
 * A member whose newest announced message is more than this many rounds
 * behind the round waited for is not waited for (see `awaitRound`).
 */
export const BEHIND_ROUNDS = 2;

export interface RoundWait {
  /**
   * The round waited for: a member whose newest message (`HeadExchange.announced`)
   * is more than `BEHIND_ROUNDS` rounds older is not waited for.
   */
  round?: number;
  /**
   * Versions that a member in step publishes per round waited for (default 1;
   * bodies shared every k rounds: k): far behind means more than
   * `BEHIND_ROUNDS` steps older.
   */
  step?: number;
  /** Messages of this round wanted. */
  quorum: number;
  /** Members that could send one (default: `quorum`; with `awaited`, those of them that `from` allows). */
  candidates: number;
  /** Only these members' messages are wanted (a bounded mixture's choice), or all. */
  from?: readonly string[];
  /**
   * The members this wait is for, when the site knows them (`dflmoe peer`:
   * the members it agreed on the data with; see `SiteNetwork.awaited`): only
   * those connected now (`HeadExchange.members`) are waited for, whenever
   * they left; a member outside the list is never waited for (its message is
   * taken in when it comes).
   */
  awaited?: readonly string[];
  deadlineMs: number;
  /** Members whose message of this round is in. */
  delivered(): ReadonlySet<string>;
  /** Messages of this round that were refused (they count: their senders have spoken). */
  refused?(): number;
  /** Take in what waits in the exchange; returns how many were accepted. */
  absorb(): number;
  /**
   * Say every few seconds (`waitNoticeMs`) whom the wait is still for, as
   * `<what> of round <n>: waiting for <names> (<s> s of <s> s left)` (`waitLeft`), until it ends.
   */
  notice?: { logger: Logger; what: string; name(peer: string): string };
}

/**
 * How often a wait of `deadlineMs` says whom it waits for: a quarter of
 * the deadline, between 1 s and 5 s (a 120 s wait says so at most 24 times).
 */
export function waitNoticeMs(deadlineMs: number): number {
  return Math.min(5000, Math.max(1000, Math.round(deadlineMs / 4)));
}

/** `(<left> s of <deadline> s left)`, for a wait's notices (tenths of a second below 10 s). */
export function waitLeft(leftMs: number, deadlineMs: number): string {
  const s = (ms: number) => (ms < 10000 ? String(Math.round(ms / 100) / 10) : String(Math.round(ms / 1000)));
  return `(${s(Math.max(0, leftMs))} s of ${s(deadlineMs)} s left)`;
}

/**
 * Wait (at most the deadline) until `quorum` messages of this round are in,
 * taking them in as they come. Members that left without sending theirs
 * (they finished, or crashed) are not waited for beyond what the quorum
 * allows, so the last sites of a run do not sit out the deadline for
 * messages that cannot come; a member that comes back counts again. With
 * `awaited`, that is every listed member not connected now (it may have
 * left before the wait began, or never come); without it, the members seen
 * leaving since the first wait (`DepartedMembers`). Nor are members far
 * behind (`w.round`): a site that restarted from an old checkpoint while the
 * others went on cannot send this round's message for many rounds, and
 * waiting out the deadline for it every round would hold the whole
 * consortium to the deadline; it counts again once it has caught up.
 * Returns how many messages were accepted.
 */
export async function awaitRound(ex: HeadExchange, departed: DepartedMembers, w: RoundWait): Promise<number> {
  const gone = departed.of(ex);
  const t0 = Date.now();
  const end = t0 + w.deadlineMs;
  const noticeMs = waitNoticeMs(w.deadlineMs);
  let noticed = t0;
  let fresh = 0;
  for (;;) {
    const delivered = w.delivered();
    const have = delivered.size + (w.refused?.() ?? 0);
    const owing = (p: string) => !delivered.has(p) && (!w.from || w.from.includes(p));
    const announced = ex.announced?.() ?? new Map<string, number>();
    const far = (p: string) => w.round !== undefined && (announced.get(p) ?? Infinity) < w.round - BEHIND_ROUNDS * (w.step ?? 1);
    const connected = new Set(ex.members());
    let target: number;
    let waitingFor: string[];
    if (w.awaited) {
      const wanted = w.awaited.filter((p) => !w.from || w.from.includes(p));
      waitingFor = wanted.filter((p) => owing(p) && connected.has(p) && !far(p));
      const unavailable = wanted.filter((p) => owing(p) && !waitingFor.includes(p)).length;
      target = Math.min(w.quorum, wanted.length - unavailable);
    } else {
      const lost = [...gone].filter(owing).length;
      const behind = [...announced.keys()].filter((p) => far(p) && owing(p) && !gone.has(p)).length;
      target = Math.min(w.quorum, w.candidates - lost - behind);
      waitingFor = [...connected].filter((p) => owing(p) && !gone.has(p) && !far(p));
    }
    const now = Date.now();
    const left = end - now;
    if (have >= target || left <= 0) return fresh;
    if (w.notice && now - noticed >= noticeMs) {
      noticed = now;
      const who = waitingFor.length > 0 ? waitingFor.map((p) => w.notice!.name(p)).join(', ') : `${target - have} more`;
      w.notice.logger.info(`${w.notice.what} of round ${w.round ?? '?'}: waiting for ${who} ${waitLeft(left, w.deadlineMs)}`);
    }
    await ex.waitForHeads(target - have, Math.min(left, 1000));
    fresh += w.absorb();
  }
}
