/**
 * Renyi-DP accountant for the sampled Gaussian mechanism (DP-SGD).
 *
 * For an integer order `a`, one step with sampling rate `q` and noise
 * multiplier `s` has RDP `log(A_a) / (a - 1)` with
 *   A_a = sum_k C(a,k) (1-q)^(a-k) q^k exp((k^2 - k) / (2 s^2))
 * (Mironov, Talwar, Zhang, "Renyi Differential Privacy of the Sampled
 * Gaussian Mechanism", 2019). RDP adds up over steps. It converts to
 * (epsilon, delta) with the bound of Canonne, Kamath and Steinke (2020),
 * as the Google dp_accounting library does:
 *   eps = min_a  rdp(a) + log((a-1)/a) - (log(delta) + log(a)) / (a-1).
 * Only integer orders are used: the bound stays valid, if slightly looser
 * than with fractional orders. The bound holds for Poisson sampling, which
 * is how DP training draws its batches (`poissonSample`).
 */
import { randomFillSync } from 'node:crypto';
export const DEFAULT_ORDERS: number[] = [...Array.from({ length: 63 }, (_, i) => i + 2), 80, 96, 128, 160, 192, 256];

function logAdd(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const m = Math.max(a, b);
  return m + Math.log(Math.exp(a - m) + Math.exp(b - m));
}

function logBinomial(n: number, k: number): number {
  let s = 0;
  for (let i = 1; i <= k; i++) s += Math.log(n - k + i) - Math.log(i);
  return s;
}

/** RDP of one step of the sampled Gaussian mechanism at integer order `order`. */
export function rdpSampledGaussian(q: number, noiseMultiplier: number, order: number): number {
  if (!Number.isInteger(order) || order < 2) throw new RangeError(`RDP order must be an integer >= 2, got ${order}`);
  if (!(q >= 0 && q <= 1)) throw new RangeError(`sampling rate must be in [0, 1], got ${q}`);
  if (q === 0) return 0;
  if (noiseMultiplier === 0) return Infinity;
  const s2 = noiseMultiplier * noiseMultiplier;
  if (q === 1) return order / (2 * s2);
  let logA = -Infinity;
  const lq = Math.log(q);
  const l1q = Math.log1p(-q);
  for (let k = 0; k <= order; k++) {
    logA = logAdd(logA, logBinomial(order, k) + k * lq + (order - k) * l1q + (k * k - k) / (2 * s2));
  }
  return logA / (order - 1);
}

/** RDP over `steps` steps, per order. */
export function computeRdp(q: number, noiseMultiplier: number, steps: number, orders: number[] = DEFAULT_ORDERS): number[] {
  return orders.map((a) => steps * rdpSampledGaussian(q, noiseMultiplier, a));
}

/** Smallest epsilon for `delta` over the given orders, and the order that gives it. */
export function epsilonFromRdp(orders: number[], rdp: number[], delta: number): { epsilon: number; order: number } {
  if (!(delta > 0 && delta < 1)) throw new RangeError(`delta must be in (0, 1), got ${delta}`);
  let best = { epsilon: Infinity, order: NaN };
  orders.forEach((a, i) => {
    if (a <= 1 || !Number.isFinite(rdp[i])) return;
    const eps = Math.max(0, rdp[i] + Math.log((a - 1) / a) - (Math.log(delta) + Math.log(a)) / (a - 1));
    if (eps < best.epsilon) best = { epsilon: eps, order: a };
  });
  return best;
}

/** Accumulates the privacy spent by DP-SGD steps, possibly with changing parameters. */
export class RdpAccountant {
  private rdp: number[];
  steps = 0;

  constructor(readonly orders: number[] = DEFAULT_ORDERS) {
    this.rdp = orders.map(() => 0);
  }

  /** Record `steps` steps with sampling rate `q` and noise multiplier `noiseMultiplier`. */
  compose(q: number, noiseMultiplier: number, steps = 1): void {
    const add = computeRdp(q, noiseMultiplier, steps, this.orders);
    this.rdp = this.rdp.map((r, i) => r + add[i]);
    this.steps += steps;
  }

  epsilon(delta: number): number {
    return epsilonFromRdp(this.orders, this.rdp, delta).epsilon;
  }

  state(): { orders: number[]; rdp: number[]; steps: number } {
    return { orders: [...this.orders], rdp: [...this.rdp], steps: this.steps };
  }

  /** Replace this accountant's totals with saved ones (from `state()`). */
  restore(s: { orders: number[]; rdp: number[]; steps: number }): void {
    if (s.orders.join() !== this.orders.join()) throw new Error('saved privacy accountant uses other RDP orders');
    this.rdp = [...s.rdp];
    this.steps = s.steps;
  }

  static fromState(s: { orders: number[]; rdp: number[]; steps: number }): RdpAccountant {
    const a = new RdpAccountant(s.orders);
    a.restore(s);
    return a;
  }
}

/** The noise multiplier that spends about `targetEpsilon` over `steps` steps at rate `q` (bisection). */
export function noiseForEpsilon(targetEpsilon: number, q: number, steps: number, delta: number): number {
  let lo = 0.05;
  let hi = 200;
  const eps = (s: number) => epsilonFromRdp(DEFAULT_ORDERS, computeRdp(q, s, steps), delta).epsilon;
  if (eps(hi) > targetEpsilon) throw new Error(`epsilon ${targetEpsilon} is out of reach for q=${q}, ${steps} steps`);
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (eps(mid) > targetEpsilon) lo = mid;
    else hi = mid;
  }
  return hi;
}

/**
 * One Poisson-sampled batch: each of `n` examples independently with
 * probability `q`, drawn from node:crypto. Indices in increasing order.
 */
export function poissonSample(n: number, q: number): Int32Array {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`sampling rate must be in [0, 1], got ${q}`);
  const u = randomFillSync(new Uint32Array(n));
  const limit = q * 2 ** 32;
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (u[i] < limit) out.push(i);
  return Int32Array.from(out);
}

/** `size` independent N(0, 1) draws from node:crypto (Box-Muller on 32-bit uniforms). */
export function secureGaussian(size: number): Float32Array {
  const out = new Float32Array(size);
  const u = randomFillSync(new Uint32Array(2 * Math.ceil(size / 2)));
  for (let i = 0; i < size; i += 2) {
    const u1 = (u[i] + 1) / (2 ** 32 + 1); // in (0, 1): log(u1) is finite
    const u2 = u[i + 1] / 2 ** 32;
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < size) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}
