/**
 * `HeadExchange` over libp2p, for heads (dFLMoE) and, on their own protocol
 * and topic, whole models (gossip).
 *
 * - When a round ends, a peer keeps its encoded head and announces
 *   `{peer, version, digest, size}` on gossipsub (signed; never the head).
 * - A peer that hears of a newer head than it holds opens
 *   `/dflmoe/head/1.0.0` to the announcer and pulls it: a length-prefixed
 *   `HeadRequest`, answered by a `HeadResponse` and the head bytes, streamed
 *   with it-pipe under a size limit, then checked against the digest.
 * - On every new connection a peer asks the other side for a head newer
 *   than the one it holds, so a late joiner (or a restarted one) catches up
 *   without waiting for gossip, and a reconnect moves no head twice.
 *
 * Everything received is untrusted: unknown senders, bad protobufs, size
 * over the limit, digest mismatch and a version older than the one asked
 * for are dropped, logged once per (peer, reason), counted, and are strikes
 * against the sender (`StrikeBook`: strikes decay, enough live ones block
 * the member for a while). A head we already hold is not an offence: it is
 * counted as `duplicate` and ignored.
 */
import { createHash } from 'node:crypto';
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import type { Message } from '@libp2p/gossipsub';
import { peerIdFromString } from '@libp2p/peer-id';
import { readFrames, writeFrames, type FrameBytes } from './frames.js';
import {
  HeadInbox,
  throwIfInterrupted,
  unlessInterrupted,
  type ExchangeStats,
  type HeadExchange,
  type HeadMessage,
  type Logger,
  type MembershipEvent,
} from '@dflmoe/core';
import { Announce, HeadRequest, HeadResponse } from './proto/messages.js';
import { dialMembers, type ExchangeNode } from './node.js';
import { StrikeBook } from './strikes.js';
import { HeadSink, PartialHeads, RESUME_CHUNK, chunkFrames, frameGuard, servePlan } from './resume.js';

export const HEAD_PROTOCOL = '/dflmoe/head/1.0.0';
export const ANNOUNCE_TOPIC = '/dflmoe/announce/1';
/** Whole models (gossip) travel the same way on their own protocol and topic. */
export const MODEL_PROTOCOL = '/dflmoe/model/1.0.0';
export const MODEL_ANNOUNCE_TOPIC = '/dflmoe/announce-model/1';
/** Bodies (dFLMoE with shareBody, fedrep-p2p), beside the heads, on theirs. */
export const BODY_PROTOCOL = '/dflmoe/body/1.0.0';
export const BODY_ANNOUNCE_TOPIC = '/dflmoe/announce-body/1';
const WIRE_FORMAT = 1;

/**
 * A multi-task site's head channel of task `name`: its own protocol and
 * announcement topic (the one-task ones with the task appended), so that a
 * task's heads travel only among the sites that learn it.
 */
export function taskChannel(name: string): { protocol: string; topic: string; task: string } {
  const tail = `/task/${encodeURIComponent(name)}`;
  return { protocol: `${HEAD_PROTOCOL}${tail}`, topic: `${ANNOUNCE_TOPIC}${tail}`, task: name };
}

/**
 * dFLMoE's cross-task channel (`crossTask`): each multi-task site's bundle
 * of all its tasks' heads, on a protocol and topic of its own, among the
 * members that agreed (its messages name no task: the bundle names them).
 */
export const CROSS_TASK_PROTOCOL = `${HEAD_PROTOCOL}/cross-task`;
export const CROSS_TASK_TOPIC = `${ANNOUNCE_TOPIC}/cross-task`;
const MAX_CONTROL = 4096;

/** A consortium member: its peer ID, the addresses to dial it at (when known) and its name. */
export interface Member {
  /** The member's libp2p peer ID. */
  peerId: string;
  /** Multiaddrs to dial it at; empty when it is to be found otherwise (it dials us, discovery). */
  addrs: string[];
  /** The member's name for logs and the live view. */
  name?: string;
}

