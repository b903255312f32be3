/**
 * Binary codec for bundles of tensors: heads on the wire, whole models for
 * FedAvg. Everything decoded here may come from the network, so the decoder
 * checks size, magic, format version, header schema, shapes, parameter
 * count, checksum and finiteness before returning anything.
 *
 * Layout (little endian):
 *   "DFLM" | u8 format version | u8 kind | u32 header length | header JSON
 *   | zero padding to a multiple of 4 | tensor data | u32 CRC-32 of all before
 *
 * Format 1 (every tensor float32) carries each tensor as float32s. Format 2
 * names a `dtype` per tensor in the header and stores each tensor from a
 * multiple of 4 bytes, zero-padded to the next one:
 *   f32: float32s; f16: IEEE half floats (values beyond +-65504 clipped);
 *   q8: a float32 scale, then int8s q with value q * scale (symmetric, per tensor).
 * The encoder writes format 1 when every tensor is float32, so float32 bundles
 * stay readable by peers that only know format 1.
 */
import { crc32 } from 'node:zlib';
import { z } from 'zod';
import type { HeadSpec } from './model.js';
import { headShapes } from './model.js';

const MAGIC = [0x44, 0x46, 0x4c, 0x4d]; // "DFLM"
/** Newest format this codec writes and reads (it reads every format from 1). */
export const CODEC_VERSION = 2;
const FLOAT32_FORMAT = 1;
const MAX_HEADER = 64 * 1024;

export const BundleKind = { head: 1, model: 2, body: 3, heads: 4 } as const;
export type BundleKind = keyof typeof BundleKind;

/** Why a message failed validation (`CodecError.reason`): bad size, magic, version, kind, header, shapes or checksum, NaN or infinite values, or shapes that do not fit the receiver. */
export type CodecReason = 'size' | 'magic' | 'version' | 'kind' | 'header' | 'shape' | 'checksum' | 'nonfinite' | 'mismatch';

/** A message failed validation; `reason` is a short code for counters. */
export class CodecError extends Error {
  /** Always `CodecError`. */
  override name = 'CodecError';
  constructor(
    /** Why the message failed validation, as a short code for counters. */
    readonly reason: CodecReason,
    message: string,
  ) {
    super(message);
  }
}

