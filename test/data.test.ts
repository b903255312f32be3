import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  DataError,
  DEFAULT_FASHION_MNIST_DIR,
  applyStandardizer,
  featureSize,
  fitStandardizer,
  labelHistogram,
  loadDataset,
  makeSynthetic,
  parseIdx,
  parsePartition,
  partition,
  partitionHistograms,
  type Dataset,
  type PeerSplit,
} from '@dflmoe/data/internal';

function checkDataset(ds: Dataset, n: number, shape: number[], classes: number) {
  assert.equal(ds.numSamples, n);
  assert.deepEqual(ds.sampleShape, shape);
  assert.equal(ds.features.length, n * featureSize(ds));
  assert.equal(ds.labels.length, n);
  assert.equal(ds.classNames.length, classes);
  assert.ok(ds.features.every(Number.isFinite), 'no NaN or infinity');
  const seen = new Set(ds.labels);
  assert.equal(seen.size, classes, 'every class present');
  for (const l of seen) assert.ok(l >= 0 && l < classes);
  assert.ok(ds.description.length > 10 && ds.source.length > 5);
}

function tmpFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'dflmoe-data-'));
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('datasets', () => {
  it('breast-cancer: 569 x 30, two classes, citation', () => {
    const ds = loadDataset('breast-cancer');
    checkDataset(ds, 569, [30], 2);
    assert.deepEqual(ds.classNames, ['benign', 'malignant']);
    assert.equal(
      labelHistogram(
        ds.labels,
        Array.from({ length: 569 }, (_, i) => i),
        2,
      ).join(),
      '357,212',
    );
    assert.match(ds.source, /CC BY 4\.0/);
  });

  it('digits: 1797 8x8 images, ten classes', () => {
    const ds = loadDataset('digits');
    checkDataset(ds, 1797, [8, 8, 1], 10);
    assert.equal(Math.max(...ds.features), 16);
  });

  it('fashion-mnist: 70000 28x28 images in [0, 1]', function () {
    if (!existsSync(DEFAULT_FASHION_MNIST_DIR) && !process.env.CI) this.skip();
    const ds = loadDataset('fashion-mnist');
    checkDataset(ds, 70000, [28, 28, 1], 10);
    let max = 0;
    for (const v of ds.features) if (v > max) max = v;
    assert.ok(max <= 1 && max > 0.99);
  });

  it('fashion-mnist: a missing directory says how to get the files', () => {
    assert.throws(
      () => loadDataset('fashion-mnist:/nonexistent/dir'),
      (e: Error) => e instanceof DataError && /apt-get install dataset-fashion-mnist/.test(e.message),
    );
    const empty = mkdtempSync(join(tmpdir(), 'dflmoe-fm-'));
    assert.throws(() => loadDataset(`fashion-mnist:${empty}`), /train-images-idx3-ubyte.*not found/);
  });

  it('idx: truncated files are rejected with a clear error', () => {
    const buf = new Uint8Array([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3]);
    assert.throws(() => parseIdx(buf, 'labels'), /promises 5 values but the file holds 3/);
    assert.deepEqual(parseIdx(new Uint8Array([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]), 'x').dims, [2]);
    assert.throws(() => parseIdx(new Uint8Array([1, 2, 3, 4, 5]), 'x'), /not an IDX file/);
  });

  it('synthetic: seeded, sized by the caller', () => {
    const a = loadDataset('synthetic:classes=5,dim=7,samples=300', { seed: 3 });
    checkDataset(a, 300, [7], 5);
    const b = makeSynthetic({ classes: 5, dim: 7, samples: 300, seed: 3 });
    assert.deepEqual(a.features, b.features);
    const c = makeSynthetic({ classes: 5, dim: 7, samples: 300, seed: 4 });
    assert.notDeepEqual(a.features, c.features);
    assert.throws(() => loadDataset('synthetic:classes=x'), /key=number/);
  });

  it('csv: loads a user table with a named label column', () => {
    const p = tmpFile('t.csv', 'a,b,kind\n1,2,cat\n3,4.5,dog\n\n5,6,cat\n');
    const ds = loadDataset(`csv:${p}`, { labelColumn: 'kind' });
    checkDataset(ds, 3, [2], 2);
    assert.deepEqual(Array.from(ds.features), [1, 2, 3, 4.5, 5, 6]);
    assert.deepEqual(ds.classNames, ['cat', 'dog']);
  });

  it('csv: numeric labels sort numerically', () => {
    const p = tmpFile('t.csv', 'x,label\n1,10\n2,9\n3,10\n');
    assert.deepEqual(loadDataset(`csv:${p}`).classNames, ['9', '10']);
  });

  it('csv: malformed rows name the line', () => {
    const p1 = tmpFile('bad.csv', 'a,b,label\n1,2,x\n3,oops,y\n');
    assert.throws(
      () => loadDataset(`csv:${p1}`),
      (e: Error) => e instanceof DataError && /line 3/.test(e.message) && /column "b"/.test(e.message) && /oops/.test(e.message),
    );
    const p2 = tmpFile('bad2.csv', 'a,b,label\n1,2,x\n3,4,y\n5,6\n');
    assert.throws(
      () => loadDataset(`csv:${p2}`),
      (e: Error) => e instanceof DataError && /line 4/.test(e.message),
    );
    // An empty cell is a missing value, not an error (see data-csv.test.ts): imputed, with an indicator.
    const p3 = tmpFile('bad3.csv', 'a,b,label\n1,,x\n3,4,y\n');
    assert.deepEqual(Array.from(loadDataset(`csv:${p3}`).features), [1, 4, 1, 3, 4, 0]);
  });

  it('csv: missing file, missing label column and single class are clear errors', () => {
    assert.throws(() => loadDataset('csv:/no/such/file.csv'), /CSV file not found/);
    const p = tmpFile('t.csv', 'a,b\n1,2\n');
    assert.throws(() => loadDataset(`csv:${p}`), /no label column "label".*Columns are: a, b/);
    const q = tmpFile('t.csv', 'a,label\n1,x\n2,x\n');
    assert.throws(() => loadDataset(`csv:${q}`), /single class/);
  });

  it('unknown dataset names list the choices', () => {
    assert.throws(() => loadDataset('mnist'), /Unknown dataset "mnist".*breast-cancer/);
  });
});

