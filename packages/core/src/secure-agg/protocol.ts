/**
 * One member's side of one round of secure aggregation (Bonawitz et al.,
 * CCS 2017), among peers: every member of the group plays the server's
 * part for itself, summing the masked inputs it received.
 *
 * 1. **Advertise**: two fresh X25519 key pairs (`c` for encrypting shares,
 *    `s` for agreeing masks), the training rows, the architecture and a
 *    commitment (SHA-256) to a fresh self-mask seed `b`.
 * 2. **Share keys**: `b` and the secret `s` key split into Shamir shares
 *    (threshold t of the group, over GF(256)), one pair per member that
 *    advertised, each encrypted (ChaCha20-Poly1305) under a key derived
 *    (HKDF-SHA256) from the pair's `c` keys, the round and the group.
 * 3. **Masked input**: the fixed-point input plus PRG(b) plus, for every
 *    member j whose shares arrived, +-PRG(s_ij) with s_ij derived (HKDF) from
 *    X25519 of the pair's `s` keys, the round and the group (+ when the
 *    member's id sorts before j's): pairwise masks cancel in the sum.
 * 4. **Unmask**: the member fixes the set of masked inputs it holds and, for
 *    each member, reveals one share only: of `b` for those it holds an input
 *    of, of the `s` key for those it does not (so no one can gather both
 *    for a member that is alive), with the digests of the inputs it holds.
 *
 * The sum is then the inputs held, less the self masks (b reconstructed
 * from t shares and checked against the commitment), less the masks of
 * members that dropped after sharing their keys (their `s` key
 * reconstructed and checked against their public key). Fewer than t inputs,
 * a digest that another member saw differently (the sender sent different
 * inputs to different members), masks that do not pair up, or a share that
 * does not reconstruct: the member refuses the round and keeps its own body.
 */
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, randomBytes } from '@noble/hashes/utils.js';
import { combine, split } from 'shamir-secret-sharing';
import { boundSampleCounts } from '../averaging.js';
import { addWords, decodeSum, encodeFixed, prgWords } from './fixed-point.js';
import {
  SecAggError,
  decodeSecAgg,
  encodeSecAgg,
  maskedDigest,
  type SecAggDecodeReason,
  type SecAggKeys,
  type SecAggMessage,
  type SecAggPhase,
} from './messages.js';
import type { SecAggGroup } from './groups.js';
import { X25519Key, agreeWith, publicKeyOf } from './x25519.js';

/** Why a message was refused (all but `other-architecture` and `late` are the sender's fault). */
export type SecAggReason =
  | SecAggDecodeReason
  | 'wrong-round'
  | 'wrong-group'
  | 'not-in-group'
  | 'sender-mismatch'
  | 'self'
  | 'changed-keys'
  | 'bad-key'
  | 'bad-share'
  | 'changed-input'
  | 'other-architecture'
  | 'late';

/** Refusals that are no fault of the sender. */
export const SECAGG_BENIGN: ReadonlySet<string> = new Set(['other-architecture', 'late']);

/** The round's outcome: the group's weighted mean, or why the member refuses it. */
export type SecAggResult =
  | { ok: true; mean: Float32Array; weight: number; survivors: string[]; dropped: string[]; digests: Map<string, string> }
  | { ok: false; reason: string; detail: string; faulty?: string[] };

const SALT = new TextEncoder().encode('dflmoe secure aggregation 1');
const ZERO_NONCE = new Uint8Array(12);
const kdf = (ikm: Uint8Array, info: string) => hkdf(sha256, ikm, SALT, new TextEncoder().encode(info), 32);
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);
const sameKeys = (a: SecAggKeys, b: SecAggKeys) =>
  sameBytes(a.c, b.c) && sameBytes(a.s, b.s) && sameBytes(a.commit, b.commit) && a.samples === b.samples && a.arch === b.arch;

interface Input {
  vector: Uint32Array;
  with: string[];
  digest: string;
}

