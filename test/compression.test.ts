/** Head compression: float16 and int8 bundles (codec format 2), their errors, sizes and validation. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  CodecError,
  DEFAULT_SIMULATION,
  PRECISIONS,
  decodeBundle,
  decodeHead,
  encodeBundle,
  encodeHead,
  fromHalfBits,
  quantize,
  simulate,
  silentLogger,
  toHalfBits,
  type HeadSpec,
  type NamedArray,
  type Precision,
} from '@dflmoe/core/internal';
import { parsePeerConfig, siteSettings } from '@dflmoe/p2p/internal';
import { backend, mutated } from './helpers.js';

const spec: HeadSpec = { inputDim: 64, hidden: [], outputDim: 10 };

function randomLayers(seed: number, scale = 0.2) {
  let s = seed >>> 0;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  return [{ kernel: Float32Array.from({ length: 640 }, rnd), bias: Float32Array.from({ length: 10 }, rnd) }];
}

const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

describe('head compression (codec format 2)', () => {
  it('float16 bits: exact on representable values, ties to even, clipped beyond 65504, subnormals kept', () => {
    for (const v of [0, -0, 1, -2, 0.5, 65504, -65504, 2 ** -14, 2 ** -24, 1 + 2 ** -10]) assert.equal(fromHalfBits(toHalfBits(v)), v, `${v}`);
    // 1 + 2^-11 sits half-way between 1 and 1 + 2^-10: ties go to the even mantissa (1).
    assert.equal(fromHalfBits(toHalfBits(1 + 2 ** -11)), 1);
    assert.equal(fromHalfBits(toHalfBits(1 + 3 * 2 ** -11)), 1 + 2 ** -9);
    assert.equal(fromHalfBits(toHalfBits(1e6)), 65504);
    assert.equal(fromHalfBits(toHalfBits(-1e9)), -65504);
    assert.equal(fromHalfBits(toHalfBits(2 ** -26)), 0);
    assert.ok(Number.isNaN(fromHalfBits(toHalfBits(NaN))));
    fc.assert(
      fc.property(fc.float({ min: -60000, max: 60000, noNaN: true }), (v) => {
        const r = fromHalfBits(toHalfBits(v));
        return Math.abs(r - v) <= Math.max(Math.abs(v) * 2 ** -11, 2 ** -25);
      }),
      { numRuns: 5000 },
    );
  });

  it('float16 and int8 heads decode within their error bounds at about 1/2 and 1/4 of the tensor bytes', () => {
    const layers = randomLayers(7);
    const info = { spec, version: 4, peer: '12D3KooWQx8bhPZ9YzqS1mD4Lr4D2Pue2xJQ4vy4tAt1w5gD8xP7' };
    const size: Record<string, number> = {};
    for (const p of PRECISIONS) {
      const b = encodeHead(info, layers, p);
      size[p] = b.length;
      assert.equal(b[4], p === 'float32' ? 1 : 2, 'float32 stays format 1');
      const h = decodeHead(b, spec, { maxBytes: 1 << 20, maxParams: 650 });
      assert.equal(h.version, 4);
      const k = h.layers[0].kernel;
      const bound = p === 'float32' ? 0 : p === 'float16' ? maxAbs(layers[0].kernel) * 2 ** -11 : maxAbs(layers[0].kernel) / 127 / 2 + 1e-7;
      for (let i = 0; i < k.length; i++) assert.ok(Math.abs(k[i] - layers[0].kernel[i]) <= bound, `${p} value ${i}: ${k[i]} vs ${layers[0].kernel[i]}`);
      // What a receiver sees is what quantize() predicts, bit for bit.
      assert.deepEqual(k, quantize(layers[0].kernel, p));
    }
    const header = size.float32 - 650 * 4;
    assert.ok(size.float16 - header <= 650 * 2 + 100 && size.float16 - header >= 650 * 2, `float16 ${size.float16} vs float32 ${size.float32}`);
    assert.ok(size.int8 - header <= 650 + 100 && size.int8 - header >= 650, `int8 ${size.int8}`);
  });

  it('a float32 bundle is byte for byte what format 1 wrote', () => {
    const t: NamedArray[] = [{ name: 'w', shape: [2, 2], data: Float32Array.from([1, -2, 3.5, 0.25]) }];
    const b = encodeBundle('model', { k: 1 }, t);
    const header = JSON.stringify({ meta: { k: 1 }, tensors: [{ name: 'w', shape: [2, 2] }] });
    assert.equal(b[4], 1);
    assert.equal(b.length, Math.ceil((10 + header.length) / 4) * 4 + 16 + 4);
    assert.equal(new TextDecoder().decode(b.subarray(10, 10 + header.length)), header);
  });

  it('hostile format-2 bundles are refused: NaN and infinite halves, a bad scale, a wrong dtype, wrong lengths, format 3', () => {
    const t = (data: number[]): NamedArray[] => [{ name: 'w', shape: [data.length], data: Float32Array.from(data) }];
    const fix = (b: Uint8Array) => {
      // Recompute the CRC so that only the planted fault is left.
      const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
      v.setUint32(b.length - 4, crc(b.subarray(0, b.length - 4)), true);
      return b;
    };
    const dataAt = (b: Uint8Array) => Math.ceil((10 + new DataView(b.buffer).getUint32(6, true)) / 4) * 4;
    const reason = (b: Uint8Array) => {
      try {
        decodeBundle(b, { maxBytes: 1 << 20 });
        return 'ok';
      } catch (e) {
        assert.ok(e instanceof CodecError, String(e));
        return e.reason;
      }
    };
    const f16 = encodeBundle('head', {}, t([1, 2, 3]), 'float16');
    assert.equal(reason(f16), 'ok');
    for (const bits of [0x7c00, 0xfc00, 0x7e00]) {
      const b = f16.slice();
      new DataView(b.buffer).setUint16(dataAt(b) + 2, bits, true);
      assert.equal(reason(fix(b)), 'nonfinite', `half bits ${bits.toString(16)}`);
    }
    const q8 = encodeBundle('head', {}, t([1, -2, 3]), 'int8');
    assert.deepEqual(
      [...decodeBundle(q8, { maxBytes: 1 << 20 }).tensors[0].data].map((v) => Math.round(v * 100) / 100),
      [0.99, -2.01, 3],
    );
    for (const scale of [NaN, Infinity, -1]) {
      const b = q8.slice();
      new DataView(b.buffer).setFloat32(dataAt(b), scale, true);
      assert.equal(reason(fix(b)), 'nonfinite', `scale ${scale}`);
    }
    // Header says f32 where the data is f16: the lengths disagree.
    const relabel = (b: Uint8Array, to: string) => {
      const out = b.slice();
      const at = Buffer.from(out).indexOf('"f16"');
      assert.ok(at > 0);
      out.set(new TextEncoder().encode(`"${to}"`), at);
      return out;
    };
    assert.equal(reason(fix(relabel(f16, 'f32'))), 'shape');
    assert.equal(reason(fix(relabel(f16, 'f64'))), 'header');
    // A format-2 header without dtypes.
    const v1 = encodeBundle('head', {}, t([1, 2]));
    const relabelled = v1.slice();
    relabelled[4] = 2;
    assert.equal(reason(fix(relabelled)), 'header');
    const f3 = f16.slice();
    f3[4] = 3;
    assert.equal(reason(fix(f3)), 'version');
    assert.equal(reason(f16.slice(0, f16.length - 6)), 'checksum');
  });

  it('fuzz: mutated float16 and int8 heads raise CodecError or decode to finite values of the right shape', () => {
    const small: HeadSpec = { inputDim: 8, hidden: [], outputDim: 4 };
    for (const p of ['float16', 'int8'] as Precision[]) {
      const good = encodeHead(
        { spec: small, version: 2, peer: 'b' },
        [{ kernel: Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)), bias: new Float32Array(4) }],
        p,
      );
      fc.assert(
        fc.property(mutated(good), (b) => {
          try {
            const h = decodeHead(b, small, { maxBytes: 1 << 16, maxParams: 36 });
            return h.layers[0].kernel.length === 32 && h.layers[0].kernel.every(Number.isFinite);
          } catch (e) {
            return e instanceof CodecError;
          }
        }),
        { numRuns: 1500 },
      );
    }
  });

  it('configs and the simulator carry headPrecision; a bad value is a clear config error', () => {
    const sim = { ...DEFAULT_SIMULATION, dataset: 'breast-cancer', headPrecision: 'float16' as const };
    assert.equal(siteSettings(sim, 0).dflmoe.headPrecision, 'float16');
    const base = { key: 'k.key', listen: ['/ip4/127.0.0.1/tcp/1'], data: { dataset: 'breast-cancer' }, rounds: 2, out: 'o' };
    assert.equal(parsePeerConfig(base).dflmoe.headPrecision, 'float32');
    assert.equal(parsePeerConfig({ ...base, dflmoe: { headPrecision: 'int8' } }).dflmoe.headPrecision, 'int8');
    assert.throws(() => parsePeerConfig({ ...base, dflmoe: { headPrecision: 'float8' } }), /dflmoe\.headPrecision/);
  });

  it('a float16 simulation sends about half the head bytes of float32 and learns as well', async function () {
    this.timeout(120000);
    await backend();
    const run = (headPrecision: Precision) =>
      simulate(
        {
          ...DEFAULT_SIMULATION,
          dataset: 'digits',
          peers: 3,
          rounds: 3,
          partition: 'dirichlet:0.5',
          seed: 2,
          algorithms: ['dflmoe'],
          headPrecision,
        },
        { logger: silentLogger },
      );
    const [a, b] = [await run('float32'), await run('float16')];
    const bytes = (r: typeof a) => r.algorithms.dflmoe!.peers.reduce((s, p) => s + p.bytesSent, 0);
    const ratio = bytes(b) / bytes(a);
    assert.ok(ratio > 0.5 && ratio < 0.6, `float16/float32 bytes ${ratio}`);
    const acc = (r: typeof a) => r.algorithms.dflmoe!.accuracy.mean;
    assert.ok(Math.abs(acc(a) - acc(b)) <= 0.02, `accuracy ${acc(a)} vs ${acc(b)}`);
  });
});

// CRC-32 (IEEE), for planting faults behind a valid checksum.
function crc(b: Uint8Array): number {
  let c = ~0;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
