/**
 * The wire format of secure aggregation: one message per member and phase,
 * `DSA` + format byte + u32 LE header length + JSON header + payload (the
 * masked input's words, in phase 3 only).
 *
 * A message carries what its sender said in earlier phases of the round
 * (its keys always, its encrypted shares in phases 2 and 3), so that a
 * member that missed one of them (an exchange keeps only each member's
 * newest message) still has what it needs from the next.
 *
 * Everything here is untrusted: `decodeSecAgg` checks sizes, the header
 * against a strict schema, hex lengths, unique recipients, the payload's
 * length and its SHA-256 against the header, and raises only `SecAggError`.
 */
import { z } from 'zod';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { FIXED_POINT, bytesOf, wordsOf } from './fixed-point.js';

const MAGIC = [0x44, 0x53, 0x41]; // "DSA"
const FORMAT = 1;
/** An encrypted pair of shares: two 33-byte Shamir shares (secret and x coordinate) and a 16-byte tag. */
export const SHARE_CIPHERTEXT_BYTES = 2 * 33 + 16;
/** Largest header accepted, in bytes. */
const MAX_HEADER = 1 << 20;

export type SecAggPhase = 1 | 2 | 3 | 4;

/** What a member advertises: its public keys for this round, its training rows, its body's architecture, a commitment to its self-mask seed. */
export interface SecAggKeys {
  /** X25519 key that shares are encrypted to. */
  c: Uint8Array;
  /** X25519 key that pairwise masks are agreed from. */
  s: Uint8Array;
  samples: number;
  arch: string;
  /** SHA-256 of the self-mask seed (checks its reconstruction). */
  commit: Uint8Array;
}

export interface SecAggMessage {
  phase: SecAggPhase;
  round: number;
  /** The group's id (see `secAggGroups`). */
  group: string;
  peer: string;
  keys: SecAggKeys;
  /** Phases 2 and 3: the sender's shares, encrypted to each member. */
  shares?: Map<string, Uint8Array>;
  /** Phases 3 and 4: whom the sender masked with, its input's length in words and the SHA-256 of its masked input. */
  masked?: { with: string[]; length: number; digest: string };
  /** Phase 3: the masked input. */
  vector?: Uint32Array;
  /** Phase 4: the digests of the masked inputs the sender holds, and the shares it reveals (self-mask shares of those, key shares of the others). */
  reveal?: { held: Map<string, string>; b: Map<string, Uint8Array>; s: Map<string, Uint8Array> };
}

export type SecAggDecodeReason = 'too-large' | 'truncated' | 'magic' | 'format' | 'header' | 'length' | 'digest';

/** A message that cannot be read, with the reason (a strike against the sender). */
export class SecAggError extends Error {
  constructor(
    readonly reason: SecAggDecodeReason,
    message: string,
  ) {
    super(message);
    this.name = 'SecAggError';
  }
}

const hexOf = (bytes: number) =>
  z
    .string()
    .length(2 * bytes)
    .regex(/^[0-9a-f]*$/);
const peer = z.string().min(1).max(256);
const list = <T extends z.ZodTypeAny>(t: T) => z.array(t).max(FIXED_POINT.maxGroup);
const headerSchema = z
  .object({
    phase: z.number().int().min(1).max(4),
    round: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    group: hexOf(16),
    peer,
    keys: z
      .object({
        c: hexOf(32),
        s: hexOf(32),
        samples: z
          .number()
          .int()
          .min(1)
          .max(2 ** 31),
        arch: z.string().max(1000),
        commit: hexOf(32),
      })
      .strict(),
    shares: list(z.object({ to: peer, ct: hexOf(SHARE_CIPHERTEXT_BYTES) }).strict()).optional(),
    masked: z
      .object({
        with: list(peer),
        length: z
          .number()
          .int()
          .min(1)
          .max(2 ** 28),
        digest: hexOf(32),
      })
      .strict()
      .optional(),
    reveal: z
      .object({
        held: list(z.object({ peer, digest: hexOf(32) }).strict()),
        b: list(z.object({ of: peer, share: hexOf(33) }).strict()),
        s: list(z.object({ of: peer, share: hexOf(33) }).strict()),
      })
      .strict()
      .optional(),
  })
  .strict();

const toMap = <T>(entries: [string, T][], what: string): Map<string, T> => {
  const m = new Map(entries);
  if (m.size !== entries.length) throw new SecAggError('header', `${what} names a member twice`);
  return m;
};

/** The SHA-256 (hex) of a masked input's words. */
export const maskedDigest = (words: Uint32Array): string => bytesToHex(sha256(bytesOf(words)));

