/**
 * The library path for real sites, in one process: each site reads its own
 * CSV file (categorical and missing cells) or image folder, the statements
 * are reconciled, every site trains a dFLMoE learner on its encoded rows,
 * and `learner.predict` / `learner.evaluate` use the model.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { MemoryHub, createLearner, disposePeerData, inputFlags, preparePeerData, takePeerData, type DflmoeLearner } from '@dflmoe/core/internal';
import {
  encodeSiteData,
  fitStandardizer,
  loadDataset,
  loadSiteData,
  partition,
  readInputs,
  readShare,
  reconcileStatements,
  siteStatement,
  writeShare,
  type SiteDataSpec,
} from '@dflmoe/data/internal';
import { backend } from './helpers.js';
import { PATIENT_HEADER, imageFolder, patientsCsv, tmpDir, writeText } from './fixtures/sites.js';

/** Read, agree, encode and build one learner per site; run `rounds` rounds together. */
async function consortium(specs: SiteDataSpec[], rounds: number, model: { body: string; featureDim: number }) {
  const datas = await Promise.all(specs.map(loadSiteData));
  const { agreed } = reconcileStatements(datas.map((d, i) => siteStatement(d, `s${i}`)));
  const hub = new MemoryHub({ lockstep: true });
  const learners: DflmoeLearner[] = [];
  for (const [i, d] of datas.entries()) {
    const { dataset, split, standardizer } = encodeSiteData(d, agreed, 'federated');
    learners.push(
      await createLearner({
        id: `s${i}`,
        dataset,
        split,
        standardizer,
        model,
        train: { seed: i, learningRate: 0.01 },
        exchange: hub.join(`s${i}`),
        quorum: specs.length - 1,
        roundDeadlineMs: 10000,
      }),
    );
  }
  for (let r = 0; r < rounds; r++) await Promise.all(learners.map((l) => l.runRound()));
  return { agreed, learners };
}