export class SecAggMember {
  private readonly bSeed = randomBytes(32);
  private readonly ownKeys: SecAggKeys;
  /** Members that advertised (own included). */
  private readonly keys = new Map<string, SecAggKeys>();
  /** The shares this member holds of each member's `b` and `s` key (own included). */
  private readonly held = new Map<string, { b: Uint8Array; s: Uint8Array }>();
  private readonly inputs = new Map<string, Input>();
  /** Whom each member says it masked with, and its input's digest (from phase 3 or 4). */
  private readonly claims = new Map<string, { with: string[]; digest: string }>();
  private readonly reveals = new Map<string, NonNullable<SecAggMessage['reveal']>>();
  private sentShares?: Map<string, Uint8Array>;
  private own?: Input;
  /** Set once the member revealed: the inputs it holds then are the ones it sums. */
  private committed?: Set<string>;
  /** X25519 of this member's `c` and `s` secrets with each member's public keys (computed once, before sharing). */
  private readonly shared = new Map<string, { c: Uint8Array; s: Uint8Array }>();
  /** Encrypted shares that came before the sender's keys were agreed with. */
  private readonly pending = new Map<string, Uint8Array>();
  /** Refusals found after `receive` returned (keys that agree no secret, shares that do not decrypt): see `refusals`. */
  private readonly later: { peer: string; reason: SecAggReason }[] = [];
  private readonly badKeys = new Set<string>();
  /** Members found to have sent different inputs to different members. */
  readonly faulty = new Set<string>();

  private constructor(
    readonly self: string,
    readonly group: SecAggGroup,
    readonly length: number,
    o: { samples: number; arch: string },
    private readonly maxBytes: number,
    private readonly cKey: X25519Key,
    private readonly sKey: X25519Key,
  ) {
    if (!group.members.includes(self)) throw new Error(`${self} is not in its group`);
    this.ownKeys = { c: cKey.publicKey, s: sKey.publicKey, samples: o.samples, arch: o.arch, commit: sha256(this.bSeed) };
    this.keys.set(self, this.ownKeys);
  }

  /** A member of `group` for a body of `length` weights, with fresh keys. */
  static async create(self: string, group: SecAggGroup, length: number, o: { samples: number; arch: string }, maxBytes = 2 ** 31): Promise<SecAggMember> {
    const [c, s] = await Promise.all([X25519Key.generate(), X25519Key.generate()]);
    return new SecAggMember(self, group, length, o, maxBytes, c, s);
  }

  /** Refusals found since the last call, after `receive` had taken the message. */
  refusals(): { peer: string; reason: SecAggReason }[] {
    return this.later.splice(0);
  }

  /** Agree secrets with every member whose keys arrived; a key that agrees none drops its member. */
  private async agree(): Promise<void> {
    const todo = [...this.keys.keys()].filter((m) => m !== this.self && !this.shared.has(m));
    await Promise.all(
      todo.map(async (m) => {
        const k = this.keys.get(m)!;
        try {
          const [c, s] = await Promise.all([this.cKey.agree(k.c), this.sKey.agree(k.s)]);
          this.shared.set(m, { c, s });
        } catch {
          this.keys.delete(m);
          this.badKeys.add(m);
          this.later.push({ peer: m, reason: 'bad-key' });
        }
      }),
    );
    this.settle();
  }

  /** Decrypt the shares that waited for their sender's keys. */
  private settle(): void {
    for (const [from, ct] of [...this.pending]) {
      if (!this.shared.has(from)) continue;
      this.pending.delete(from);
      const r = this.decryptShares(from, ct);
      if (r !== 'ok') this.later.push({ peer: from, reason: r });
    }
  }

  private message(phase: SecAggPhase, extra: Partial<SecAggMessage> = {}): Uint8Array {
    return encodeSecAgg({ phase, round: this.group.round, group: this.group.id, peer: this.self, keys: this.ownKeys, ...extra });
  }

