import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_ORDERS as DEFAULT_ORDERS_FOR_TEST,
  RdpAccountant,
  computeRdp,
  epsilonFromRdp,
  noiseForEpsilon,
  rdpSampledGaussian,
  silentLogger,
  simulate,
  type SimulationResults,
} from '@dflmoe/core/internal';
import { backend, cliAsync } from './helpers.js';

// Reference values from the tests of Google's dp_accounting library
// (python/dp_accounting/dp_accounting/rdp/rdp_privacy_accountant_test.py).
describe('RDP accountant', () => {
  it('matches dp_accounting for the Poisson-sampled Gaussian (q=0.01, sigma=2.5, 50 steps)', () => {
    const orders = [5, 50, 100];
    const expected = [2.18075656e-3, 2.38460375e-2, 1.67416308e2];
    computeRdp(0.01, 2.5, 50, orders).forEach((v, i) => {
      assert.ok(Math.abs(v - expected[i]) <= 1e-4 * expected[i], `order ${orders[i]}: ${v} vs ${expected[i]}`);
    });
  });

  it('matches dp_accounting for the RDP -> (epsilon, delta) conversion (pure DP, rdp 1.1)', () => {
    const orders = Array.from({ length: 31 }, (_, i) => i + 2);
    const r = epsilonFromRdp(
      orders,
      orders.map(() => 1.1),
      1e-5,
    );
    assert.ok(Math.abs(r.epsilon - 1.32783806176) < 1e-9, String(r.epsilon));
    assert.equal(r.order, 32);
  });

  it('a plain Gaussian (q = 1) has RDP a / (2 sigma^2)', () => {
    assert.ok(Math.abs(rdpSampledGaussian(1, 2.71828, 3) - 3 / (2 * 2.71828 ** 2)) < 1e-12);
  });

  it('composes over steps, grows with steps, shrinks with noise, and finds the noise for a target epsilon', () => {
    const a = new RdpAccountant();
    a.compose(0.05, 1.1, 100);
    a.compose(0.05, 1.1, 100);
    const b = new RdpAccountant();
    b.compose(0.05, 1.1, 200);
    assert.ok(Math.abs(a.epsilon(1e-5) - b.epsilon(1e-5)) < 1e-9);
    assert.equal(a.steps, 200);
    const c = new RdpAccountant();
    c.compose(0.05, 2.2, 200);
    assert.ok(c.epsilon(1e-5) < a.epsilon(1e-5));
    const s = noiseForEpsilon(3, 0.05, 200, 1e-5);
    const d = new RdpAccountant();
    d.compose(0.05, s, 200);
    assert.ok(Math.abs(d.epsilon(1e-5) - 3) < 1e-3, String(d.epsilon(1e-5)));
    assert.deepEqual(RdpAccountant.fromState(a.state()).epsilon(1e-5), a.epsilon(1e-5));
  });
});

describe('DP-SGD training', () => {
  before(async () => {
    const { backend } = await import('./helpers.js');
    await backend();
  });

  it('reports the epsilon its accountant computes, adds noise that matters, and does not leak tensors', async () => {
    const tf = await import('@tensorflow/tfjs-core');
    const { LocalPeer, disposePeerData } = await import('@dflmoe/core/internal');
    const { tinyPeers } = await import('./helpers.js');
    const { datas } = tinyPeers(1);
    const mk = (noise?: number) =>
      new LocalPeer({
        id: 'a',
        data: datas[0],
        body: { kind: 'mlp', hidden: [16] },
        featureDim: 8,
        headHidden: [],
        train: {
          seed: 1,
          batchSize: 16,
          learningRate: 1e-2,
          epochs: 2,
          ...(noise !== undefined ? { dp: { noiseMultiplier: noise, clipNorm: 1, microbatches: 4 } } : {}),
        },
      });
    const dp = mk(1.3);
    const counts: number[] = [];
    for (let r = 1; r <= 3; r++) {
      await dp.trainRound(r);
      counts.push(tf.memory().numTensors);
    }
    assert.equal(counts[2], counts[1], `tensors per round ${counts}`);
    const spent = dp.privacySpent()!;
    const n = datas[0].trainSamples;
    const steps = 3 * 2 * Math.ceil(n / 16);
    assert.equal(spent.steps, steps);
    const expected = epsilonFromRdp(DEFAULT_ORDERS_FOR_TEST, computeRdp(16 / n, 1.3, steps, DEFAULT_ORDERS_FOR_TEST), 1e-5).epsilon;
    assert.ok(Math.abs(spent.epsilon - expected) < 1e-9 && spent.epsilon > 0 && Number.isFinite(spent.epsilon));
    // Huge noise drowns the signal; no DP learns.
    const loud = mk(1000);
    const clean = mk();
    for (let r = 1; r <= 3; r++) {
      await loud.trainRound(r);
      await clean.trainRound(r);
    }
    assert.ok(clean.evaluate().accuracy > 0.8);
    assert.ok(loud.evaluate().accuracy < clean.evaluate().accuracy - 0.2, `noisy ${loud.evaluate().accuracy} vs clean ${clean.evaluate().accuracy}`);
    assert.equal(clean.privacySpent(), undefined);
    [dp, loud, clean].forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });
});

describe('DP-SGD over libp2p', function () {
  this.timeout(240000);

  it('a consortium of processes reports the epsilon the in-memory simulator reports for the same run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-dp-'));
    const args = [
      '--dataset',
      'breast-cancer',
      '--peers',
      '2',
      '--partition',
      'iid',
      '--rounds',
      '2',
      '--algorithms',
      'dflmoe,local',
      '--seed',
      '3',
      '--dp-noise',
      '1.1',
      '--dp-clip',
      '1',
    ];
    // The consortium's processes and the in-memory run of the same settings at the same time.
    const running = cliAsync(['simulate', ...args, '--transport', 'tcp', '--deadline', '20000', '--quiet', '--out', dir]);
    await backend();
    const mem = await simulate(
      {
        dataset: 'breast-cancer',
        peers: 2,
        partition: 'iid',
        rounds: 2,
        algorithms: ['dflmoe', 'local'],
        seed: 3,
        dp: { noiseMultiplier: 1.1, clipNorm: 1 },
      },
      { logger: silentLogger },
    );
    const r = await running;
    assert.equal(r.status, 0, r.stderr);
    const tcp = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as SimulationResults;
    for (const alg of ['dflmoe', 'local'] as const) {
      const a = tcp.algorithms[alg]!.peers.map((p) => p.privacy);
      const b = mem.algorithms[alg]!.peers.map((p) => p.privacy);
      assert.equal(a.length, 2);
      a.forEach((p, i) => {
        assert.ok(p && b[i], `${alg} site ${i}: privacy reported by both`);
        assert.ok(p.epsilon > 0 && Number.isFinite(p.epsilon), `${alg}: epsilon ${p.epsilon}`);
        assert.equal(p.steps, b[i]!.steps, `${alg} site ${i}: DP steps`);
        assert.ok(Math.abs(p.epsilon - b[i]!.epsilon) < 1e-9, `${alg} site ${i}: epsilon over TCP ${p.epsilon}, in memory ${b[i]!.epsilon}`);
        assert.equal(p.delta, b[i]!.delta);
      });
    }
  });
});