export function encodeSecAgg(m: SecAggMessage): Uint8Array {
  const header = {
    phase: m.phase,
    round: m.round,
    group: m.group,
    peer: m.peer,
    keys: { c: bytesToHex(m.keys.c), s: bytesToHex(m.keys.s), samples: m.keys.samples, arch: m.keys.arch, commit: bytesToHex(m.keys.commit) },
    ...(m.shares ? { shares: [...m.shares].map(([to, ct]) => ({ to, ct: bytesToHex(ct) })) } : {}),
    ...(m.masked ? { masked: m.masked } : {}),
    ...(m.reveal
      ? {
          reveal: {
            held: [...m.reveal.held].map(([p, digest]) => ({ peer: p, digest })),
            b: [...m.reveal.b].map(([of, s]) => ({ of, share: bytesToHex(s) })),
            s: [...m.reveal.s].map(([of, s]) => ({ of, share: bytesToHex(s) })),
          },
        }
      : {}),
  };
  const h = new TextEncoder().encode(JSON.stringify(header));
  const payload = m.vector ? bytesOf(m.vector) : new Uint8Array(0);
  const out = new Uint8Array(8 + h.length + payload.length);
  out.set(MAGIC, 0);
  out[3] = FORMAT;
  new DataView(out.buffer).setUint32(4, h.length, true);
  out.set(h, 8);
  out.set(payload, 8 + h.length);
  return out;
}

/** Read a message; raises `SecAggError` (and nothing else) for anything malformed. */
export function decodeSecAgg(bytes: Uint8Array, o: { maxBytes: number }): SecAggMessage {
  if (bytes.length > o.maxBytes) throw new SecAggError('too-large', `${bytes.length} bytes, more than ${o.maxBytes}`);
  if (bytes.length < 8) throw new SecAggError('truncated', `${bytes.length} bytes`);
  if (MAGIC.some((b, i) => bytes[i] !== b)) throw new SecAggError('magic', 'not a secure aggregation message');
  if (bytes[3] !== FORMAT) throw new SecAggError('format', `format ${bytes[3]}`);
  const hl = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (hl > MAX_HEADER || 8 + hl > bytes.length) throw new SecAggError('truncated', `header of ${hl} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + hl)));
  } catch (e) {
    throw new SecAggError('header', `header is not JSON: ${(e as Error).message.slice(0, 100)}`);
  }
  const p = headerSchema.safeParse(raw);
  if (!p.success) throw new SecAggError('header', p.error.issues[0]?.message ?? 'bad header');
  const h = p.data;
  const payload = bytes.subarray(8 + hl);
  const phase = h.phase as SecAggPhase;
  if ((phase === 2 || phase === 3) !== (h.shares !== undefined)) throw new SecAggError('header', `phase ${phase} ${h.shares ? 'carries' : 'lacks'} shares`);
  if (phase >= 3 !== (h.masked !== undefined)) throw new SecAggError('header', `phase ${phase} ${h.masked ? 'carries' : 'lacks'} a masked input`);
  if ((phase === 4) !== (h.reveal !== undefined)) throw new SecAggError('header', `phase ${phase} ${h.reveal ? 'carries' : 'lacks'} revealed shares`);
  const m: SecAggMessage = {
    phase,
    round: h.round,
    group: h.group,
    peer: h.peer,
    keys: { c: hexToBytes(h.keys.c), s: hexToBytes(h.keys.s), samples: h.keys.samples, arch: h.keys.arch, commit: hexToBytes(h.keys.commit) },
  };
  if (h.shares)
    m.shares = toMap(
      h.shares.map((s) => [s.to, hexToBytes(s.ct)]),
      'shares',
    );
  if (h.masked) {
    if (new Set(h.masked.with).size !== h.masked.with.length) throw new SecAggError('header', 'masked.with names a member twice');
    m.masked = h.masked;
  }
  if (phase === 3) {
    if (payload.length !== 4 * h.masked!.length) throw new SecAggError('length', `${payload.length} payload bytes for ${h.masked!.length} words`);
    m.vector = wordsOf(payload);
    if (maskedDigest(m.vector) !== h.masked!.digest) throw new SecAggError('digest', 'the masked input does not match its digest');
  } else if (payload.length > 0) throw new SecAggError('length', `phase ${phase} carries ${payload.length} payload bytes`);
  if (h.reveal) {
    m.reveal = {
      held: toMap(
        h.reveal.held.map((x) => [x.peer, x.digest]),
        'reveal.held',
      ),
      b: toMap(
        h.reveal.b.map((x) => [x.of, hexToBytes(x.share)]),
        'reveal.b',
      ),
      s: toMap(
        h.reveal.s.map((x) => [x.of, hexToBytes(x.share)]),
        'reveal.s',
      ),
    };
  }
  return m;
}
