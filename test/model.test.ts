import { silentLogger } from '@dflmoe/core';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  DflmoePeer,
  ExpertPool,
  FedAvgClient,
  Gate,
  LocalPeer,
  createHead,
  decodeHead,
  disposePeerData,
  encodeHead,
  federatedAverage,
  headLogits,
  moeForward,
  type HeadSpec,
} from '@dflmoe/core/internal';
import { backend, tinyPeers } from './helpers.js';

const spec: HeadSpec = { inputDim: 8, hidden: [], outputDim: 4 };

function headBytes(seed: number, version: number, peer: string): Uint8Array {
  const h = createHead(spec, seed);
  const bytes = encodeHead(
    { spec, version, peer },
    h.map((l) => ({ kernel: l.kernel.dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array })),
  );
  h.forEach((l) => tf.dispose([l.kernel, l.bias]));
  return bytes;
}

function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

describe('MoE model parts', () => {
  before(backend);

  it('the MoE output is a probability distribution', () => {
    tf.tidy(() => {
      const z = tf.randomNormal([16, 8], 0, 1, 'float32', 3) as tf.Tensor2D;
      const gate = new Gate(8, 6, 1, 'me');
      const experts = ['me', 'a', 'b'].map((id, i) => {
        gate.ensureSlot(id);
        return { id, head: createHead(spec, 10 + i) };
      });
      const { probs, gates } = moeForward(z, experts, gate);
      assert.deepEqual(probs.shape, [16, 4]);
      assert.ok(tf.min(probs).dataSync()[0] >= 0);
      assert.ok(maxDiff(tf.sum(probs, 1), tf.ones([16])) < 1e-5);
      assert.ok(maxDiff(tf.sum(gates, 1), tf.ones([16])) < 1e-5);
      gate.dispose();
    });
  });

  it('with one expert the MoE equals the own head', () => {
    tf.tidy(() => {
      const z = tf.randomNormal([10, 8], 0, 1, 'float32', 4) as tf.Tensor2D;
      const gate = new Gate(8, 6, 2, 'me');
      const head = createHead(spec, 5);
      const { probs } = moeForward(z, [{ id: 'me', head }], gate);
      assert.ok(maxDiff(probs, tf.softmax(headLogits(head, z))) < 1e-6);
      gate.dispose();
    });
  });

  it('the gate masks absent experts: zero weight, and their parameters do not matter', () => {
    tf.tidy(() => {
      const z = tf.randomNormal([12, 8], 0, 1, 'float32', 5) as tf.Tensor2D;
      const gate = new Gate(8, 6, 3, 'me');
      for (const id of ['a', 'b', 'c']) gate.ensureSlot(id);
      // Make slot b attractive, then mark it absent.
      for (const v of gate.slotVariables('b')) v.assign(tf.fill(v.shape, 5));
      const { ids, weights } = gate.allWeights(z, ['me', 'a', 'c']);
      const col = ids.indexOf('b');
      assert.equal(tf.sum(tf.slice(weights, [0, col], [-1, 1])).dataSync()[0], 0);
      assert.ok(maxDiff(tf.sum(weights, 1), tf.ones([12])) < 1e-5);
      const before = gate.weights(z, ['me', 'a', 'c']);
      for (const v of gate.slotVariables('b')) v.assign(tf.fill(v.shape, -7));
      assert.equal(maxDiff(before, gate.weights(z, ['me', 'a', 'c'])), 0);
      // When b is present, it takes weight.
      const withB = gate.weights(z, ['me', 'a', 'b', 'c']);
      assert.equal(withB.shape[1], 4);
      gate.dispose();
    });
  });
});

