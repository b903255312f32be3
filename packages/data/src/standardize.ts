/** Per-feature standardization fitted on training rows only. */
export interface Standardizer {
  /** Per-feature mean (subtracted). */
  mean: Float32Array;
  /** Per-feature standard deviation (divided by; 1 for a constant feature). */
  std: Float32Array;
}

/** Mean and standard deviation of each feature over `rows`; constant features get std 1. */
export function fitStandardizer(features: Float32Array, dim: number, rows: ArrayLike<number>): Standardizer {
  const mean = new Float64Array(dim);
  const sq = new Float64Array(dim);
  for (let i = 0; i < rows.length; i++) {
    const off = rows[i] * dim;
    for (let j = 0; j < dim; j++) mean[j] += features[off + j];
  }
  for (let j = 0; j < dim; j++) mean[j] /= Math.max(1, rows.length);
  for (let i = 0; i < rows.length; i++) {
    const off = rows[i] * dim;
    for (let j = 0; j < dim; j++) {
      const d = features[off + j] - mean[j];
      sq[j] += d * d;
    }
  }
  const std = new Float32Array(dim);
  for (let j = 0; j < dim; j++) {
    const s = Math.sqrt(sq[j] / Math.max(1, rows.length));
    std[j] = s > 1e-6 ? s : 1;
  }
  return { mean: Float32Array.from(mean), std };
}

/**
 * Gather `rows` and standardize them into `out` (default: a new
 * `rows.length * dim` array). `out` may be `features` itself when row i is
 * `rows[i]` (standardizing in place).
 */
export function applyStandardizer(
  features: Float32Array,
  dim: number,
  rows: ArrayLike<number>,
  st: Standardizer,
  out: Float32Array = new Float32Array(rows.length * dim),
): Float32Array {
  for (let i = 0; i < rows.length; i++) {
    const off = rows[i] * dim;
    for (let j = 0; j < dim; j++) out[i * dim + j] = (features[off + j] - st.mean[j]) / st.std[j];
  }
  return out;
}

/**
 * Statistics pooled over every peer's training rows: what a consortium gets
 * from one exchange of per-feature sums (never test rows).
 */
export function pooledStandardizer(features: Float32Array, dim: number, splits: { train: Int32Array }[]): Standardizer {
  return fitStandardizer(features, dim, Int32Array.from(splits.flatMap((s) => [...s.train])));
}
