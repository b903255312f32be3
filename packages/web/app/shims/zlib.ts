/** `node:zlib` in the tab: the CRC-32 the bundle codec checks frames with (crc-32); no compression is needed here. */
import CRC32 from 'crc-32';

export function crc32(data: Uint8Array | string, value = 0): number {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  return CRC32.buf(bytes, value) >>> 0;
}

export function gunzipSync(): never {
  throw new Error('gzip files cannot be read in the browser: pick an uncompressed file');
}

export default { crc32, gunzipSync };
