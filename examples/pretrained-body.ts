/**
 * Three labs with little data each start from a body pretrained on public
 * data, keep it frozen, and train only their heads, gates and transforms,
 * sharing heads as usual.
 *
 * The "public" data here is the digits images that none of the labs holds.
 * In practice it would be a public dataset of the same kind of input.
 *
 *   node --import tsx examples/pretrained-body.ts
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryHub, createLearner, pretrainBody } from '@dflmoe/core';
import { loadDataset, partition, subsampleRows, takeRows } from '@dflmoe/data';

const all = loadDataset('digits');
// The labs' data: 450 images, 150 per lab. Everything else is public.
const labRows = subsampleRows(all.numSamples, 450, 1);
const bodyDir = join(mkdtempSync(join(tmpdir(), 'dflmoe-example-')), 'public-body');
const pre = await pretrainBody(all, bodyDir, {
  body: 'mlp:64',
  featureDim: 32,
  epochs: 10,
  batchSize: 32,
  learningRate: 3e-3,
  optimizer: 'adam',
  seed: 1,
  exclude: labRows,
});
console.log(`public body: ${pre.trainRows} images, held-out accuracy ${(pre.accuracy * 100).toFixed(1)}%, written to ${bodyDir}`);

const labs = takeRows(all, labRows);
const splits = partition(labs.labels, labs.classNames.length, 3, 'dirichlet:0.5', { seed: 7 });
const hub = new MemoryHub();
const names = ['lab-a', 'lab-b', 'lab-c'];
const sites = await Promise.all(
  names.map((id, i) =>
    createLearner({
      id,
      dataset: labs,
      split: splits[i],
      // Inputs are standardized with the statistics stored beside the body.
      model: { body: 'mlp:64', featureDim: 32, pretrainedBody: bodyDir, freezeBody: true },
      train: { epochs: 2, seed: i, learningRate: 0.01 },
      exchange: hub.join(id),
    }),
  ),
);

for (let round = 1; round <= 4; round++) {
  for (const site of sites) {
    const m = await site.runRound();
    console.log(`round ${round} ${site.id}: accuracy ${(m.accuracy * 100).toFixed(1)}%  experts ${m.experts.length}`);
  }
}
sites.forEach((s) => s.dispose());