export interface NamedArray {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** How tensors travel: float32 (exact), float16 (half the bytes), int8 (a quarter, plus a scale per tensor). */
export type Precision = (typeof PRECISIONS)[number];
/** Every `Precision`, most exact first. */
export const PRECISIONS = ['float32', 'float16', 'int8'] as const;
const DTYPE = { float32: 'f32', float16: 'f16', int8: 'q8' } as const;
type Dtype = (typeof DTYPE)[Precision];

/** Bytes a tensor of `n` values takes in the data section, padding included. */
function tensorBytes(dtype: Dtype, n: number): number {
  if (dtype === 'f32') return 4 * n;
  if (dtype === 'f16') return 4 * Math.ceil(n / 2);
  return 4 + 4 * Math.ceil(n / 4);
}

const tensorEntry = z.object({
  name: z.string().max(128),
  shape: z
    .array(
      z
        .number()
        .int()
        .min(1)
        .max(1 << 24),
    )
    .min(0)
    .max(5),
});
const headerSchema = z.object({
  meta: z.record(z.string(), z.unknown()),
  tensors: z.array(tensorEntry).max(1024),
});
const headerSchemaV2 = z.object({
  meta: z.record(z.string(), z.unknown()),
  tensors: z.array(tensorEntry.extend({ dtype: z.enum(['f32', 'f16', 'q8']) })).max(1024),
});

// ---------------------------------------------------------------- float16

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const HALF_MAX = 65504;

/** The IEEE half float nearest to `v` (ties to even), its bits; beyond +-65504 clipped to +-65504. */
export function toHalfBits(v: number): number {
  f32[0] = v > HALF_MAX ? HALF_MAX : v < -HALF_MAX ? -HALF_MAX : v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

let halfTable: Float32Array | undefined;
/** The value of half float bits `h` (NaN or infinity for exponent 31). */
export function fromHalfBits(h: number): number {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) {
      const s = i & 0x8000 ? -1 : 1;
      const e = (i >>> 10) & 0x1f;
      const m = i & 0x3ff;
      halfTable[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return halfTable[h & 0xffff];
}

/** Round-trip `data` through `precision` (what a receiver will see), for measuring the cost of compression. */
export function quantize(data: Float32Array, precision: Precision): Float32Array {
  if (precision === 'float32') return data.slice();
  if (precision === 'float16') return data.map((v) => fromHalfBits(toHalfBits(v)));
  const scale = int8Scale(data);
  return data.map((v) => (scale === 0 ? 0 : int8Of(v, scale) * Math.fround(scale)));
}

function int8Scale(data: Float32Array): number {
  let m = 0;
  for (const v of data) m = Math.max(m, Math.abs(v));
  return Math.fround(m / 127);
}

function int8Of(v: number, scale: number): number {
  return Math.max(-127, Math.min(127, Math.round(v / scale)));
}

export function encodeBundle(kind: BundleKind, meta: Record<string, unknown>, tensors: NamedArray[], precision: Precision = 'float32'): Uint8Array {
  const dtype = DTYPE[precision];
  const entries = tensors.map((t) => (precision === 'float32' ? { name: t.name, shape: t.shape } : { name: t.name, shape: t.shape, dtype }));
  const header = new TextEncoder().encode(JSON.stringify({ meta, tensors: entries }));
  if (header.length > MAX_HEADER) throw new Error('bundle header too large');
  const headEnd = 10 + header.length;
  const dataStart = Math.ceil(headEnd / 4) * 4;
  const bytes = tensors.reduce((a, t) => a + tensorBytes(dtype, t.data.length), 0);
  const buf = new Uint8Array(dataStart + bytes + 4);
  const view = new DataView(buf.buffer);
  buf.set(MAGIC, 0);
  buf[4] = precision === 'float32' ? FLOAT32_FORMAT : CODEC_VERSION;
  buf[5] = BundleKind[kind];
  view.setUint32(6, header.length, true);
  buf.set(header, 10);
  let off = dataStart;
  for (const t of tensors) {
    const n = t.data.length;
    if (n !== t.shape.reduce((a, b) => a * b, 1)) throw new Error(`tensor ${t.name}: data length does not match shape`);
    const end = off + tensorBytes(dtype, n);
    if (dtype === 'f32') {
      for (let i = 0; i < n; i++) view.setFloat32(off + 4 * i, t.data[i], true);
    } else if (dtype === 'f16') {
      for (let i = 0; i < n; i++) view.setUint16(off + 2 * i, toHalfBits(t.data[i]), true);
    } else {
      const scale = int8Scale(t.data);
      view.setFloat32(off, scale, true);
      for (let i = 0; i < n; i++) view.setInt8(off + 4 + i, scale === 0 ? 0 : int8Of(t.data[i], scale));
    }
    off = end;
  }
  view.setUint32(off, crc32(buf.subarray(0, off)), true);
  return buf;
}

export interface DecodeLimits {
  /** Largest message accepted, in bytes. */
  maxBytes: number;
  /** Largest number of float parameters accepted. */
  maxParams?: number;
}

export interface DecodedBundle {
  kind: BundleKind;
  meta: Record<string, unknown>;
  tensors: NamedArray[];
}

export function decodeBundle(buf: Uint8Array, limits: DecodeLimits): DecodedBundle {
  if (!(buf instanceof Uint8Array)) throw new CodecError('size', 'not a byte array');
  if (buf.length > limits.maxBytes) throw new CodecError('size', `message of ${buf.length} bytes exceeds the limit of ${limits.maxBytes}`);
  if (buf.length < 14) throw new CodecError('size', `message of ${buf.length} bytes is too short`);
  for (let i = 0; i < 4; i++) if (buf[i] !== MAGIC[i]) throw new CodecError('magic', 'not a dflmoe bundle (bad magic)');
  const format = buf[4];
  if (format < FLOAT32_FORMAT || format > CODEC_VERSION) {
    throw new CodecError('version', `unsupported bundle format version ${format} (this site reads ${FLOAT32_FORMAT} to ${CODEC_VERSION})`);
  }
  const kind = (Object.keys(BundleKind) as BundleKind[]).find((k) => BundleKind[k] === buf[5]);
  if (!kind) throw new CodecError('kind', `unknown bundle kind ${buf[5]}`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const hlen = view.getUint32(6, true);
  if (hlen > MAX_HEADER || 10 + hlen > buf.length - 4) throw new CodecError('header', `header length ${hlen} out of range`);
  const crcAt = buf.length - 4;
  if (view.getUint32(crcAt, true) !== crc32(buf.subarray(0, crcAt))) throw new CodecError('checksum', 'checksum mismatch (corrupt or truncated)');
  let parsed: z.infer<typeof headerSchemaV2>;
  try {
    const json: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(10, 10 + hlen)));
    if (format === FLOAT32_FORMAT) {
      const h = headerSchema.parse(json);
      parsed = { meta: h.meta, tensors: h.tensors.map((t) => ({ ...t, dtype: 'f32' as const })) };
    } else {
      parsed = headerSchemaV2.parse(json);
    }
  } catch (e) {
    throw new CodecError('header', `bad header: ${(e as Error).message.slice(0, 200)}`);
  }
  const dataStart = Math.ceil((10 + hlen) / 4) * 4;
  let total = 0;
  let bytes = 0;
  for (const t of parsed.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    total += n;
    bytes += tensorBytes(t.dtype, n);
    if (!Number.isSafeInteger(total) || !Number.isSafeInteger(bytes)) throw new CodecError('shape', 'tensor sizes overflow');
  }
  if (limits.maxParams != null && total > limits.maxParams) {
    throw new CodecError('shape', `${total} parameters exceed the limit of ${limits.maxParams}`);
  }
  if (dataStart + bytes !== crcAt) {
    throw new CodecError('shape', `header describes ${bytes} bytes of tensor data (${total} values) but the message carries ${crcAt - dataStart}`);
  }
  let off = dataStart;
  const tensors = parsed.tensors.map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const bad = () => new CodecError('nonfinite', `tensor ${t.name} holds a non-finite value`);
    if (t.dtype === 'f32') {
      for (let i = 0; i < n; i++) data[i] = view.getFloat32(off + 4 * i, true);
    } else if (t.dtype === 'f16') {
      for (let i = 0; i < n; i++) data[i] = fromHalfBits(view.getUint16(off + 2 * i, true));
    } else {
      const scale = view.getFloat32(off, true);
      if (!Number.isFinite(scale) || scale < 0) throw new CodecError('nonfinite', `tensor ${t.name} has a bad scale ${scale}`);
      for (let i = 0; i < n; i++) data[i] = view.getInt8(off + 4 + i) * scale;
    }
    for (let i = 0; i < n; i++) if (!Number.isFinite(data[i])) throw bad();
    off += tensorBytes(t.dtype, n);
    return { name: t.name, shape: t.shape, data };
  });
  return { kind, meta: parsed.meta, tensors };
}

