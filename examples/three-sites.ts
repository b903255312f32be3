/**
 * Three hospitals in one process: each trains on its own share of the
 * breast-cancer data, shares only its head, and mixes the heads it receives.
 *
 *   node --import tsx examples/three-sites.ts
 */
import { MemoryHub, createLearner } from '@dflmoe/core';
import { featureSize, loadDataset, partition, pooledStandardizer } from '@dflmoe/data';

const ds = loadDataset('breast-cancer');
const splits = partition(ds.labels, ds.classNames.length, 3, 'dirichlet:0.5', { seed: 7 });
// Feature statistics the consortium agreed on (per-feature means and standard
// deviations of the training data: aggregates, not records).
const standardizer = pooledStandardizer(ds.features, featureSize(ds), splits);

const hub = new MemoryHub(); // stands in for the network; `dflmoe peer` uses libp2p
const names = ['hospital-a', 'hospital-b', 'hospital-c'];
const sites = await Promise.all(
  names.map((id, i) =>
    createLearner({
      id,
      dataset: ds,
      split: splits[i],
      standardizer,
      model: { body: 'mlp:64', featureDim: 32 },
      train: { epochs: 2, seed: i },
      exchange: hub.join(id),
    }),
  ),
);

for (let round = 1; round <= 6; round++) {
  for (const site of sites) {
    const m = await site.runRound();
    const experts = m.experts.map((e) => `${e.peer}@v${e.version} (gate ${e.gateWeight.toFixed(2)})`).join(', ') || 'none yet';
    console.log(`round ${round} ${site.id}: accuracy ${(m.accuracy * 100).toFixed(1)}%  experts: ${experts}`);
  }
}
sites.forEach((s) => s.dispose());