describe('expert pool', () => {
  before(backend);

  it('keeps the newest version per peer, refuses old ones, ages out silent peers', () => {
    const n0 = tf.memory().numTensors;
    const pool = new ExpertPool({ maxStaleness: 2 });
    const dec = (seed: number, v: number, p: string) => decodeHead(headBytes(seed, v, p), spec, { maxBytes: 1 << 20 });
    assert.equal(pool.offer(dec(1, 1, 'a'), 1, 100), 'added');
    assert.equal(pool.offer(dec(2, 1, 'b'), 1, 100), 'added');
    assert.equal(pool.offer(dec(3, 2, 'a'), 2, 100), 'replaced');
    assert.equal(pool.offer(dec(4, 2, 'a'), 2, 100), 'stale-version');
    assert.equal(pool.offer(dec(4, 1, 'a'), 2, 100), 'stale-version');
    assert.equal(pool.get('a')!.version, 2);
    assert.deepEqual(
      pool.list().map((e) => e.peer),
      ['a', 'b'],
    );
    assert.deepEqual(pool.expire(3), []);
    assert.deepEqual(pool.expire(4), ['b']); // b last refreshed in round 1
    assert.deepEqual(pool.expire(5), ['a']);
    assert.equal(pool.size, 0);
    pool.dispose();
    assert.equal(tf.memory().numTensors, n0, 'pool frees what it held');
  });
});

describe('dFLMoE peer', () => {
  before(backend);

  it('received heads do not change during local training; own parts do', async () => {
    const { datas } = tinyPeers(2);
    const a = new DflmoePeer({ id: 'a', data: datas[0], body: { kind: 'mlp', hidden: [16] }, featureDim: 8, headHidden: [], train: { seed: 1 } });
    const b = new DflmoePeer({ id: 'b', data: datas[1], body: { kind: 'mlp', hidden: [16] }, featureDim: 8, headHidden: [], train: { seed: 2 } });
    await b.trainRound(1);
    assert.equal(a.receiveHead(b.encodeHead(1), 'b', 1), 'added');
    const received = a.pool.get('b')!.head.map((l) => [l.kernel.dataSync().slice(), l.bias.dataSync().slice()]);
    const own = a.head[0].kernel.dataSync().slice();
    const gateBefore = a.gate.slotVariables('b')[1].dataSync()[0];
    const fstBefore = tf.tidy(() =>
      a
        .transformed('b', tf.eye(8) as tf.Tensor2D)
        .dataSync()
        .slice(),
    );
    await a.trainRound(2);
    a.pool.get('b')!.head.forEach((l, i) => {
      assert.deepEqual(l.kernel.dataSync(), received[i][0]);
      assert.deepEqual(l.bias.dataSync(), received[i][1]);
    });
    assert.notDeepEqual(a.head[0].kernel.dataSync(), own, 'own head trains');
    assert.notEqual(a.gate.slotVariables('b')[1].dataSync()[0], gateBefore, 'gate slot trains');
    assert.notDeepEqual(
      tf.tidy(() =>
        a
          .transformed('b', tf.eye(8) as tf.Tensor2D)
          .dataSync()
          .slice(),
      ),
      fstBefore,
      'FST trains',
    );
    a.dispose();
    b.dispose();
    datas.forEach(disposePeerData);
  });

  it('drops and counts bad heads instead of failing', () => {
    const { datas } = tinyPeers(2);
    const a = new DflmoePeer({ id: 'a', data: datas[0], body: { kind: 'mlp', hidden: [16] }, featureDim: 8, headHidden: [], train: { seed: 1 } });
    const good = headBytes(1, 1, 'b');
    assert.equal(a.receiveHead(good, 'c', 1), 'sender-mismatch');
    assert.equal(a.receiveHead(headBytes(1, 1, 'a'), 'a', 1), 'self');
    const flipped = good.slice();
    flipped[flipped.length - 10] ^= 0xff;
    assert.equal(a.receiveHead(flipped, 'b', 1), 'checksum');
    assert.equal(a.receiveHead(good.subarray(0, 50), 'b', 1), 'header');
    assert.equal(a.receiveHead(new Uint8Array(3), 'b', 1), 'size');
    const otherSpec: HeadSpec = { inputDim: 8, hidden: [], outputDim: 3 };
    const h = createHead(otherSpec, 1);
    const wrong = encodeHead(
      { spec: otherSpec, version: 1, peer: 'b' },
      h.map((l) => ({ kernel: l.kernel.dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array })),
    );
    h.forEach((l) => tf.dispose([l.kernel, l.bias]));
    assert.equal(a.receiveHead(wrong, 'b', 1), 'mismatch');
    assert.equal(a.receiveHead(good, 'b', 1), 'added');
    assert.equal(a.receiveHead(good, 'b', 2), 'stale-version');
    assert.equal(a.counters.accepted, 1);
    assert.deepEqual(a.counters.rejected, { 'sender-mismatch': 1, self: 1, checksum: 1, header: 1, size: 1, mismatch: 1, 'stale-version': 1 });
    a.dispose();
    datas.forEach(disposePeerData);
  });
});