  /** Phase 1: the member's keys. */
  advertise(): Uint8Array {
    return this.message(1);
  }

  /** Members that advertised with this member's architecture (own included; before sharing, keys not yet checked). */
  advertised(): string[] {
    return [...this.keys.keys()].sort();
  }

  /** Members whose shares this member holds or has waiting (own included). */
  sharers(): string[] {
    return [...new Set([...this.held.keys(), ...this.pending.keys()])].sort();
  }

  /** Members whose masked input this member holds (own included). */
  holders(): string[] {
    return [...this.inputs.keys()].sort();
  }

  /** Members that revealed their shares to this member. */
  revealers(): string[] {
    return [...this.reveals.keys()].sort();
  }

  /** Phase 2: shares of `b` and the `s` key for every member that advertised; undefined when fewer than t did. */
  async shareKeys(): Promise<Uint8Array | undefined> {
    await this.agree();
    const to = this.advertised();
    if (to.length < this.group.threshold) return undefined;
    const [bs, ss] = await Promise.all([split(this.bSeed, to.length, this.group.threshold), split(this.sKey.secretKey, to.length, this.group.threshold)]);
    this.sentShares = new Map();
    to.forEach((m, i) => {
      if (m === this.self) this.held.set(m, { b: bs[i], s: ss[i] });
      else {
        const key = kdf(this.shared.get(m)!.c, `share|${this.group.round}|${this.group.id}|${this.self}|${m}`);
        const plain = new Uint8Array(66);
        plain.set(bs[i], 0);
        plain.set(ss[i], 33);
        this.sentShares!.set(m, chacha20poly1305(key, ZERO_NONCE).encrypt(plain));
      }
    });
    return this.message(2, { shares: this.sentShares });
  }

  /** A pairwise mask seed from the pair's X25519 shared secret. */
  private pairSeed(sharedSecret: Uint8Array): Uint8Array {
    return kdf(sharedSecret, `mask|${this.group.round}|${this.group.id}`);
  }

  private selfMask(seed: Uint8Array): Uint32Array {
    return prgWords(kdf(seed, `self|${this.group.round}|${this.group.id}`), this.length + 1);
  }

  /**
   * Phase 3: `values` (the body, flattened) masked; undefined when fewer than
   * t members' shares are held. The relative weight is this member's rows,
   * bounded as a server bounds them, over the largest of those it masks with.
   */
  maskedInput(values: Float32Array): { message: Uint8Array; clipped: number } | undefined {
    if (values.length !== this.length) throw new Error(`input of ${values.length} values, expected ${this.length}`);
    this.settle();
    // Masks pair up only with members that hold this member's shares too (it sent them) and whose shares it holds.
    const sent = this.sentShares;
    if (!sent) return undefined;
    const partners = [...this.held.keys()].filter((m) => m === this.self || sent.has(m)).sort();
    if (partners.length < this.group.threshold) return undefined;
    const bounded = boundSampleCounts(partners.map((m) => this.keys.get(m)!.samples));
    const a = bounded[partners.indexOf(this.self)] / Math.max(...bounded);
    const { words, clipped } = encodeFixed(values, a);
    addWords(words, this.selfMask(this.bSeed), 1);
    for (const m of partners) {
      if (m !== this.self) addWords(words, prgWords(this.pairSeed(this.shared.get(m)!.s), words.length), this.self < m ? 1 : -1);
    }
    this.own = { vector: words, with: partners, digest: maskedDigest(words) };
    this.inputs.set(this.self, this.own);
    this.claims.set(this.self, { with: partners, digest: this.own.digest });
    return { message: this.message(3, { shares: sent, masked: { with: partners, length: words.length, digest: this.own.digest }, vector: words }), clipped };
  }