describe('real sites in one process (library)', function () {
  this.timeout(120000);
  before(backend);

  it('CSV files with categorical and missing cells train, and learner.predict reads new rows', async () => {
    const dir = tmpDir();
    const spec = (i: number, o: Parameters<typeof patientsCsv>[0]): SiteDataSpec => ({
      dataset: `csv:${writeText(join(dir, `${i}.csv`), patientsCsv(o))}`,
      labelColumn: 'diagnosis',
      drop: ['id'],
      seed: 1,
      testFraction: 0.25,
    });
    const t0 = tf.memory().numTensors;
    const { agreed, learners } = await consortium(
      [
        spec(0, { seed: 21, rows: 200, missing: 0.2, wards: ['A', 'B'] }),
        spec(1, { seed: 22, rows: 160, missing: 0.05, wards: ['B', 'C'], header: [...PATIENT_HEADER].reverse() }),
      ],
      8,
      { body: 'mlp:32', featureDim: 16 },
    );
    try {
      assert.ok(agreed.featureNames.includes('age_missing') && agreed.featureNames.includes('smoker=never') && agreed.featureNames.includes('ward=C'));
      for (const l of learners) {
        const e = l.evaluate();
        assert.ok(e.accuracy > 0.8, `accuracy ${e.accuracy}`);
        assert.equal(
          e.confusion.flat().reduce((a, b) => a + b, 0),
          e.samples,
        );
        assert.equal(e.recall.length, 2);
      }
      const fresh = writeText(join(dir, 'fresh.csv'), patientsCsv({ seed: 23, rows: 30, missing: 0.3, wards: ['A', 'Z'], unlabelled: true }));
      const x = await readInputs(fresh, agreed, { kind: 'table', labelColumn: 'diagnosis' }, { labels: 'optional' });
      const p = learners[0].predict(x.features);
      assert.equal(p.numSamples, 30);
      assert.deepEqual(p.classNames, ['benign', 'malignant']);
      assert.deepEqual(p.experts, ['s0', 's1'], 'own head first, then the received one');
      for (let i = 0; i < 30; i++) {
        assert.ok(Math.abs(p.probabilities[2 * i] + p.probabilities[2 * i + 1] - 1) < 1e-5);
        assert.ok(Math.abs(p.gateWeights[2 * i] + p.gateWeights[2 * i + 1] - 1) < 1e-5);
        assert.equal(p.predicted[i], p.probabilities[2 * i + 1] > p.probabilities[2 * i] ? 1 : 0);
      }
      // The same rows through evaluate with made-up labels: the confusion matrix counts them by predicted class.
      const e = learners[0].evaluate(x.features, Array.from(p.predicted));
      assert.equal(e.accuracy, 1);
      // Plain arrays predict as the Float32Array does (one array per sample, or row-major numbers).
      const d = agreed.featureNames.length;
      const rows = Array.from({ length: 3 }, (_, i) => Array.from(x.features.subarray(i * d, (i + 1) * d)));
      const fromRows = learners[0].predict(rows);
      assert.deepEqual(fromRows.probabilities, learners[0].predict(x.features.subarray(0, 3 * d)).probabilities);
      assert.deepEqual(learners[0].predict(rows.flat()).probabilities, fromRows.probabilities);
      // A NaN is refused, naming the sample and feature, not predicted as if it were a value.
      const holed = x.features.slice(0, 2 * d);
      holed[d + 3] = NaN;
      assert.throws(() => learners[0].predict(holed), /^Error: sample 1, feature 3 is NaN: samples must be finite/);
      // Rows the model cannot see all of are flagged: ward "Z" (no site trained on it) and a row of missing cells only.
      const flagged = writeText(join(dir, 'flagged.csv'), 'id,age,bmi,smoker,sex,ward\nq1,60,25,never,F,A\nq2,61,27,former,M,Z\nq3,NA,,?,NA,\n');
      assert.deepEqual(inputFlags(flagged, agreed), ['', 'unseen ward="Z"', 'every feature missing']);
      assert.equal(inputFlags(writeText(join(dir, 'plain.csv'), 'id,age,bmi,smoker,sex,ward\nq1,60,25,never,F,A\n'), agreed), undefined);
    } finally {
      learners.forEach((l) => l.dispose());
    }
    assert.equal(tf.memory().numTensors, t0, 'every tensor freed');
  });

  it("a site process's own rows (a share, standardized in place, handed over as views) give exactly preparePeerData's tensors", () => {
    const ds = loadDataset('digits');
    const split = partition(ds.labels, 10, 4, 'dirichlet:0.5', { seed: 3 })[2];
    const file = join(tmpDir(), 'site.share');
    writeShare(file, ds, split, { dataset: 'digits', peers: 4, index: 2, partition: 'dirichlet:0.5', seed: 3 });
    const st = fitStandardizer(ds.features, 64, split.train);
    const copied = preparePeerData(ds, split, st);
    const share = readShare(file);
    const taken = takePeerData(share.dataset, share.split, st);
    try {
      for (const k of ['xTrain', 'yTrain', 'xTest', 'yTest'] as const) {
        assert.deepEqual(taken[k].shape, copied[k].shape, k);
        assert.deepEqual(taken[k].dataSync(), copied[k].dataSync(), k);
      }
      assert.deepEqual(taken.trainHistogram, copied.trainHistogram);
    } finally {
      disposePeerData(copied);
      disposePeerData(taken);
    }
  });

  it('image folders (generated PNG and JPEG files per class) train a CNN, and new images are predicted', async () => {
    const folders = await Promise.all([1, 2].map((seed) => imageFolder(tmpDir('dflmoe-img-'), { seed, perClass: 16, size: 12 })));
    const { agreed, learners } = await consortium(
      folders.map((f) => ({ dataset: `images:${f}`, seed: 1, testFraction: 0.25 })),
      6,
      { body: 'cnn:4', featureDim: 8 },
    );
    try {
      assert.deepEqual(agreed.schema.kind === 'tensor' && agreed.schema.shape, [12, 12, 1]);
      for (const l of learners) assert.ok(l.evaluate().accuracy >= 0.85, `accuracy ${l.evaluate().accuracy}`);
      const fresh = await imageFolder(tmpDir('dflmoe-img-'), { seed: 3, perClass: 4, size: 20 });
      const x = await readInputs(fresh, agreed, { kind: 'images' }, { labels: 'required' });
      const e = learners[1].evaluate(x.features, x.labels!);
      assert.equal(e.samples, 8);
      assert.ok(e.accuracy >= 0.75, `new images (resized from 20x20): ${e.accuracy}`);
    } finally {
      learners.forEach((l) => l.dispose());
    }
  });
});