describe('FedAvg', () => {
  before(backend);

  it('averaging identical models is the identity', () => {
    const { datas } = tinyPeers(3);
    const c = new FedAvgClient({ id: 'a', data: datas[0], body: { kind: 'mlp', hidden: [16] }, featureDim: 8, headHidden: [4], train: { seed: 1 } });
    const w = c.getWeights();
    const avg = federatedAverage([
      { weights: w, samples: 10 },
      { weights: w, samples: 77 },
      { weights: w, samples: 3 },
    ]);
    avg.forEach((t, i) => {
      assert.deepEqual(t.shape, w[i].shape);
      for (let j = 0; j < t.data.length; j++) assert.ok(Math.abs(t.data[j] - w[i].data[j]) < 1e-6);
    });
    c.dispose();
    datas.forEach(disposePeerData);
  });

  it('weights the average by sample count', () => {
    const mk = (v: number) => [{ name: 'w', shape: [2], data: new Float32Array([v, 2 * v]) }];
    const avg = federatedAverage([
      { weights: mk(1), samples: 1 },
      { weights: mk(4), samples: 3 },
    ]);
    assert.deepEqual(Array.from(avg[0].data), [3.25, 6.5]);
  });

  it('refuses heterogeneous models with a clear error', async () => {
    const { simulate } = await import('@dflmoe/core');
    await assert.rejects(
      simulate({ dataset: 'digits', peers: 2, rounds: 1, algorithms: ['fedavg'], bodies: ['mlp', 'cnn'], partition: 'iid' }, { logger: quiet }),
      /FedAvg needs the same model at every site.*dflmoe and local/,
    );
  });
});

const quiet = silentLogger;

describe('no tensor leaks across rounds', () => {
  before(backend);

  for (const kind of ['dflmoe', 'fedavg', 'local'] as const) {
    it(`${kind}: tf.memory().numTensors is steady over 5 rounds`, async () => {
      const { datas } = tinyPeers(3);
      const opts = (i: number) => ({
        id: `p${i}`,
        data: datas[i],
        body: { kind: 'mlp' as const, hidden: [16] },
        featureDim: 8,
        headHidden: [],
        train: { seed: i },
      });
      const counts: number[] = [];
      if (kind === 'dflmoe') {
        const ps = datas.map((_, i) => new DflmoePeer(opts(i)));
        for (let r = 1; r <= 5; r++) {
          for (const p of ps) {
            p.startRound(r);
            await p.trainRound(r);
          }
          const heads = ps.map((p) => p.encodeHead(r));
          ps.forEach((p, i) => heads.forEach((h, j) => i !== j && p.receiveHead(h, ps[j].id, r)));
          ps.forEach((p) => p.evaluate());
          ps.forEach((p) => p.meanGateWeights());
          counts.push(tf.memory().numTensors);
        }
        ps.forEach((p) => p.dispose());
      } else if (kind === 'fedavg') {
        const cs = datas.map((_, i) => new FedAvgClient(opts(i)));
        for (let r = 1; r <= 5; r++) {
          for (const c of cs) await c.trainRound(r);
          const ups = cs.map((c) => ({ weights: c.getWeights(), samples: c.data.trainSamples }));
          const g = federatedAverage(ups);
          cs.forEach((c) => c.setWeights(g));
          cs.forEach((c) => c.evaluate());
          counts.push(tf.memory().numTensors);
        }
        cs.forEach((c) => c.dispose());
      } else {
        const ls = datas.map((_, i) => new LocalPeer(opts(i)));
        for (let r = 1; r <= 5; r++) {
          for (const l of ls) {
            await l.trainRound(r);
            l.evaluate();
          }
          counts.push(tf.memory().numTensors);
        }
        ls.forEach((l) => l.dispose());
      }
      // Round 1 creates optimizer state and (for dFLMoE) expert slots; after round 2 nothing may grow.
      assert.deepEqual(counts.slice(2), [counts[1], counts[1], counts[1]], `tensor counts per round: ${counts}`);
      datas.forEach(disposePeerData);
    });
  }
});
