/**
 * Resumable head transfers. A puller asks for the head in frames of at most
 * `RESUME_CHUNK` bytes; when the connection drops mid-transfer it keeps the
 * frames that arrived (a prefix of the head, if at least one frame long) and
 * asks next time for the rest: `offset` plus the digest of the head it was
 * pulling. The server sends from `offset` only when its head still has that
 * digest, else the whole of its current head. The assembled head is checked
 * against the digest as before, so a prefix from an older head can never
 * slip in; a response that does not fit what was asked for is a bad response.
 */
import type { FrameBytes } from './frames.js';
import { HeadResponse } from './proto/messages.js';

export const RESUME_CHUNK = 256 * 1024;
const MIN_CHUNK = 16 * 1024;
const MAX_CHUNK = 4 * 1024 * 1024;
/** A prefix older than this is forgotten (the head has likely moved on). */
const MAX_AGE_MS = 10 * 60 * 1000;

interface Partial {
  digest: Uint8Array<ArrayBuffer>;
  version: bigint;
  size: number;
  bytes: Uint8Array;
  have: number;
  at: number;
}

const equal = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);

/** Server side: the chunk size to answer with (0: one frame, for a requester that did not ask) and the offset to send from. */
export function servePlan(
  req: { chunkSize?: number; offset?: bigint; resumeDigest?: Uint8Array },
  head: { digest: Uint8Array; bytes: Uint8Array },
): { chunkSize: number; offset: number } {
  if (!req.chunkSize) return { chunkSize: 0, offset: 0 };
  const chunkSize = Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, req.chunkSize));
  const off = req.offset ?? 0n;
  const same = req.resumeDigest !== undefined && equal(req.resumeDigest, head.digest);
  return { chunkSize, offset: same && off > 0n && off < BigInt(head.bytes.length) ? Number(off) : 0 };
}

/** The frames that carry `bytes` from `offset` on, `chunkSize` at most each. */
export function chunkFrames(bytes: Uint8Array, offset: number, chunkSize: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = offset; i < bytes.length; i += chunkSize) out.push(bytes.subarray(i, Math.min(bytes.length, i + chunkSize)));
  return out;
}

/**
 * Check a response as its frames arrive: throws (which stops the read) once
 * the frames go beyond what the header promised, so a member cannot make us
 * buffer more than one head.
 */
export function frameGuard(maxBytes: number): (f: Uint8Array | FrameBytes, i: number) => void {
  let head: HeadResponse | undefined;
  let total = 0;
  return (f, i) => {
    if (i === 0) {
      try {
        head = HeadResponse.decode(f instanceof Uint8Array ? f : f.subarray());
      } catch {
        head = undefined; // reported by the caller
      }
      return;
    }
    if (!head?.chunkSize) {
      if (i > 1) throw new Error('more frames than a head');
      return;
    }
    if (head.chunkSize > RESUME_CHUNK || Number(head.size) > maxBytes) throw new Error('chunk or head larger than asked for');
    total += f.length;
    if (f.length > head.chunkSize || total > Number(head.size) - Number(head.offset ?? 0n)) throw new Error('frames exceed the announced head');
  };
}

export type Assembled = { bytes: Uint8Array } | { incomplete: number } | { reason: 'bad-response' | 'too-large'; detail: string };

/** Client side: what each member's broken-off transfer left, and how much resuming saved. */
export class PartialHeads {
  private byPeer = new Map<string, Partial>();
  /** Transfers that went on from a prefix instead of from zero, and the bytes not sent again. */
  resumes = 0;
  resumedBytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** The request fields to resume `peer`'s head (when we hold a prefix of the head `digest`, or of any head if the digest is unknown). */
  request(peer: string, digest?: Uint8Array): { chunkSize: number; offset?: bigint; resumeDigest?: Uint8Array<ArrayBuffer> } {
    const p = this.byPeer.get(peer);
    if (p && (Date.now() - p.at > MAX_AGE_MS || (digest && !equal(digest, p.digest)))) this.byPeer.delete(peer);
    const q = this.byPeer.get(peer);
    return q ? { chunkSize: RESUME_CHUNK, offset: BigInt(q.have), resumeDigest: q.digest } : { chunkSize: RESUME_CHUNK };
  }

  /**
   * Start taking in a chunked response for `peer`: checks the header against
   * what was asked for and returns the buffer the frames go into as they
   * arrive (a resumed head continues the kept prefix), or why the response
   * is refused.
   */
  open(peer: string, res: HeadResponse): HeadSink | { reason: 'bad-response' | 'too-large'; detail: string } {
    const size = Number(res.size);
    const offset = Number(res.offset ?? 0n);
    if (size > this.maxBytes) return { reason: 'too-large', detail: `${size} bytes` };
    const prev = this.byPeer.get(peer);
    if (offset > 0 && !(prev && prev.have === offset && equal(prev.digest, res.digest) && prev.size === size)) {
      return { reason: 'bad-response', detail: `resumed at ${offset}, which was not asked for` };
    }
    if (offset === 0) this.byPeer.delete(peer);
    return new HeadSink(this, peer, res, offset > 0 ? prev!.bytes : new Uint8Array(size), offset);
  }

  /** `open`, every chunk written, then `finish` (for frames already in memory). */
  assemble(peer: string, res: HeadResponse, chunks: Uint8Array[]): Assembled {
    const sink = this.open(peer, res);
    if ('reason' in sink) return sink;
    try {
      for (const c of chunks) sink.write(c);
    } catch (e) {
      return { reason: 'bad-response', detail: (e as Error).message };
    }
    return sink.finish();
  }

  /** Called by a sink when its transfer ends: count a resume, keep a prefix worth resuming from. */
  settle(peer: string, res: HeadResponse, bytes: Uint8Array, offset: number, at: number): Assembled {
    const size = bytes.length;
    if (offset > 0) {
      this.resumes++;
      this.resumedBytes += offset;
    }
    if (at === size) {
      this.byPeer.delete(peer);
      return { bytes };
    }
    // Keep a prefix worth resuming from (at least one frame).
    if (at >= Math.min(RESUME_CHUNK, size))
      this.byPeer.set(peer, { digest: new Uint8Array(res.digest), version: res.version, size, bytes, have: at, at: Date.now() });
    else this.byPeer.delete(peer);
    return { incomplete: at };
  }

  /** Forget `peer`'s prefix (its head moved on, or it was bad). */
  forget(peer: string): void {
    this.byPeer.delete(peer);
  }
}

/**
 * One chunked head coming in: each piece of each frame is copied once, straight
 * into the head's buffer, as the stream delivers it.
 */
export class HeadSink {
  constructor(
    private readonly partials: PartialHeads,
    private readonly peer: string,
    private readonly res: HeadResponse,
    readonly bytes: Uint8Array,
    private readonly offset: number,
    private at = offset,
  ) {}

  /** Append `piece`; throws when the head would grow beyond the size its header gave. */
  write(piece: Uint8Array): void {
    if (this.at + piece.length > this.bytes.length) throw new Error('more bytes than the header says');
    this.bytes.set(piece, this.at);
    this.at += piece.length;
  }

  /** The transfer is over (complete or cut off): the whole head, or how much of it came (kept to resume from). */
  finish(): Assembled {
    return this.partials.settle(this.peer, this.res, this.bytes, this.offset, this.at);
  }
}