  /** Phase 4: fix the inputs held and reveal one share per member (see the module's comment). */
  reveal(): Uint8Array | undefined {
    if (!this.own) return undefined;
    this.settle();
    this.committed = new Set(this.inputs.keys());
    const b = new Map<string, Uint8Array>();
    const s = new Map<string, Uint8Array>();
    for (const [m, sh] of this.held) (this.committed.has(m) ? b : s).set(m, this.committed.has(m) ? sh.b : sh.s);
    const heldDigests = new Map([...this.inputs].map(([m, i]) => [m, i.digest]));
    return this.message(4, { masked: { with: this.own.with, length: this.own.vector.length, digest: this.own.digest }, reveal: { held: heldDigests, b, s } });
  }

  /** Take in a message from `from` (as the transport authenticated it): `ok`, or why it was refused. */
  receive(bytes: Uint8Array, from: string): 'ok' | SecAggReason {
    let m: SecAggMessage;
    try {
      m = decodeSecAgg(bytes, { maxBytes: this.maxBytes });
    } catch (e) {
      if (e instanceof SecAggError) return e.reason;
      throw e;
    }
    if (m.peer !== from) return 'sender-mismatch';
    if (from === this.self) return 'self';
    if (m.round !== this.group.round) return 'wrong-round';
    if (m.group !== this.group.id) return 'wrong-group';
    if (!this.group.members.includes(from)) return 'not-in-group';
    if (m.masked && m.masked.with.some((w) => !this.group.members.includes(w))) return 'not-in-group';
    const k = this.takeKeys(from, m.keys);
    if (k !== 'ok') return k;
    if (m.shares) {
      const s = this.takeShares(from, m.shares);
      if (s !== 'ok') return s;
    }
    if (m.masked) {
      const c = this.claims.get(from);
      if (c && (c.digest !== m.masked.digest || c.with.join() !== m.masked.with.join())) return 'changed-input';
      this.claims.set(from, { with: m.masked.with, digest: m.masked.digest });
    }
    if (m.vector) {
      if (m.vector.length !== this.length + 1) return 'length';
      if (this.committed) return 'late';
      this.inputs.set(from, { vector: m.vector, with: m.masked!.with, digest: m.masked!.digest });
    }
    if (m.reveal && !this.reveals.has(from)) this.reveals.set(from, m.reveal);
    return 'ok';
  }

  private takeKeys(from: string, keys: SecAggKeys): 'ok' | SecAggReason {
    const known = this.keys.get(from);
    if (known) return sameKeys(known, keys) ? 'ok' : 'changed-keys';
    if (keys.arch !== this.ownKeys.arch) return 'other-architecture';
    // Checked when this member agrees secrets with them (before sharing its keys), or refused then.
    if (this.badKeys.has(from)) return 'bad-key';
    this.keys.set(from, keys);
    return 'ok';
  }

  private takeShares(from: string, shares: Map<string, Uint8Array>): 'ok' | SecAggReason {
    const ct = shares.get(this.self);
    if (!ct) return 'ok';
    if (!this.shared.has(from)) {
      const had = this.pending.get(from);
      if (had && !sameBytes(had, ct)) return 'changed-keys';
      this.pending.set(from, ct);
      return 'ok';
    }
    return this.decryptShares(from, ct);
  }

  private decryptShares(from: string, ct: Uint8Array): 'ok' | SecAggReason {
    const key = kdf(this.shared.get(from)!.c, `share|${this.group.round}|${this.group.id}|${from}|${this.self}`);
    let plain: Uint8Array;
    try {
      plain = chacha20poly1305(key, ZERO_NONCE).decrypt(ct);
    } catch {
      return 'bad-share';
    }
    const got = { b: plain.slice(0, 33), s: plain.slice(33, 66) };
    const had = this.held.get(from);
    if (had) return sameBytes(had.b, got.b) && sameBytes(had.s, got.s) ? 'ok' : 'changed-keys';
    // Shares arriving after this member masked are kept (they may help unmask) but do not change whom it masked with.
    this.held.set(from, got);
    return 'ok';
  }