function allRows(splits: PeerSplit[]): number[] {
  return splits.flatMap((s) => [...s.train, ...s.test]);
}

function classesHeld(labels: Int32Array, s: PeerSplit, numClasses: number): number {
  const h = labelHistogram(labels, [...s.train, ...s.test], numClasses);
  return h.filter((c) => c > 0).length;
}

describe('partitions', () => {
  const digits = loadDataset('digits');

  it('parses specs and rejects bad ones', () => {
    assert.deepEqual(parsePartition('dirichlet:0.3'), { kind: 'dirichlet', alpha: 0.3 });
    assert.deepEqual(parsePartition('shards:2'), { kind: 'shards', k: 2 });
    for (const bad of ['dirichlet', 'dirichlet:-1', 'shards:1.5', 'pathological', 'iid:3']) {
      assert.throws(() => parsePartition(bad), DataError, bad);
    }
  });

  for (const spec of ['iid', 'dirichlet:0.5', 'dirichlet:0.1', 'shards:2']) {
    it(`${spec}: disjoint, seeded, reproducible`, () => {
      const a = partition(digits.labels, 10, 10, spec, { seed: 1 });
      const b = partition(digits.labels, 10, 10, spec, { seed: 1 });
      const c = partition(digits.labels, 10, 10, spec, { seed: 2 });
      assert.deepEqual(a, b);
      assert.notDeepEqual(a, c);
      const rows = allRows(a);
      assert.equal(new Set(rows).size, rows.length, 'no sample used twice');
      assert.ok(rows.every((r) => r >= 0 && r < digits.numSamples));
      for (const s of a) {
        assert.ok(s.train.length + s.test.length >= 10);
        assert.ok(s.test.length >= 1);
        const share = s.test.length / (s.train.length + s.test.length);
        assert.ok(share > 0.1 && share < 0.3, `test share ${share}`);
        // The test split follows the peer's own distribution: no class in test that is absent from train.
        const tr = labelHistogram(digits.labels, s.train, 10);
        const te = labelHistogram(digits.labels, s.test, 10);
        te.forEach((v, k) => assert.ok(v === 0 || tr[k] > 0, `class ${k} only in test`));
      }
    });
  }

  it('iid uses every sample and gives every peer every class', () => {
    const s = partition(digits.labels, 10, 5, 'iid', { seed: 4 });
    assert.equal(allRows(s).length, digits.numSamples);
    for (const p of s) assert.equal(classesHeld(digits.labels, p, 10), 10);
  });

  it('dirichlet:0.1 leaves most peers with few classes; dirichlet:100 with all', () => {
    const skew = partition(digits.labels, 10, 10, 'dirichlet:0.1', { seed: 1 });
    const held = skew.map((p) => {
      const h = labelHistogram(digits.labels, [...p.train, ...p.test], 10);
      const n = h.reduce((a, b) => a + b, 0);
      return h.filter((c) => c / n >= 0.05).length; // classes making up at least 5% of the peer
    });
    held.sort((a, b) => a - b);
    assert.ok(held[5] <= 3, `median classes per peer at alpha 0.1: ${held}`);
    const flat = partition(digits.labels, 10, 10, 'dirichlet:100', { seed: 1 });
    for (const p of flat) assert.equal(classesHeld(digits.labels, p, 10), 10);
  });

  it('shards:2 gives every peer exactly 2 classes', () => {
    for (const peers of [3, 5, 10, 20]) {
      const s = partition(digits.labels, 10, peers, 'shards:2', { seed: 7 });
      for (const p of s) assert.equal(classesHeld(digits.labels, p, 10), 2);
    }
    assert.throws(() => partition(digits.labels, 10, 4, 'shards:11', { seed: 1 }), /only 10 classes/);
  });

  it('enforces a minimum size per site', () => {
    assert.throws(() => partition(digits.labels, 10, 200, 'iid', { seed: 1, minSize: 10 }), /cannot give 200 sites at least 10 each: use fewer sites/);
    const s = partition(digits.labels, 10, 20, 'dirichlet:0.1', { seed: 3, minSize: 25 });
    for (const p of s) assert.ok(p.train.length + p.test.length >= 25);
  });

  it('partitionHistograms sums to the samples each peer holds', () => {
    const s = partition(digits.labels, 10, 4, 'dirichlet:0.5', { seed: 9 });
    partitionHistograms(digits.labels, s, 10).forEach((h, i) =>
      assert.equal(
        h.reduce((a, b) => a + b, 0),
        s[i].train.length + s[i].test.length,
      ),
    );
  });

  it('property: any labels, peers and seed give a disjoint partition of valid rows', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 60, maxLength: 300 }),
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom('iid', 'dirichlet:0.3', 'dirichlet:2', 'shards:1', 'shards:2'),
        fc.integer(),
        (ls, peers, spec, seed) => {
          const labels = Int32Array.from(ls);
          let s: PeerSplit[];
          try {
            s = partition(labels, 5, peers, spec, { seed, minSize: 4 });
          } catch (e) {
            // Impossible requests must fail with a DataError, never anything else.
            if (e instanceof DataError) return true;
            throw e;
          }
          const rows = allRows(s);
          return new Set(rows).size === rows.length && rows.every((r) => r >= 0 && r < labels.length) && s.length === peers;
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('standardization', () => {
  it('uses statistics of the training rows only', () => {
    const ds = makeSynthetic({ classes: 3, dim: 4, samples: 90, seed: 2 });
    const train = Array.from({ length: 60 }, (_, i) => i);
    const st = fitStandardizer(ds.features, 4, train);
    const x = applyStandardizer(ds.features, 4, train, st);
    for (let j = 0; j < 4; j++) {
      let m = 0;
      let v = 0;
      for (let i = 0; i < 60; i++) m += x[i * 4 + j] / 60;
      for (let i = 0; i < 60; i++) v += (x[i * 4 + j] - m) ** 2 / 60;
      assert.ok(Math.abs(m) < 1e-5 && Math.abs(v - 1) < 1e-4);
    }
    // Changing test rows does not change the fitted statistics.
    const f2 = ds.features.slice();
    for (let i = 60 * 4; i < f2.length; i++) f2[i] = 1000;
    assert.deepEqual(fitStandardizer(f2, 4, train), st);
    // A constant feature gets std 1 rather than a division by zero.
    const c = fitStandardizer(new Float32Array([5, 5, 5]), 1, [0, 1, 2]);
    assert.equal(c.std[0], 1);
  });
});
