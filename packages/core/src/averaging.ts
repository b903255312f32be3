/**
 * Weighted averaging of models (or bodies), shared by the FedAvg server,
 * gossip and body sharing: a low-level module with no other imports of the
 * package, so that everything that averages can use it.
 */
import type { NamedArray } from './codec.js';

export const DEFAULT_MAX_SAMPLES = 2 ** 31;
export const DEFAULT_MAX_SAMPLE_RATIO = 10;

/**
 * Bound sample counts before a weighted average: each is clipped to
 * `ratio` times the median (so one client cannot own the average by what
 * it claims), and to `max`.
 */
export function boundSampleCounts(counts: number[], ratio = DEFAULT_MAX_SAMPLE_RATIO, max = DEFAULT_MAX_SAMPLES): number[] {
  const sorted = [...counts].sort((a, b) => a - b);
  const median = sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : 0;
  const cap = Math.min(max, Math.max(1, Math.floor(ratio * median)));
  return counts.map((c) => Math.min(c, cap));
}

/** Average models weighted by sample count (all must share names and shapes). */
export function federatedAverage(models: { weights: NamedArray[]; samples: number }[]): NamedArray[] {
  if (models.length === 0) throw new Error('nothing to average');
  const total = models.reduce((a, m) => a + m.samples, 0);
  if (!(total > 0)) throw new Error('total sample count must be positive');
  return models[0].weights.map((w0, i) => {
    const data = new Float32Array(w0.data.length);
    for (const m of models) {
      const w = m.weights[i];
      if (!w || w.data.length !== data.length) throw new Error(`model tensor ${i} differs in size between clients`);
      const f = m.samples / total;
      for (let j = 0; j < data.length; j++) data[j] += f * w.data[j];
    }
    return { name: w0.name, shape: w0.shape, data };
  });
}
