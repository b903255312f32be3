import assert from 'node:assert/strict';
import { RdpAccountant, computeRdp, epsilonFromRdp, noiseForEpsilon, rdpSampledGaussian } from '@dflmoe/core';

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
    const r = epsilonFromRdp(orders, orders.map(() => 1.1), 1e-5);
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
