/**
 * Length-prefixed frames over a libp2p 3 stream, streamed with it-pipe.
 * Reads stop at a size limit per frame; writes are cut into chunks so that
 * backpressure works for heads and models of any size.
 */
import type { Stream } from '@libp2p/interface';
import { messageStreamToDuplex } from '@libp2p/utils';
import * as lp from 'it-length-prefixed';
import { pipe } from 'it-pipe';

/** A frame as the stream delivered it: the pieces it arrived in (iterable), its length, and a copy in one piece. */
export interface FrameBytes {
  readonly length: number;
  subarray(): Uint8Array;
  [Symbol.iterator](): Iterator<Uint8Array>;
}

const CONSUMED = new Uint8Array(0);

/**
 * Read up to `n` length-prefixed frames from a stream (each at most `maxLen`
 * bytes), or until the sender closes its side. Frames are collected into `out` as they arrive, so that a caller
 * keeps what came before a failure; `onFrame` sees each frame in the pieces
 * it arrived in and may take it itself (return true: `out` gets an empty
 * array in its place, and no copy is made), or throw to stop reading.
 */
export async function readFrames(
  stream: Stream,
  n: number | ((frames: Uint8Array[]) => number),
  maxLen: number,
  signal: AbortSignal,
  out: Uint8Array[] = [],
  onFrame?: (f: FrameBytes, i: number) => boolean | void,
): Promise<Uint8Array[]> {
  // `n` as a function: how many frames this message has, from the frames read so far (a request whose first frame
  // says whether a body follows), so that the reader never waits on the sender closing its side.
  const count = typeof n === 'number' ? () => n : n;
  const duplex = messageStreamToDuplex(stream);
  // At the deadline: abort the stream, and settle even if its source never ends (a peer that stalls mid-frame).
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      stream.abort(new Error('transfer timed out'));
      reject(new Error('transfer timed out'));
    };
  });
  aborted.catch(() => {});
  if (signal.aborted) onAbort();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await Promise.race([
      aborted,
      pipe(
        duplex.source,
        (src) => lp.decode(src, { maxDataLength: maxLen }),
        async (src) => {
          for await (const f of src) {
            out.push(onFrame?.(f, out.length) === true ? CONSUMED : f.subarray());
            if (out.length >= count(out)) break;
          }
          return out;
        },
      ),
    ]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

const CHUNK = 256 * 1024;

/** Write frames, length-prefixed and cut into chunks (for backpressure), then close our side. */
export async function writeFrames(stream: Stream, frames: Uint8Array[]): Promise<void> {
  const duplex = messageStreamToDuplex(stream);
  const maxDataLength = Math.max(...frames.map((f) => f.length)) + 1;
  await pipe(
    frames,
    (src) => lp.encode(src, { maxDataLength }),
    async function* (src) {
      for await (const buf of src) {
        for (let i = 0; i < buf.byteLength; i += CHUNK) yield buf.subarray(i, Math.min(buf.byteLength, i + CHUNK));
      }
    },
    duplex.sink,
  );
}
