/**
 * The two `node:crypto` calls the shared code makes, for the tab: SHA-256
 * (`createHash('sha256')`, by @noble/hashes) and `randomFillSync` (the
 * browser's `crypto.getRandomValues`).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { Buffer } from 'buffer';

export function createHash(algorithm: string) {
  if (algorithm !== 'sha256') throw new Error(`createHash('${algorithm}') is not available in the browser (sha256 only)`);
  const h = sha256.create();
  const self = {
    update(data: Uint8Array | string) {
      h.update(typeof data === 'string' ? new TextEncoder().encode(data) : data);
      return self;
    },
    digest(encoding?: 'hex' | 'base64') {
      const out = Buffer.from(h.digest());
      return encoding ? out.toString(encoding) : out;
    },
  };
  return self;
}

export function randomFillSync<T extends ArrayBufferView>(buf: T): T {
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  // getRandomValues fills at most 64 KiB per call.
  for (let i = 0; i < bytes.length; i += 65536) globalThis.crypto.getRandomValues(bytes.subarray(i, Math.min(bytes.length, i + 65536)));
  return buf;
}

export default { createHash, randomFillSync };
