/** Summaries of per-peer accuracy: mean, std, min, and the sample-weighted mean. */
export interface AccuracySummary {
  /** Unweighted mean over the peers. */
  mean: number;
  /** Population standard deviation over the peers. */
  std: number;
  /** The lowest peer's value. */
  min: number;
  /** The highest peer's value. */
  max: number;
  /** Mean weighted by each peer's number of test samples. */
  weightedMean: number;
}

export function summarize(values: number[], weights?: number[]): AccuracySummary {
  const n = values.length;
  if (n === 0) return { mean: NaN, std: NaN, min: NaN, max: NaN, weightedMean: NaN };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / n);
  const w = weights ?? values.map(() => 1);
  const tw = w.reduce((a, b) => a + b, 0);
  const weightedMean = tw > 0 ? values.reduce((a, v, i) => a + v * w[i], 0) / tw : mean;
  return { mean, std, min: Math.min(...values), max: Math.max(...values), weightedMean };
}
