/** Reader for the IDX format used by MNIST and Fashion-MNIST (LeCun et al.). */
import { DataError } from './errors.js';

const DTYPE_UBYTE = 0x08;

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** Parse an IDX buffer of unsigned bytes, checking the header against the size. */
export function parseIdx(buf: Uint8Array, what: string): IdxArray {
  if (buf.length < 4) throw new DataError(`${what}: file too short to be an IDX file (${buf.length} bytes)`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (view.getUint16(0) !== 0) throw new DataError(`${what}: not an IDX file (bad magic number)`);
  const dtype = view.getUint8(2);
  const ndim = view.getUint8(3);
  if (dtype !== DTYPE_UBYTE) throw new DataError(`${what}: IDX element type 0x${dtype.toString(16)} is not supported (expected unsigned bytes)`);
  if (ndim < 1 || ndim > 4) throw new DataError(`${what}: IDX file has ${ndim} dimensions`);
  const header = 4 + 4 * ndim;
  if (buf.length < header) throw new DataError(`${what}: truncated IDX header`);
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(view.getUint32(4 + 4 * i));
  const count = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== header + count) {
    throw new DataError(`${what}: IDX header promises ${count} values but the file holds ${buf.length - header} (truncated or corrupt download?)`);
  }
  return { dims, data: buf.subarray(header) };
}
