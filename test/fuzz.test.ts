/** Property-based tests: decoders never throw anything but their own errors, whatever bytes arrive. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs-core';
import { CodecError, DflmoePeer, createHead, decodeBundle, decodeHead, disposePeerData, encodeHead, type HeadSpec } from '@dflmoe/core/internal';
import { Announce, checkAnnounce } from '@dflmoe/p2p/internal';
import { backend, mutated, tinyPeers } from './helpers.js';

const spec: HeadSpec = { inputDim: 8, hidden: [], outputDim: 4 };

function validHead(version: number, peer: string): Uint8Array {
  const h = createHead(spec, version);
  const b = encodeHead(
    { spec, version, peer },
    h.map((l) => ({ kernel: l.kernel.dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array })),
  );
  h.forEach((l) => tf.dispose([l.kernel, l.bias]));
  return b;
}

describe('fuzzing decoders', () => {
  before(backend);
  const base = () => validHead(3, 'peer-b');

  it('decodeBundle: random bytes only ever raise CodecError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (b) => {
        try {
          decodeBundle(b, { maxBytes: 1 << 20 });
        } catch (e) {
          return e instanceof CodecError;
        }
        return true;
      }),
      { numRuns: 3000 },
    );
  });

  it('decodeHead: mutated heads are rejected with CodecError or decode to the right shapes', () => {
    const good = base();
    fc.assert(
      fc.property(mutated(good), (b) => {
        try {
          const h = decodeHead(b, spec, { maxBytes: 1 << 20, maxParams: 100 });
          // Only possible if the mutation hit nothing the checksum covers: same shapes, finite values.
          return h.layers[0].kernel.length === 32 && h.layers[0].kernel.every(Number.isFinite);
        } catch (e) {
          return e instanceof CodecError;
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('a NaN inside a well-formed head is refused', () => {
    const h = createHead(spec, 1);
    const k = h[0].kernel.dataSync().slice() as Float32Array;
    k[5] = NaN;
    const b = encodeHead({ spec, version: 1, peer: 'x' }, [{ kernel: k, bias: h[0].bias.dataSync() as Float32Array }]);
    h.forEach((l) => tf.dispose([l.kernel, l.bias]));
    assert.throws(
      () => decodeHead(b, spec, { maxBytes: 1 << 20 }),
      (e: Error) => e instanceof CodecError && e.reason === 'nonfinite',
    );
  });

  it('DflmoePeer.receiveHead never throws and never leaks tensors, whatever arrives', () => {
    const { datas } = tinyPeers(2);
    const peer = new DflmoePeer({ id: 'me', data: datas[0], body: { kind: 'mlp', hidden: [8] }, featureDim: 8, headHidden: [], train: { seed: 1 } });
    const good = base();
    peer.receiveHead(good, 'peer-b', 1);
    const n0 = tf.memory().numTensors;
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(mutated(good), fc.uint8Array({ maxLength: 300 })), fc.constantFrom('peer-b', 'peer-c', 'me'), (b, from) => {
        const r = peer.receiveHead(b, from, 2);
        if (r === 'added' || r === 'replaced') accepted++;
        return typeof r === 'string';
      }),
      { numRuns: 2000 },
    );
    // Nothing may have been accepted (every mutation changes bytes the checksum covers or the sender), so no tensors were added.
    assert.equal(accepted, 0);
    assert.equal(tf.memory().numTensors, n0);
    peer.dispose();
    datas.forEach(disposePeerData);
  });

  it('gossip announcements: random and mutated bytes give a valid announcement or a drop reason, never an exception', () => {
    const from = 'QmSender';
    const good = Announce.encode({ format: 1, peer: from, version: 7n, digest: new Uint8Array(32).fill(1), size: 1000n });
    let valid = 0;
    fc.assert(
      fc.property(fc.oneof(mutated(good), fc.uint8Array({ maxLength: 200 })), (b) => {
        const r = checkAnnounce(b, from, 1 << 20);
        if ('reason' in r) return typeof r.detail === 'string';
        valid++;
        return r.peer === from && r.digest.length === 32 && r.format === 1 && r.size > 0n && r.size <= BigInt(1 << 20);
      }),
      { numRuns: 4000 },
    );
    assert.ok('reason' in checkAnnounce(good, 'QmOther', 1 << 20), 'spoofed sender');
    assert.ok(!('reason' in checkAnnounce(good, from, 1 << 20)));
    assert.ok(valid < 4000);
  });
});
