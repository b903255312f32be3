/**
 * Bring your own model: three labs whose bodies are tfjs networks they wrote
 * themselves, each of another shape (a small CNN, an MLP with batch
 * normalization and dropout, a two-branch functional model). Every body
 * outputs the same number of features (`featureDim`), so the labs can still
 * exchange heads and mix them.
 *
 *   node --import tsx examples/custom-bodies.ts
 */
import * as tfl from '@tensorflow/tfjs-layers';
import { MemoryHub, createLearner, initBackend } from '@dflmoe/core';
import { loadDataset, partition } from '@dflmoe/data';

await initBackend(); // tfjs needs its backend before a layer is built

const ds = loadDataset('digits'); // 8x8 grayscale images
const featureDim = 32;

// A body is a tfjs LayersModel (each site trains its own copy of it)...
const cnn = tfl.sequential({
  layers: [
    tfl.layers.conv2d({ inputShape: [8, 8, 1], filters: 8, kernelSize: 3, padding: 'same', activation: 'relu' }),
    tfl.layers.maxPooling2d({ poolSize: 2 }),
    tfl.layers.flatten(),
    tfl.layers.dense({ units: featureDim, activation: 'relu' }),
  ],
});

// ...or a function that builds one from the input shape and the feature size.
const mlp = (inputShape: number[], features: number) =>
  tfl.sequential({
    layers: [
      tfl.layers.flatten({ inputShape }),
      tfl.layers.dense({ units: 64, activation: 'relu' }),
      tfl.layers.batchNormalization(),
      tfl.layers.dropout({ rate: 0.1 }),
      tfl.layers.dense({ units: features, activation: 'relu' }),
    ],
  });

function twoBranch(inputShape: number[], features: number): tfl.LayersModel {
  const input = tfl.input({ shape: inputShape });
  const flat = tfl.layers.flatten().apply(input) as tfl.SymbolicTensor;
  const wide = tfl.layers.dense({ units: 48, activation: 'relu' }).apply(flat) as tfl.SymbolicTensor;
  const narrow = tfl.layers.dense({ units: 16, activation: 'tanh' }).apply(flat) as tfl.SymbolicTensor;
  const joined = tfl.layers.concatenate().apply([wide, narrow]) as tfl.SymbolicTensor;
  const out = tfl.layers.dense({ units: features, activation: 'relu' }).apply(joined) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: out });
}

const labs = [
  { id: 'lab-cnn', body: cnn },
  { id: 'lab-mlp', body: mlp },
  { id: 'lab-branches', body: twoBranch },
];
const splits = partition(ds.labels, ds.classNames.length, labs.length, 'dirichlet:0.5', { seed: 7 });
const hub = new MemoryHub();
const sites = await Promise.all(
  labs.map((lab, i) =>
    createLearner({
      id: lab.id,
      dataset: ds,
      split: splits[i],
      model: { body: lab.body, featureDim },
      train: { epochs: 2, seed: i, learningRate: 0.005 },
      exchange: hub.join(lab.id),
    }),
  ),
);

for (let round = 1; round <= 5; round++) {
  for (const site of sites) {
    const m = await site.runRound();
    console.log(`round ${round} ${site.id} (${site.body.layers.length} layers): accuracy ${(m.accuracy * 100).toFixed(1)}%  experts ${m.experts.length}`);
  }
}
sites.forEach((s) => s.dispose());