/** What `headExchange` and `bodyExchange` take: the members, limits, protocol and topic, timing, strikes. */
export interface Libp2pExchangeOptions {
  /** The consortium: only these peers' messages are taken in. */
  members: Member[];
  /** Largest message accepted (heads, or models for gossip). */
  maxHeadBytes: number;
  /** Stream protocol and announcement topic (default: heads). */
  protocol?: string;
  /** Gossipsub topic announcements go on (default: the heads' topic). */
  topic?: string;
  /** Where drops, strikes and transfers are logged. */
  logger: Logger;
  /** Re-announce our head and redial missing members this often (default 2000 ms). */
  heartbeatMs?: number;
  /** Give up on a head transfer after this long (default 60 s). */
  transferTimeoutMs?: number;
  /** Bad messages from one member (within `strikeDecayMs`) before it is disconnected (default 5)... */
  maxStrikes?: number;
  /** ...and refused for this long (default 60 s). */
  blockMs?: number;
  /** A bad message counts against its sender for this long (default 30 s). */
  strikeDecayMs?: number;
  /** The site is stopping (SIGINT/SIGTERM): waits for heads end with `Interrupted`. */
  signal?: AbortSignal;
  /**
   * A multi-task site's channel (`taskChannel`): the task whose heads it
   * carries. Announcements, requests and responses name it, and any that
   * name another task (or none) are dropped as `other-task`.
   */
  task?: string;
  /**
   * Deliver every version a member publishes, in order, not only its
   * newest: for a protocol of several messages per round (secure
   * aggregation's four phases on the body channel), where a member that
   * moved on to its next message must still serve the one before. The
   * exchange keeps its last `EVERY_VERSION_KEPT` messages and answers a
   * request with the oldest at or above the version asked for; a puller
   * asks for the version after the newest it holds (or the selection's
   * oldest), and again after each transfer, until it has caught up.
   */
  everyVersion?: boolean;
  /**
   * Count as members (`members()`: whom rounds wait for and heartbeats poll)
   * only those that serve this exchange's protocol, as libp2p's identify
   * reports it: `protocolsOf` gives a member's protocols from the peer store
   * (empty while it is not identified; it counts then), and `peer:identify`
   * events update them. `onNotServing` is told once when a member is found
   * not to serve it (again only after it served it in between).
   */
  servedOnly?: { protocolsOf(peer: string): Promise<readonly string[]>; onNotServing?(peer: string): void };
}

/** Messages an exchange with `everyVersion` keeps to serve. */
export const EVERY_VERSION_KEPT = 8;

/** Why a received announcement or head was dropped (counted per reason; most count as a strike against the sender). */
export type DropReason =
  | 'blocked'
  | 'bad-head'
  | 'not-member'
  | 'bad-announce'
  | 'spoofed-announce'
  | 'too-large'
  | 'bad-response'
  | 'digest-mismatch'
  | 'transfer-failed'
  | 'old-version'
  | 'duplicate'
  | 'not-selected'
  | 'other-task';

/** Counted, but no offence: transfers cut by a restart, strangers (the gater refuses them), heads we already hold. */
const NO_STRIKE: ReadonlySet<DropReason> = new Set<DropReason>(['transfer-failed', 'not-member', 'duplicate']);

