/**
 * Sites with different body architectures: an MLP at even sites, a small CNN
 * at odd ones, all producing 32 features. dFLMoE mixes their heads; FedAvg
 * cannot average different models, so the comparison is with local-only.
 *
 *   node --import tsx examples/heterogeneous-bodies.ts
 */
import { simulate } from '@dflmoe/core';

const results = await simulate({
  dataset: 'digits',
  peers: 4,
  partition: 'dirichlet:0.5',
  rounds: 5,
  epochs: 2,
  bodies: ['mlp:128', 'cnn:8x16'],
  featureDim: 32,
  algorithms: ['dflmoe', 'local'],
});

for (const [name, r] of Object.entries(results.algorithms)) {
  console.log(`\n${name}: mean accuracy ${(r!.accuracy.mean * 100).toFixed(2)}%`);
  for (const p of r!.peers) console.log(`  ${p.id} (${p.body}): ${(p.accuracy * 100).toFixed(2)}%`);
}
