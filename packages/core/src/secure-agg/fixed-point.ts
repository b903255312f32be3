/**
 * Fixed-point encoding of float weights into integers mod 2^32, and the
 * masks (a ChaCha20 key stream read as 32-bit words) that hide them.
 *
 * A member's input is `[round(a * 2^20), round(clip(x_1) * a * 2^16), ...]`
 * with `a` in (0, 1] its relative weight (its bounded training rows over the
 * largest in the group) and `clip` +-32. The first word sums to the total
 * weight, the others to the weighted sum of the bodies, so the mean is
 * their quotient. Every word is read as a signed 32-bit integer once the
 * masks are gone: a group of 255 members (the most Shamir sharing over
 * GF(256) allows) sums to at most 255 * 32 * 2^16 < 2^29 in a value word and
 * 255 * 2^20 < 2^28 in the weight word, so nothing wraps. The rounding error
 * is at most 2^-17 per member and coordinate (7.6e-6), far below what a
 * round of SGD moves a weight.
 */
import { chacha20 } from '@noble/ciphers/chacha.js';

/** The fixed-point settings: value scale, weight scale, clipping bound and the largest group. */
export const FIXED_POINT = { scale: 2 ** 16, weightScale: 2 ** 20, clip: 32, maxGroup: 255 } as const;

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Bytes as 32-bit little-endian words (a copy when the bytes are not aligned). */
export function wordsOf(bytes: Uint8Array): Uint32Array {
  if (!LITTLE_ENDIAN) throw new Error('secure aggregation needs a little-endian platform');
  const own = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  return new Uint32Array(own.buffer, own.byteOffset, own.byteLength / 4);
}

/** Words as bytes (little-endian), sharing memory. */
export function bytesOf(words: Uint32Array): Uint8Array {
  if (!LITTLE_ENDIAN) throw new Error('secure aggregation needs a little-endian platform');
  return new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
}

/**
 * Encode `values` (a body's weights, flattened) with relative weight `a`
 * into `values.length + 1` words; `clipped` counts the values outside +-clip.
 */
export function encodeFixed(values: Float32Array, a: number): { words: Uint32Array; clipped: number } {
  if (!(a > 0 && a <= 1)) throw new Error(`relative weight must be in (0, 1], got ${a}`);
  const { scale, weightScale, clip } = FIXED_POINT;
  const words = new Uint32Array(values.length + 1);
  words[0] = Math.round(a * weightScale) >>> 0;
  let clipped = 0;
  for (let i = 0; i < values.length; i++) {
    let v = values[i];
    if (!(v >= -clip && v <= clip)) {
      clipped++;
      v = v > clip ? clip : v < -clip ? -clip : 0;
    }
    words[i + 1] = Math.round(v * a * scale) >>> 0;
  }
  return { words, clipped };
}

/**
 * Decode an unmasked sum: the total weight and the weighted mean.
 * Returns a reason instead when the sum cannot come from honest inputs of
 * `members` members (a weight out of (0, members], a mean beyond the clip).
 */
export function decodeSum(sum: Uint32Array, members: number): { weight: number; mean: Float32Array } | { reason: string } {
  const { scale, weightScale, clip } = FIXED_POINT;
  const weight = (sum[0] | 0) / weightScale;
  if (!(weight > 0 && weight <= members + 1e-6)) return { reason: `total weight ${weight} is not in (0, ${members}]` };
  const mean = new Float32Array(sum.length - 1);
  const bound = clip * (1 + 1e-6) + 1 / scale;
  for (let i = 0; i < mean.length; i++) {
    const v = (sum[i + 1] | 0) / scale / weight;
    if (!(Math.abs(v) <= bound)) return { reason: `coordinate ${i} of the mean is ${v}, beyond the clip of ${clip}` };
    mean[i] = v;
  }
  return { weight, mean };
}

/** `length` words of ChaCha20 key stream under the 32-byte `seed` (zero nonce: every seed is used once). */
export function prgWords(seed: Uint8Array, length: number): Uint32Array {
  const stream = chacha20(seed, new Uint8Array(12), new Uint8Array(length * 4));
  return wordsOf(stream);
}

/** `acc += sign * m` mod 2^32, in place. */
export function addWords(acc: Uint32Array, m: Uint32Array, sign: 1 | -1): void {
  if (sign === 1) for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] + m[i]) >>> 0;
  else for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] - m[i]) >>> 0;
}