const sha256 = (b: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(createHash('sha256').update(b).digest());
const equal = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * Decode and check a gossip announcement signed by `from`: a valid
 * `Announce`, or the reason to drop it. Never throws.
 */
export function checkAnnounce(data: Uint8Array, from: string, maxHeadBytes: number): Announce | { reason: DropReason; detail: string } {
  let a: Announce;
  try {
    a = Announce.decode(data);
  } catch (e) {
    return { reason: 'bad-announce', detail: (e as Error).message };
  }
  if (a.format !== WIRE_FORMAT) return { reason: 'bad-announce', detail: `format ${a.format}` };
  if (a.digest.length !== 32) return { reason: 'bad-announce', detail: 'digest is not sha-256' };
  if (a.peer !== from) return { reason: 'spoofed-announce', detail: `claims to be ${a.peer.slice(0, 80)}` };
  if (a.size === 0n || a.size > BigInt(maxHeadBytes)) return { reason: 'too-large', detail: `${a.size} bytes` };
  return a;
}

/** `task "x"`, or `no task` (a one-task channel's messages name none). */
function taskLabel(task: string | undefined): string {
  return task === undefined ? 'no task' : `task "${task.slice(0, 80)}"`;
}

/** A timer that does not keep the process alive. */
function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

export class Libp2pHeadExchange implements HeadExchange {
  readonly selfId: string;
  private memberIds: Set<string>;
  private inbox: HeadInbox;
  private latest?: { version: bigint; bytes: Uint8Array; digest: Uint8Array<ArrayBuffer> };
  /** With `everyVersion`: the last messages published, oldest first (the newest is `latest`). */
  private history: { version: bigint; bytes: Uint8Array; digest: Uint8Array<ArrayBuffer> }[] = [];
  /** Highest version per peer that we hold (set when a transfer of it succeeds). */
  private known = new Map<string, bigint>();
  private inflight = new Map<string, Promise<void>>();
  private listeners = new Set<(e: MembershipEvent) => void>();
  private logged = new Set<string>();
  private timer?: NodeJS.Timeout;
  private firstDial?: Promise<unknown>;
  /** Members whose newest head we asked for at least once since connecting. */
  private asked = new Set<string>();
  /** Bounded mixture (`select`): the members whose heads we pull, and the oldest version we want; undefined: all. */
  private wanted?: Set<string>;
  private wantedFrom = 0n;
  /** Newest valid announcement per member. */
  private announcements = new Map<string, { version: bigint; digest: Uint8Array }>();
  private closed = false;
  readonly dropped: Partial<Record<DropReason, number>> = {};
  private s: ExchangeStats = { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0 };
  /** Seconds spent moving head bytes (both directions), for network-vs-training figures. */
  transferSeconds = 0;
  /** Transfers broken off mid-head resume from the bytes that arrived (see resume.ts). */
  readonly partials: PartialHeads;
  /** Digests of the last few versions delivered per peer, and the deliveries since `takeReceived` (audit trail). */
  private digests = new Map<string, { version: number; digest: string }[]>();
  private recent: { peer: string; version: number; digest: string }[] = [];

  private readonly protocol: string;
  private readonly topic: string;
  /** `servedOnly`: whether each member identified serves the protocol; members looked up now; members connected before they were identified. */
  private serving = new Map<string, boolean>();
  private lookingUp = new Set<string>();
  private unpulled = new Set<string>();

  constructor(
    private node: ExchangeNode,
    private o: Libp2pExchangeOptions,
  ) {
    this.selfId = node.peerId.toString();
    this.protocol = o.protocol ?? HEAD_PROTOCOL;
    this.topic = o.topic ?? ANNOUNCE_TOPIC;
    this.memberIds = new Set(o.members.map((m) => m.peerId).filter((id) => id !== this.selfId));
    this.partials = new PartialHeads(o.maxHeadBytes);
    this.inbox = new HeadInbox({ every: o.everyVersion === true });
    this.strikes = new StrikeBook({ maxStrikes: o.maxStrikes, blockMs: o.blockMs, decayMs: o.strikeDecayMs });
  }

  /** Register the protocol handler and gossip subscription; call before `node.start()`. `replace`: in place of a handler registered before. */
  async register(o: { replace?: boolean } = {}): Promise<void> {
    await this.node.handle(this.protocol, (stream, connection) => this.serve(stream, connection), {
      maxInboundStreams: 64,
      ...(o.replace ? { force: true as const } : {}),
    });
    this.node.services.pubsub.addEventListener('message', (evt) => this.onGossip(evt.detail));
    this.node.addEventListener('peer:connect', (evt) => this.onConnect(evt.detail));
    if (this.o.servedOnly) this.node.addEventListener('peer:identify', (evt) => this.noteProtocols(evt.detail.peerId.toString(), evt.detail.protocols));
    this.node.addEventListener('peer:disconnect', (evt) => {
      const id = evt.detail.toString();
      this.asked.delete(id);
      this.unpulled.delete(id);
      if (this.memberIds.has(id)) this.emit({ type: 'leave', peer: id });
    });
  }

  /** After `node.start()`: subscribe, dial members, start the heartbeat (re-announce, redial). */
  start(): void {
    this.node.services.pubsub.subscribe(this.topic);
    const hb = this.o.heartbeatMs ?? 2000;
    // Re-announcing costs every other member a signature check: in a large consortium, less often
    // (every heartbeat up to 8 members, then 250 ms per member: 16 s with 64).
    const reannounceMs = Math.max(hb, 250 * this.memberIds.size);
    let announcedAt = 0;
    const beat = () => {
      if (this.closed) return undefined;
      const now = Date.now();
      if (now - announcedAt >= reannounceMs - hb / 2) {
        announcedAt = now;
        void this.announce().catch(() => {});
      }
      // A connected member not heard from for five re-announcements (gossip lost in reconnect
      // churn) is asked directly: a pull answers "nothing newer" cheaply.
      for (const id of this.members()) {
        const heard = this.lastHeard.get(id);
        if (heard === undefined) this.lastHeard.set(id, now);
        else if (now - heard > 5 * reannounceMs) {
          this.lastHeard.set(id, now);
          if (this.wanted && !this.wanted.has(id)) continue;
          this.polls++;
          const next = (this.known.get(id) ?? -1n) + 1n;
          this.fetch(id, next > this.wantedFrom ? next : this.wantedFrom);
        }
      }
      return dialMembers(this.node, this.o.members).catch(() => 0);
    };
    this.firstDial = beat();
    this.timer = setInterval(beat, hb);
    this.timer.unref();
  }

  private readonly strikes: StrikeBook;
  /** When each member's gossip was last heard (or it was last polled). */
  private readonly lastHeard = new Map<string, number>();
  /** Pulls made because a connected member's gossip went silent. */
  polls = 0;

  /** Whether `peer` is refused for now because it kept sending bad data. */
  isBlocked(peer: string): boolean {
    return this.strikes.isBlocked(peer);
  }

  /** Strikes given to `peer` since the exchange started (the live view's count). */
  strikesOf(peer: string): number {
    return this.strikes.given(peer);
  }

  private strike(peer: string): void {
    if (!this.memberIds.has(peer) || !this.strikes.strike(peer)) return;
    this.dropped['blocked'] = (this.dropped['blocked'] ?? 0) + 1;
    this.o.logger.warn(`member ${peer} keeps sending bad data: disconnected and refused for ${Math.round(this.strikes.blockMs / 1000)} s`);
    void this.node.hangUp(peerIdFromString(peer)).catch(() => {});
  }

  reportBad(peer: string, reason: string): void {
    this.drop(peer, 'bad-head', reason);
  }

  private drop(peer: string, reason: DropReason, detail = ''): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    if (!NO_STRIKE.has(reason)) this.strike(peer);
    const key = `${peer}:${reason}`;
    if (!this.logged.has(key)) {
      this.logged.add(key);
      this.o.logger.warn(`dropped input from ${peer}: ${reason}${detail ? ` (${detail})` : ''}`);
    }
  }

  private emit(e: MembershipEvent): void {
    for (const l of this.listeners) l(e);
  }

  private onConnect(peer: PeerId): void {
    const id = peer.toString();
    if (!this.memberIds.has(id)) return;
    // A member refused for now that connects anyway (a host's node without our gater): hang up.
    if (this.isBlocked(id)) {
      void this.node.hangUp(peer).catch(() => {});
      return;
    }
    this.emit({ type: 'join', peer: id });
    // Catch up with whatever the peer has that is newer than what we hold.
    this.asked.add(id);
    if (this.wanted && !this.wanted.has(id)) return;
    // servedOnly: pulled once identify says it serves the protocol (a pull from one that does not would fail).
    if (this.o.servedOnly && this.serving.get(id) !== true) {
      this.unpulled.add(id);
      return;
    }
    const next = (this.known.get(id) ?? -1n) + 1n;
    this.fetch(id, next > this.wantedFrom ? next : this.wantedFrom);
  }

  async settle(timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    const left = () => Math.max(0, end - Date.now());
    const signal = this.o.signal;
    await unlessInterrupted(Promise.race([this.firstDial, delay(left())]), signal);
    while (!this.closed && Date.now() < end) {
      throwIfInterrupted(signal);
      const connected = this.members();
      if (connected.every((m) => this.asked.has(m)) && this.inflight.size === 0) return;
      await Promise.race([Promise.allSettled([...this.inflight.values()]), delay(Math.min(50, left()))]);
    }
  }

  private onGossip(msg: Message): void {
    if (msg.topic !== this.topic) return;
    if (msg.type !== 'signed') return this.drop('unknown', 'bad-announce', 'unsigned');
    const from = msg.from.toString();
    if (!this.memberIds.has(from)) return this.drop(from, 'not-member');
    if (this.isBlocked(from)) return;
    const a = checkAnnounce(msg.data, from, this.o.maxHeadBytes);
    if ('reason' in a) return this.drop(from, a.reason, a.detail);
    if (a.task !== this.o.task) return this.drop(from, 'other-task', `announces a head of ${taskLabel(a.task)} on the channel of ${taskLabel(this.o.task)}`);
    this.lastHeard.set(from, Date.now());
    const prev = this.announcements.get(from);
    if (!prev || a.version >= prev.version) this.announcements.set(from, { version: a.version, digest: a.digest });
    if (a.version <= (this.known.get(from) ?? -1n)) return;
    if (this.wanted && (!this.wanted.has(from) || a.version < this.wantedFrom)) return;
    if (this.o.everyVersion) return this.pullNext(from);
    this.fetch(from, a.version, a.digest);
  }

  /** `everyVersion`: the version to ask `peer` for (the one after the newest held, or the selection's oldest) and its digest when announced. */
  private nextOf(peer: string, announced: { version: bigint; digest: Uint8Array }): { minVersion: bigint; digest?: Uint8Array } {
    const next = (this.known.get(peer) ?? -1n) + 1n;
    const minVersion = next > this.wantedFrom ? next : this.wantedFrom;
    return minVersion === announced.version ? { minVersion, digest: announced.digest } : { minVersion };
  }

  /** `everyVersion`: after a transfer that brought a new message, pull the next one if `peer` announced a newer one. */
  private pullNext(peer: string): void {
    const a = this.announcements.get(peer);
    if (!a || a.version <= (this.known.get(peer) ?? -1n)) return;
    if (this.wanted && (!this.wanted.has(peer) || a.version < this.wantedFrom)) return;
    const n = this.nextOf(peer, a);
    this.fetch(peer, n.minVersion, n.digest);
  }

  /**
   * Bounded mixture: from now on pull only these members' heads, of at
   * least `minVersion`; a newly wanted member whose announced head
   * qualifies is pulled at once. `undefined`: every member's (the default).
   */
  select(peers: readonly string[] | undefined, minVersion = 0): void {
    this.wanted = peers ? new Set(peers.filter((p) => this.memberIds.has(p))) : undefined;
    this.wantedFrom = BigInt(Math.max(0, Math.floor(minVersion)));
    for (const [peer, a] of this.announcements) {
      if (this.wanted && !this.wanted.has(peer)) continue;
      if (a.version >= this.wantedFrom && a.version > (this.known.get(peer) ?? -1n)) {
        if (this.o.everyVersion) this.pullNext(peer);
        else this.fetch(peer, a.version, a.digest);
      }
    }
  }

  /** Members that announced a head, with the newest version announced. */
  announced(): Map<string, number> {
    return new Map([...this.announcements].filter(([p]) => !this.isBlocked(p)).map(([p, a]) => [p, Number(a.version)]));
  }

  /** Pull `peer`'s newest head if it is at least `minVersion` (one transfer per peer at a time). */
  private fetch(peer: string, minVersion: bigint, digest?: Uint8Array): void {
    if (this.closed || this.inflight.has(peer) || this.isBlocked(peer)) return;
    const had = this.known.get(peer) ?? -1n;
    const p = this.transfer(peer, minVersion, digest)
      .catch((e) => this.drop(peer, 'transfer-failed', (e as Error).message))
      .finally(() => {
        this.inflight.delete(peer);
        // Caught up one message: the next, if there is one (a transfer that brought nothing waits for the next announcement).
        if (this.o.everyVersion && (this.known.get(peer) ?? -1n) > had) this.pullNext(peer);
      });
    this.inflight.set(peer, p);
  }

  private async transfer(peer: string, minVersion: bigint, digest?: Uint8Array): Promise<void> {
    const signal = AbortSignal.timeout(this.o.transferTimeoutMs ?? 60000);
    const t0 = performance.now();
    const stream = await this.node.dialProtocol(peerIdFromString(peer), this.protocol, { signal });
    stream.maxReadBufferLength = this.o.maxHeadBytes + MAX_CONTROL;
    // Ask for the head in frames (resumable), from where a broken-off transfer of the same head stopped.
    const frames: Uint8Array[] = [];
    let failure: Error | undefined;
    // Hash while the frames stream in (a head sent from its start), rather than in a pass over the assembled head.
    const guard = frameGuard(this.o.maxHeadBytes);
    let hasher: ReturnType<typeof createHash> | undefined;
    // A chunked head goes straight into its buffer, piece by piece, as the stream delivers it.
    let sink: HeadSink | undefined;
    let refused: { reason: 'bad-response' | 'too-large'; detail: string } | undefined;
    const onFrame = (f: FrameBytes, i: number): boolean => {
      guard(f, i);
      if (i === 0) {
        let h: HeadResponse | undefined;
        try {
          h = HeadResponse.decode(f.subarray());
        } catch {
          return false; // reported below
        }
        if (h.available && !h.offset) hasher = createHash('sha256');
        if (h.available && h.chunkSize) {
          const o = this.partials.open(peer, h);
          if ('reason' in o) {
            refused = o;
            throw new Error(o.detail);
          }
          sink = o;
        }
        return false;
      }
      if (!sink) {
        if (hasher) for (const piece of f) hasher.update(piece);
        return false;
      }
      for (const piece of f) {
        sink.write(piece);
        hasher?.update(piece);
      }
      return true;
    };
    try {
      await Promise.all([
        writeFrames(stream, [HeadRequest.encode({ format: WIRE_FORMAT, minVersion, ...this.partials.request(peer, digest), ...this.taskField() })]),
        readFrames(stream, 2 + Math.ceil(this.o.maxHeadBytes / RESUME_CHUNK), this.o.maxHeadBytes, signal, frames, onFrame),
      ]);
    } catch (e) {
      failure = e as Error;
    }
    if (refused) {
      this.partials.forget(peer);
      return this.drop(peer, refused.reason, refused.detail);
    }
    if (frames.length === 0) throw failure ?? new Error('no response');
    let res: HeadResponse;
    try {
      res = HeadResponse.decode(frames[0]);
    } catch (e) {
      return this.drop(peer, 'bad-response', (e as Error).message);
    }
    if (!res.available) return; // nothing yet
    if (res.task !== this.o.task) return this.drop(peer, 'other-task', `sent a head of ${taskLabel(res.task)} on the channel of ${taskLabel(this.o.task)}`);
    let body: Uint8Array | undefined;
    // Chunked: assembled into a buffer of its own. One frame: a view into the stream's buffers, copied once accepted.
    let owned = false;
    if (res.chunkSize) {
      const a = sink ? sink.finish() : this.partials.assemble(peer, res, []);
      if ('reason' in a) {
        this.partials.forget(peer);
        return this.drop(peer, a.reason, a.detail);
      }
      if ('incomplete' in a) throw failure ?? new Error(`head cut short at ${a.incomplete} of ${res.size} bytes`);
      body = a.bytes;
      owned = true;
    } else {
      if (failure) throw failure;
      body = frames[1];
    }
    if (!body || BigInt(body.length) !== res.size) return this.drop(peer, 'bad-response', 'size differs from header');
    // The streamed hash covers exactly the body when the head came whole from offset 0; a resumed head is hashed whole.
    const d = hasher && !res.offset ? new Uint8Array(hasher.digest()) : sha256(body);
    this.deliver(peer, res, { body, owned }, d, minVersion, digest, t0);
  }

  /**
   * A head that arrived whole: check its digest (against the header, and
   * the one announced when given) and version, count it, and hand it to the
   * learner unless the selection no longer wants it (a head that is a view
   * into the stream's buffers, not `owned`, is copied then).
   */
  private deliver(
    peer: string,
    res: HeadResponse,
    head: { body: Uint8Array; owned: boolean },
    d: Uint8Array,
    minVersion: bigint,
    digest: Uint8Array | undefined,
    t0: number,
  ): void {
    const { body, owned } = head;
    if (!equal(d, res.digest) || (digest && res.version === minVersion && !equal(d, digest))) {
      return this.drop(peer, 'digest-mismatch');
    }
    // Older than asked for: the peer announced or promised what it did not send.
    if (res.version < minVersion) return this.drop(peer, 'old-version', `${res.version} < ${minVersion}`);
    // Raced with another transfer of the same head: nothing wrong with it.
    if (res.version <= (this.known.get(peer) ?? -1n)) return this.drop(peer, 'duplicate');
    this.known.set(peer, res.version);
    const prev = this.announcements.get(peer);
    if (!prev || res.version >= prev.version) this.announcements.set(peer, { version: res.version, digest: res.digest });
    this.transferSeconds += (performance.now() - t0) / 1000;
    this.s.bytesReceived += body.length;
    this.s.messagesReceived++;
    // Selection changed while it was on its way: counted, not handed to the learner (no fault of the sender).
    if (this.wanted && !this.wanted.has(peer)) {
      this.dropped['not-selected'] = (this.dropped['not-selected'] ?? 0) + 1;
      return;
    }
    this.inbox.put({ from: peer, payload: owned ? body : body.slice() });
    const got = { version: Number(res.version), digest: Buffer.from(d).toString('hex') };
    this.digests.set(peer, [...(this.digests.get(peer) ?? []).slice(-3), got]);
    if (this.recent.length < 4096) this.recent.push({ peer, ...got });
  }

  /** SHA-256 (hex) of `peer`'s head `version` as it arrived, if it was among the last few. */
  receivedDigest(peer: string, version: number): string | undefined {
    return this.digests.get(peer)?.find((x) => x.version === version)?.digest;
  }

  /** What arrived since the last call: peer, version and SHA-256 (hex) of each message. */
  takeReceived(): { peer: string; version: number; digest: string }[] {
    const out = this.recent;
    this.recent = [];
    return out;
  }

  /** The version and SHA-256 (hex) of what this site published last. */
  published(): { version: number; digest: string } | undefined {
    return this.latest && { version: Number(this.latest.version), digest: Buffer.from(this.latest.digest).toString('hex') };
  }

  /** Answer a head request from a member. */
  private async serve(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    try {
      if (!this.memberIds.has(from)) {
        this.drop(from, 'not-member');
        stream.abort(new Error('not a member'));
        return;
      }
      // Refused for now (too many strikes); on a host's node without our gater, the connection itself may still be up.
      if (this.isBlocked(from)) {
        stream.abort(new Error('blocked'));
        return;
      }
      const t0 = performance.now();
      const [req] = await readFrames(stream, 1, MAX_CONTROL, AbortSignal.timeout(10000));
      if (req === undefined) {
        // The connection closed (a reconnect, the asker's own timeout) before the request came: not an offence.
        stream.abort(new Error('no request'));
        return;
      }
      let minVersion = 0n;
      let r: HeadRequest;
      try {
        r = HeadRequest.decode(req);
        if (r.format !== WIRE_FORMAT) throw new Error(`format ${r.format}`);
        minVersion = r.minVersion;
        if (r.task !== this.o.task) {
          this.drop(from, 'other-task', `asked for a head of ${taskLabel(r.task)} on the channel of ${taskLabel(this.o.task)}`);
          stream.abort(new Error('another task'));
          return;
        }
      } catch (e) {
        this.drop(from, 'bad-response', `bad request: ${(e as Error).message}`);
        stream.abort(new Error('bad request'));
        return;
      }
      // With everyVersion: the oldest kept at or above what was asked for (the newest otherwise).
      const h = this.o.everyVersion ? this.history.find((x) => x.version >= minVersion) : this.latest;
      if (!h || h.version < minVersion) {
        await writeFrames(stream, [HeadResponse.encode({ available: false, version: 0n, size: 0n, digest: new Uint8Array() })]);
        return;
      }
      // Resumable: in frames, from where the requester's broken-off transfer of this same head stopped.
      const plan = servePlan(r, h);
      const head = HeadResponse.encode({
        available: true,
        version: h.version,
        size: BigInt(h.bytes.length),
        digest: h.digest,
        ...(plan.chunkSize ? { chunkSize: plan.chunkSize, offset: BigInt(plan.offset) } : {}),
        ...this.taskField(),
      });
      await writeFrames(stream, [head, ...(plan.chunkSize ? chunkFrames(h.bytes, plan.offset, plan.chunkSize) : [h.bytes])]);
      this.s.bytesSent += h.bytes.length - plan.offset;
      this.s.messagesSent++;
      this.transferSeconds += (performance.now() - t0) / 1000;
    } catch (e) {
      this.o.logger.debug(`serving a head to ${from} failed: ${(e as Error).message}`);
      stream.abort(e as Error);
    }
  }

  private async announce(): Promise<void> {
    const h = this.latest;
    if (!h || this.closed) return;
    const data = Announce.encode({
      format: WIRE_FORMAT,
      peer: this.selfId,
      version: h.version,
      digest: h.digest,
      size: BigInt(h.bytes.length),
      ...this.taskField(),
    });
    await this.node.services.pubsub.publish(this.topic, data);
  }

  /** The `task` field of this channel's messages (none on a one-task channel: its bytes stay as they were). */
  private taskField(): { task?: string } {
    return this.o.task !== undefined ? { task: this.o.task } : {};
  }

  /**
   * Count the members connected now as greeted (joined, and asked): for an
   * exchange started on a node whose connections are up already (a
   * multi-task site's task channels, opened after the data agreement, when
   * a member may not have opened its own yet). Their heads come as they
   * announce them (every heartbeat).
   */
  greetConnected(): void {
    for (const id of this.members()) {
      if (this.isBlocked(id) || this.asked.has(id)) continue;
      this.emit({ type: 'join', peer: id });
      this.asked.add(id);
    }
  }

  async publish(payload: Uint8Array, version: number): Promise<void> {
    if (payload.length > this.o.maxHeadBytes) throw new Error(`own head of ${payload.length} bytes exceeds limits.maxHeadBytes`);
    this.latest = { version: BigInt(version), bytes: payload, digest: sha256(payload) };
    if (this.o.everyVersion) {
      // Versions only go forward: a message republished at a version not above the last replaces those at or above it.
      this.history = [...this.history.filter((x) => x.version < this.latest!.version), this.latest].slice(-EVERY_VERSION_KEPT);
    }
    await this.announce().catch((e) => this.o.logger.debug(`announce failed: ${(e as Error).message}`));
  }

  drain(): HeadMessage[] {
    return this.inbox.drain();
  }

  waitForHeads(count: number, timeoutMs: number): Promise<number> {
    return this.closed ? Promise.resolve(this.inbox.size) : unlessInterrupted(this.inbox.waitFor(count, timeoutMs), this.o.signal);
  }

  onMembership(listener: (e: MembershipEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  members(): string[] {
    const connected = [...new Set(this.node.getConnections().map((c) => c.remotePeer.toString()))].filter((id) => this.memberIds.has(id));
    const served = this.o.servedOnly;
    if (!served) return connected;
    for (const id of connected) {
      if (this.serving.has(id) || this.lookingUp.has(id)) continue;
      this.lookingUp.add(id);
      void served
        .protocolsOf(id)
        .then((p) => this.noteProtocols(id, p))
        .catch(() => {})
        .finally(() => this.lookingUp.delete(id));
    }
    return connected.filter((id) => this.serving.get(id) !== false);
  }

  /** `servedOnly`: what identify says `peer` serves (nothing yet: not identified, unknown). */
  private noteProtocols(peer: string, protocols: readonly string[]): void {
    if (!this.memberIds.has(peer) || protocols.length === 0) return;
    const serves = protocols.includes(this.protocol);
    const before = this.serving.get(peer);
    this.serving.set(peer, serves);
    if (!serves && before !== false) this.o.servedOnly?.onNotServing?.(peer);
    if (serves && this.unpulled.delete(peer) && !this.closed) {
      const next = (this.known.get(peer) ?? -1n) + 1n;
      this.fetch(peer, next > this.wantedFrom ? next : this.wantedFrom);
    }
  }

  stats(): ExchangeStats {
    return { ...this.s };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.inbox.wake(true);
    // Transfers end at their own timeout; do not let one that a peer stalls hold the shutdown (node.stop aborts it).
    await Promise.race([Promise.allSettled([...this.inflight.values()]), delay(2000)]);
  }
}
