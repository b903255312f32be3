/**
 * Binary codec for bundles of float32 tensors: heads on the wire, whole
 * models for FedAvg. Everything decoded here may come from the network, so
 * the decoder checks size, magic, format version, header schema, shapes,
 * parameter count, checksum and finiteness before returning anything.
 *
 * Layout (little endian):
 *   "DFLM" | u8 format version | u8 kind | u32 header length | header JSON
 *   | zero padding to a multiple of 4 | float32 data | u32 CRC-32 of all before
 */
import { crc32 } from 'node:zlib';
import { z } from 'zod';
import type { HeadSpec } from './model.js';
import { headShapes } from './model.js';

const MAGIC = [0x44, 0x46, 0x4c, 0x4d]; // "DFLM"
export const CODEC_VERSION = 1;
const MAX_HEADER = 64 * 1024;

export const BundleKind = { head: 1, model: 2 } as const;
export type BundleKind = keyof typeof BundleKind;

export type CodecReason = 'size' | 'magic' | 'version' | 'kind' | 'header' | 'shape' | 'checksum' | 'nonfinite' | 'mismatch';

/** A message failed validation; `reason` is a short code for counters. */
export class CodecError extends Error {
  override name = 'CodecError';
  constructor(readonly reason: CodecReason, message: string) {
    super(message);
  }
}

export interface NamedArray {
  name: string;
  shape: number[];
  data: Float32Array;
}

const headerSchema = z.object({
  meta: z.record(z.string(), z.unknown()),
  tensors: z
    .array(
      z.object({
        name: z.string().max(128),
        shape: z.array(z.number().int().min(1).max(1 << 24)).min(0).max(5),
      }),
    )
    .max(1024),
});

export function encodeBundle(kind: BundleKind, meta: Record<string, unknown>, tensors: NamedArray[]): Uint8Array {
  const header = new TextEncoder().encode(JSON.stringify({ meta, tensors: tensors.map((t) => ({ name: t.name, shape: t.shape })) }));
  if (header.length > MAX_HEADER) throw new Error('bundle header too large');
  const headEnd = 10 + header.length;
  const dataStart = Math.ceil(headEnd / 4) * 4;
  const floats = tensors.reduce((a, t) => a + t.data.length, 0);
  const buf = new Uint8Array(dataStart + floats * 4 + 4);
  const view = new DataView(buf.buffer);
  buf.set(MAGIC, 0);
  buf[4] = CODEC_VERSION;
  buf[5] = BundleKind[kind];
  view.setUint32(6, header.length, true);
  buf.set(header, 10);
  let off = dataStart;
  for (const t of tensors) {
    if (t.data.length !== t.shape.reduce((a, b) => a * b, 1)) throw new Error(`tensor ${t.name}: data length does not match shape`);
    for (let i = 0; i < t.data.length; i++, off += 4) view.setFloat32(off, t.data[i], true);
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
  if (buf[4] !== CODEC_VERSION) throw new CodecError('version', `unsupported bundle format version ${buf[4]} (this peer reads ${CODEC_VERSION})`);
  const kind = (Object.keys(BundleKind) as BundleKind[]).find((k) => BundleKind[k] === buf[5]);
  if (!kind) throw new CodecError('kind', `unknown bundle kind ${buf[5]}`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const hlen = view.getUint32(6, true);
  if (hlen > MAX_HEADER || 10 + hlen > buf.length - 4) throw new CodecError('header', `header length ${hlen} out of range`);
  const crcAt = buf.length - 4;
  if (view.getUint32(crcAt, true) !== crc32(buf.subarray(0, crcAt))) throw new CodecError('checksum', 'checksum mismatch (corrupt or truncated)');
  let parsed: z.infer<typeof headerSchema>;
  try {
    parsed = headerSchema.parse(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(10, 10 + hlen))));
  } catch (e) {
    throw new CodecError('header', `bad header: ${(e as Error).message.slice(0, 200)}`);
  }
  const dataStart = Math.ceil((10 + hlen) / 4) * 4;
  let total = 0;
  for (const t of parsed.tensors) {
    total += t.shape.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(total)) throw new CodecError('shape', 'tensor sizes overflow');
  }
  if (limits.maxParams != null && total > limits.maxParams) {
    throw new CodecError('shape', `${total} parameters exceed the limit of ${limits.maxParams}`);
  }
  if (dataStart + total * 4 !== crcAt) {
    throw new CodecError('shape', `header describes ${total} floats but the message carries ${(crcAt - dataStart) / 4}`);
  }
  let off = dataStart;
  const tensors = parsed.tensors.map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++, off += 4) {
      const v = view.getFloat32(off, true);
      if (!Number.isFinite(v)) throw new CodecError('nonfinite', `tensor ${t.name} holds a non-finite value`);
      data[i] = v;
    }
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

export function encodeHead(info: EncodedHeadInfo, layers: { kernel: Float32Array; bias: Float32Array }[]): Uint8Array {
  const shapes = headShapes(info.spec);
  if (shapes.length !== layers.length) throw new Error('head layers do not match its spec');
  const tensors: NamedArray[] = layers.flatMap((l, i) => [
    { name: `dense${i}/kernel`, shape: shapes[i].kernel, data: l.kernel },
    { name: `dense${i}/bias`, shape: shapes[i].bias, data: l.bias },
  ]);
  return encodeBundle('head', { spec: info.spec, version: info.version, peer: info.peer }, tensors);
}

const headMetaSchema = z.object({
  spec: z.object({
    inputDim: z.number().int().min(1).max(1 << 16),
    hidden: z.array(z.number().int().min(1).max(1 << 16)).max(8),
    outputDim: z.number().int().min(1).max(1 << 16),
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
  const b = decodeBundle(buf, limits);
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
