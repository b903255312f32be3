import assert from 'node:assert/strict';
import { simulate } from '@dflmoe/core';
import { backend } from './helpers.js';

const quiet = { logger: { debug() {}, info() {}, warn() {}, error() {} } };
const base = { dataset: 'digits', peers: 5, rounds: 2, seed: 4, algorithms: ['local' as const] };

describe('simulate: regimes (data per site, feature shift, validation, pooled test)', () => {
  before(backend);

  it('--train-per-site cuts every training split and keeps the test splits', async () => {
    const full = await simulate({ ...base, partition: 'iid' }, quiet);
    const cut = await simulate({ ...base, partition: 'iid', trainPerSite: 30 }, quiet);
    const f = full.algorithms.local!.peers;
    const c = cut.algorithms.local!.peers;
    assert.ok(f.every((p) => p.trainSamples > 30));
    assert.ok(c.every((p) => p.trainSamples === 30));
    assert.deepEqual(
      c.map((p) => p.testSamples),
      f.map((p) => p.testSamples),
    );
  });

  it('--feature-shift changes what sites see, reproducibly', async () => {
    const plain = await simulate({ ...base, partition: 'iid' }, quiet);
    const a = await simulate({ ...base, partition: 'iid', featureShift: ['rotate', 'noise'] }, quiet);
    const b = await simulate({ ...base, partition: 'iid', featureShift: ['rotate', 'noise'] }, quiet);
    const acc = (r: typeof a) => r.algorithms.local!.peers.map((p) => p.accuracy);
    assert.deepEqual(acc(a), acc(b));
    assert.notDeepEqual(acc(a), acc(plain));
    await assert.rejects(simulate({ ...base, featureShift: ['blur' as 'noise'] }, quiet), /unknown feature shift "blur"/);
  });

  it('--evaluate-on validation scores on rows held out of the training split', async () => {
    const t = await simulate({ ...base, partition: 'iid' }, quiet);
    const v = await simulate({ ...base, partition: 'iid', evaluateOn: 'validation' }, quiet);
    t.algorithms.local!.peers.forEach((p, i) => {
      const q = v.algorithms.local!.peers[i];
      assert.equal(q.trainSamples + q.testSamples, p.trainSamples, 'validation rows come out of the training split');
    });
  });

  it('reports each site on the pooled test split: local models under label skew know little beyond their classes', async () => {
    const r = await simulate({ ...base, peers: 6, partition: 'shards:2', rounds: 4, algorithms: ['local', 'fedavg'] }, quiet);
    const local = r.algorithms.local!;
    assert.ok(local.pooledAccuracy, 'pooled accuracy is reported');
    assert.equal(local.peers.length, 6);
    for (const p of local.peers) assert.ok(p.pooledAccuracy! >= 0 && p.pooledAccuracy! <= 1);
    // A site trained on 2 of 10 classes cannot score much above 2/10 on everyone's test rows.
    assert.ok(local.pooledAccuracy!.mean < 0.35, `local pooled ${local.pooledAccuracy!.mean}`);
    assert.ok(local.accuracy.mean > local.pooledAccuracy!.mean + 0.3);
    // FedAvg's sites all hold the same global model: one pooled accuracy.
    const fp = r.algorithms.fedavg!.peers.map((p) => p.pooledAccuracy!);
    assert.ok(Math.max(...fp) - Math.min(...fp) < 1e-9, `fedavg pooled ${fp}`);
  });
});