  /** Reconstruct `of`'s secret of `kind` from the shares held and revealed (at least t, distinct x coordinates). */
  private async reconstruct(of: string, kind: 'b' | 's'): Promise<Uint8Array | undefined> {
    const shares = new Map<number, Uint8Array>();
    const mine = this.held.get(of)?.[kind];
    if (mine) shares.set(mine[32], mine);
    for (const r of this.reveals.values()) {
      const sh = r[kind].get(of);
      if (sh && !shares.has(sh[32])) shares.set(sh[32], sh);
    }
    if (shares.size < this.group.threshold) return undefined;
    const secret = await combine([...shares.values()].slice(0, this.group.threshold));
    const keys = this.keys.get(of)!;
    const good = kind === 'b' ? sameBytes(sha256(secret), keys.commit) : sameBytes(publicKeyOf(secret), keys.s);
    return good ? secret : undefined;
  }

  /** Members that sent different inputs to this member and to another (by the digests revealed). */
  private equivocators(): string[] {
    const out = new Set(this.faulty);
    for (const r of this.reveals.values()) {
      for (const [m, d] of r.held) if (this.inputs.get(m) && this.inputs.get(m)!.digest !== d) out.add(m);
    }
    for (const [m, c] of this.claims) if (this.inputs.get(m) && this.inputs.get(m)!.digest !== c.digest) out.add(m);
    return [...out].sort();
  }

  /** The group's mean over the inputs this member committed to, or why it refuses it. */
  async result(): Promise<SecAggResult> {
    this.settle();
    const t = this.group.threshold;
    if (!this.committed || !this.own) return { ok: false, reason: 'not-masked', detail: `fewer than ${t} members shared their keys` };
    const survivors = [...this.committed].sort();
    if (survivors.length < t) return { ok: false, reason: 'too-few', detail: `${survivors.length} masked inputs, fewer than the threshold ${t}` };
    const liars = this.equivocators();
    liars.forEach((m) => this.faulty.add(m));
    if (liars.length)
      return { ok: false, reason: 'equivocation', detail: `${liars.join(', ')} sent different masked bodies to different members`, faulty: liars };
    for (const j of survivors) {
      for (const k of this.inputs.get(j)!.with) {
        if (this.committed.has(k) && !this.inputs.get(k)!.with.includes(j))
          return { ok: false, reason: 'asymmetric-masks', detail: `${j} masked with ${k} but not the other way round` };
      }
    }
    const sum = new Uint32Array(this.length + 1);
    for (const j of survivors) {
      addWords(sum, this.inputs.get(j)!.vector, 1);
      const b = j === this.self ? this.bSeed : await this.reconstruct(j, 'b');
      if (!b) return { ok: false, reason: 'unrecoverable', detail: `fewer than ${t} good shares of ${j}'s self mask` };
      addWords(sum, this.selfMask(b), -1);
    }
    const dropped = [...new Set(survivors.flatMap((j) => this.inputs.get(j)!.with.filter((k) => !this.committed!.has(k))))].sort();
    for (const k of dropped) {
      const sk = await this.reconstruct(k, 's');
      if (!sk) return { ok: false, reason: 'unrecoverable', detail: `fewer than ${t} good shares of the mask key of ${k}, which dropped out` };
      for (const j of survivors) {
        if (this.inputs.get(j)!.with.includes(k)) addWords(sum, prgWords(this.pairSeed(agreeWith(sk, this.keys.get(j)!.s)), sum.length), j < k ? -1 : 1);
      }
    }
    const d = decodeSum(sum, survivors.length);
    if ('reason' in d) return { ok: false, reason: 'out-of-range', detail: d.reason };
    return {
      ok: true,
      mean: d.mean,
      weight: d.weight,
      survivors,
      dropped,
      digests: new Map(survivors.filter((m) => m !== this.self).map((m) => [m, this.inputs.get(m)!.digest])),
    };
  }
}

/** SHA-256 (hex) of a member's own plain input (for tests and the audit trail). */
export const inputDigest = (values: Float32Array): string => bytesToHex(sha256(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)));