// ---------------------------------------------------------------- heads

export interface EncodedHeadInfo {
  spec: HeadSpec;
  version: number;
  /** The publishing peer, as it names itself; transports check it against the sender. */
  peer: string;
}

export function encodeHead(info: EncodedHeadInfo, layers: { kernel: Float32Array; bias: Float32Array }[], precision: Precision = 'float32'): Uint8Array {
  return encodeBundle('head', { spec: info.spec, version: info.version, peer: info.peer }, headTensors(info.spec, layers), precision);
}

/** A head's layers as the named tensors of its bundle. */
export function headTensors(spec: HeadSpec, layers: { kernel: Float32Array; bias: Float32Array }[]): NamedArray[] {
  const shapes = headShapes(spec);
  if (shapes.length !== layers.length) throw new Error('head layers do not match its spec');
  return layers.flatMap((l, i) => [
    { name: `dense${i}/kernel`, shape: shapes[i].kernel, data: l.kernel },
    { name: `dense${i}/bias`, shape: shapes[i].bias, data: l.bias },
  ]);
}

/** What a site's model (or body) bundle says of itself: its architecture, round, training rows and sender; checked before its tensors are used. */
export const modelBundleMeta = z.object({
  arch: z.string().max(1000),
  round: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  samples: z
    .number()
    .int()
    .min(1)
    .max(2 ** 31),
  peer: z.string().min(1).max(256),
});

const headMetaSchema = z.object({
  spec: z.object({
    inputDim: z
      .number()
      .int()
      .min(1)
      .max(1 << 16),
    hidden: z
      .array(
        z
          .number()
          .int()
          .min(1)
          .max(1 << 16),
      )
      .max(8),
    outputDim: z
      .number()
      .int()
      .min(1)
      .max(1 << 16),
  }),
  version: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  peer: z.string().min(1).max(256),
});

export interface DecodedHead extends EncodedHeadInfo {
  layers: { kernel: Float32Array; bias: Float32Array }[];
}

/**
 * Decode and validate a head. `expected` is the head spec this peer uses:
 * a head of another shape cannot be mixed in, so it is rejected.
 */
export function decodeHead(buf: Uint8Array, expected: HeadSpec, limits: DecodeLimits): DecodedHead {
  return headOfBundle(decodeBundle(buf, limits), expected);
}

/** The head a decoded bundle holds, checked against `expected` (see `decodeHead`). */
export function headOfBundle(b: DecodedBundle, expected: HeadSpec): DecodedHead {
  if (b.kind !== 'head') throw new CodecError('kind', `expected a head, got a ${b.kind} bundle`);
  const meta = headMetaSchema.safeParse(b.meta);
  if (!meta.success) throw new CodecError('header', `bad head metadata: ${meta.error.message.slice(0, 200)}`);
  const { spec } = meta.data;
  if (spec.inputDim !== expected.inputDim || spec.outputDim !== expected.outputDim || spec.hidden.join() !== expected.hidden.join()) {
    throw new CodecError(
      'mismatch',
      `head shape ${spec.inputDim}-[${spec.hidden}]-${spec.outputDim} differs from ours ${expected.inputDim}-[${expected.hidden}]-${expected.outputDim}`,
    );
  }
  const shapes = headShapes(spec);
  if (b.tensors.length !== shapes.length * 2) throw new CodecError('shape', `head has ${b.tensors.length} tensors, expected ${shapes.length * 2}`);
  const layers = shapes.map((s, i) => {
    const k = b.tensors[2 * i];
    const bias = b.tensors[2 * i + 1];
    if (k.shape.join() !== s.kernel.join() || bias.shape.join() !== s.bias.join()) {
      throw new CodecError('shape', `layer ${i}: got kernel [${k.shape}] bias [${bias.shape}], expected [${s.kernel}] [${s.bias}]`);
    }
    return { kernel: k.data, bias: bias.data };
  });
  return { spec, version: meta.data.version, peer: meta.data.peer, layers };
}
