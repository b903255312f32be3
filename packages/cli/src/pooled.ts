/**
 * Pooled test accuracy for a consortium of processes: each site's trained
 * model, loaded from its out directory as `dflmoe predict` loads it, on the
 * test rows of every site together: the figure the in-memory simulator
 * reports as `pooledAccuracy` (what a site knows beyond its own data).
 */
import { loadSite, silentLogger } from '@dflmoe/core';
import { featureSize, type Dataset, type PeerSplit } from '@dflmoe/data';

/** Each site's accuracy on the pooled test rows of `splits` (raw rows of `ds`; the site standardizes them as it trained). */
export async function pooledAccuracies(siteDirs: string[], ds: Dataset, splits: PeerSplit[]): Promise<number[]> {
  const rows = splits.flatMap((s) => [...s.test]);
  const d = featureSize(ds);
  const x = new Float32Array(rows.length * d);
  rows.forEach((r, i) => x.set(ds.features.subarray(r * d, (r + 1) * d), i * d));
  const accs: number[] = [];
  for (const dir of siteDirs) {
    const site = await loadSite(dir, { logger: silentLogger });
    try {
      // Classes by name: a site's agreed classes are the dataset's, but need not be in its order.
      const index = new Map(site.classNames.map((c, k) => [c, k]));
      const p = site.predict(x);
      let right = 0;
      rows.forEach((r, i) => (right += p.predicted[i] === index.get(ds.classNames[ds.labels[r]]) ? 1 : 0));
      accs.push(right / rows.length);
    } finally {
      site.dispose();
    }
  }
  return accs;
}
