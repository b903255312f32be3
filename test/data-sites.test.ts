import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  DataError,
  applyFeatureShift,
  capTrainPerSite,
  featureSize,
  holdoutSplit,
  labelHistogram,
  loadDataset,
  makeSynthetic,
  partition,
  rotateImage,
  shiftDatasetBySite,
  siteShift,
  type PeerSplit,
} from '@dflmoe/data/internal';

const digits = loadDataset('digits');

describe('capTrainPerSite', () => {
  const splits = partition(digits.labels, 10, 5, 'dirichlet:0.5', { seed: 3 });

  it("cuts training splits to n, keeps test splits, stays within one sample of each class's share", () => {
    const capped = capTrainPerSite(splits, digits.labels, 40, 1);
    capped.forEach((c, i) => {
      const s = splits[i];
      assert.deepEqual(c.test, s.test);
      assert.equal(c.train.length, Math.min(40, s.train.length));
      assert.equal(new Set(c.train).size, c.train.length, 'no row twice');
      const own = new Set(s.train);
      assert.ok(
        [...c.train].every((r) => own.has(r)),
        "only the site's own training rows",
      );
      const full = labelHistogram(digits.labels, s.train, 10);
      const cut = labelHistogram(digits.labels, c.train, 10);
      full.forEach((m, k) => {
        const quota = (40 * m) / s.train.length;
        assert.ok(Math.abs(cut[k] - quota) < 1, `site ${i} class ${k}: ${cut[k]} for a share of ${quota.toFixed(2)}`);
      });
    });
  });

  it('is seeded, and a smaller n keeps a subset of a larger n', () => {
    assert.deepEqual(capTrainPerSite(splits, digits.labels, 25, 7), capTrainPerSite(splits, digits.labels, 25, 7));
    assert.notDeepEqual(capTrainPerSite(splits, digits.labels, 25, 7), capTrainPerSite(splits, digits.labels, 25, 8));
    const sizes = [5, 20, 50, 100];
    const caps = sizes.map((n) => capTrainPerSite(splits, digits.labels, n, 7));
    for (let k = 1; k < sizes.length; k++) {
      caps[k].forEach((c, i) => {
        const bigger = new Set(c.train);
        assert.ok(
          [...caps[k - 1][i].train].every((r) => bigger.has(r)),
          `n=${sizes[k - 1]} within n=${sizes[k]} at site ${i}`,
        );
      });
    }
    // n at least the split size keeps every row.
    const all = capTrainPerSite(splits, digits.labels, 100000, 7);
    all.forEach((c, i) => assert.deepEqual(c.train, splits[i].train));
    assert.throws(() => capTrainPerSite(splits, digits.labels, 0, 1), DataError);
  });

  it('property: any labels and n give a stratified subset within quota', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 2, maxLength: 200 }), fc.integer({ min: 1, max: 200 }), fc.integer(), (ls, n, seed) => {
        const labels = Int32Array.from(ls);
        const split: PeerSplit = { train: Int32Array.from(labels.keys()), test: new Int32Array(0) };
        const [c] = capTrainPerSite([split], labels, n, seed);
        if (c.train.length !== Math.min(n, ls.length) || new Set(c.train).size !== c.train.length) return false;
        const full = labelHistogram(labels, split.train, 7);
        const cut = labelHistogram(labels, c.train, 7);
        return full.every((m, k) => Math.abs(cut[k] - (c.train.length * m) / ls.length) < 1);
      }),
      { numRuns: 300 },
    );
  });
});

describe('holdoutSplit', () => {
  it("splits a site's training rows into disjoint, stratified, seeded train and validation", () => {
    const [site] = partition(digits.labels, 10, 3, 'dirichlet:0.3', { seed: 2 });
    const h = holdoutSplit(site.train, digits.labels, { seed: 4, validationFraction: 0.25 });
    assert.deepEqual(
      [...h.train, ...h.validation].sort((a, b) => a - b),
      [...site.train].sort((a, b) => a - b),
    );
    assert.equal(new Set([...h.train, ...h.validation]).size, site.train.length);
    const share = h.validation.length / site.train.length;
    assert.ok(share > 0.18 && share < 0.32, `validation share ${share}`);
    const full = labelHistogram(digits.labels, site.train, 10);
    const tr = labelHistogram(digits.labels, h.train, 10);
    full.forEach((m, k) => assert.ok(m === 0 || tr[k] > 0, `class ${k} kept in train`));
    assert.deepEqual(holdoutSplit(site.train, digits.labels, { seed: 4, validationFraction: 0.25 }), h);
    assert.notDeepEqual(holdoutSplit(site.train, digits.labels, { seed: 5, validationFraction: 0.25 }), h);
    assert.throws(() => holdoutSplit([1], digits.labels, { seed: 1 }), /at least 2 rows/);
    assert.throws(() => holdoutSplit(site.train, digits.labels, { seed: 1, validationFraction: 1 }), /validationFraction/);
  });
});

/** A w x w x c image whose value encodes its position and channel. */
function known(w: number, c: number): Float32Array {
  return Float32Array.from({ length: w * w * c }, (_, i) => 1 + i);
}

function closeTo(a: Float32Array, b: Float32Array, tol = 1e-5): boolean {
  return a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= tol);
}

describe('feature shift', () => {
  it('rotation by 0 (or 360) is the identity; by 90 degrees, a transpose and a flip', () => {
    const img = known(5, 2);
    assert.deepEqual(rotateImage(img, 5, 5, 2, 0), img);
    assert.ok(closeTo(rotateImage(img, 5, 5, 2, 360), img));
    for (const w of [4, 5]) {
      const x = known(w, 2);
      const at = (y: number, xx: number, ch: number) => x[(y * w + xx) * 2 + ch];
      // Counter-clockwise as displayed, like numpy's rot90: out[y][x] = in[x][w-1-y].
      const ccw = Float32Array.from({ length: x.length }, (_, i) => {
        const ch = i % 2;
        const p = (i - ch) / 2;
        return at(p % w, w - 1 - Math.floor(p / w), ch);
      });
      assert.ok(closeTo(rotateImage(x, w, w, 2, 90), ccw), `90 degrees, ${w}x${w}`);
      const cw = Float32Array.from({ length: x.length }, (_, i) => {
        const ch = i % 2;
        const p = (i - ch) / 2;
        return at(w - 1 - (p % w), Math.floor(p / w), ch);
      });
      assert.ok(closeTo(rotateImage(x, w, w, 2, -90), cw), `-90 degrees, ${w}x${w}`);
      assert.ok(closeTo(rotateImage(rotateImage(x, w, w, 2, 90), w, w, 2, 90), rotateImage(x, w, w, 2, 180)));
    }
    // 180 degrees of a 1-channel image reverses it.
    const one = known(4, 1);
    assert.ok(closeTo(rotateImage(one, 4, 4, 1, 180), one.slice().reverse()));
    // 45 degrees: the centre pixel stays, corners fall outside and go black, values stay within the range.
    const r45 = rotateImage(known(7, 1), 7, 7, 1, 45);
    assert.equal(r45[24], 25);
    assert.equal(r45[0], 0);
    assert.ok(r45.every((v) => v >= 0 && v <= 49));
    assert.ok(!closeTo(r45, known(7, 1), 0.5));
  });

  it('is deterministic per (seed, site); sites get different angles spread over [-30, 30]', () => {
    const rows = [0, 1, 2, 3];
    const a = applyFeatureShift(digits.features, digits.sampleShape, rows, 2, 5, 11, ['rotate', 'contrast', 'noise']);
    const b = applyFeatureShift(digits.features, digits.sampleShape, rows, 2, 5, 11, ['rotate', 'contrast', 'noise']);
    assert.deepEqual(a, b);
    const other = applyFeatureShift(digits.features, digits.sampleShape, rows, 3, 5, 11, ['rotate', 'contrast', 'noise']);
    assert.ok(!closeTo(a, other, 1e-3), 'another site, another transformation');
    const reseeded = applyFeatureShift(digits.features, digits.sampleShape, rows, 2, 5, 12, ['rotate', 'contrast', 'noise']);
    assert.ok(!closeTo(a, reseeded, 1e-3), 'another seed, another transformation');
    const angles = Array.from({ length: 7 }, (_, i) => siteShift(i, 7, 11, 0).angle);
    assert.deepEqual(
      [...angles].sort((x, y) => x - y),
      [-30, -20, -10, 0, 10, 20, 30],
    );
    assert.notDeepEqual(angles, [-30, -20, -10, 0, 10, 20, 30], 'dealt in a seeded order');
    const contrasts = Array.from({ length: 7 }, (_, i) => siteShift(i, 7, 11, 0).contrast);
    assert.equal(new Set(contrasts).size, 7);
    assert.ok(contrasts.every((c) => c >= 1 / 1.3 && c <= 1.3));
    // One site alone is not rotated.
    const alone = applyFeatureShift(digits.features, digits.sampleShape, rows, 0, 1, 11, ['rotate']);
    assert.deepEqual(alone, digits.features.slice(0, 4 * 64));
  });

  it("rotates each image by its site's angle, and a row's noise does not depend on the other rows", () => {
    const rows = [7, 300];
    const p = siteShift(1, 4, 5, 0);
    const rot = applyFeatureShift(digits.features, digits.sampleShape, rows, 1, 4, 5, ['rotate']);
    assert.ok(closeTo(rot.subarray(64, 128), rotateImage(digits.features.slice(300 * 64, 301 * 64), 8, 8, 1, p.angle)));
    const both = applyFeatureShift(digits.features, digits.sampleShape, rows, 1, 4, 5, ['noise'], { scale: 16 });
    const alone = applyFeatureShift(digits.features, digits.sampleShape, [300], 1, 4, 5, ['noise'], { scale: 16 });
    assert.deepEqual(both.subarray(64), alone);
    const diff = Array.from(alone, (v, j) => v - digits.features[300 * 64 + j]);
    const sd = Math.sqrt(diff.reduce((a, v) => a + v * v, 0) / 64);
    assert.ok(Math.abs(sd - p.noise * 16) < 0.5 * p.noise * 16 + 1e-9, `noise std ${sd} for ${p.noise * 16}`);
  });

  it('tables: a per-site affine change of each feature plus noise', () => {
    const ds = makeSynthetic({ classes: 3, dim: 6, samples: 200, seed: 1 });
    const rows = Array.from({ length: 200 }, (_, i) => i);
    const sd = [0.5, 1, 2, 3, 4, 5];
    const out = applyFeatureShift(ds.features, ds.sampleShape, rows, 1, 3, 9, ['affine'], { scale: sd });
    const p = siteShift(1, 3, 9, 6);
    for (let i = 0; i < 200; i++) {
      for (let j = 0; j < 6; j++) {
        const want = ds.features[i * 6 + j] * p.affineScale[j] + p.affineOffset[j] * sd[j];
        assert.ok(Math.abs(out[i * 6 + j] - want) < 1e-4);
      }
    }
    assert.ok(new Set(p.affineScale).size === 6 && p.affineScale.every((s) => s > 0));
    const q = siteShift(2, 3, 9, 6);
    assert.notDeepEqual(p.affineScale, q.affineScale);
    const noisy = applyFeatureShift(ds.features, ds.sampleShape, rows, 1, 3, 9, ['affine', 'noise'], { scale: sd });
    assert.ok(!closeTo(noisy, out, 1e-6) && closeTo(noisy, out, 10 * p.noise * 5 + 1e-6));
    assert.throws(() => applyFeatureShift(ds.features, ds.sampleShape, rows, 0, 3, 9, ['rotate']), /"rotate" is for images/);
    assert.throws(() => applyFeatureShift(digits.features, digits.sampleShape, [0], 0, 3, 9, ['affine']), /"affine" is for tables/);
    assert.throws(() => applyFeatureShift(ds.features, ds.sampleShape, rows, 3, 3, 9, ['noise']), /site index 3 is not in \[0, 3\)/);
  });

  it('shiftDatasetBySite gives every site its own transformation and keeps the labels', () => {
    const splits = partition(digits.labels, 10, 3, 'iid', { seed: 1 });
    const shifted = shiftDatasetBySite(digits, splits, 4, ['rotate', 'contrast']);
    assert.deepEqual(shifted.labels, digits.labels);
    assert.equal(shifted.features.length, digits.features.length);
    const d = featureSize(digits);
    splits.forEach((s, i) => {
      const rows = [...s.train, ...s.test];
      const want = applyFeatureShift(digits.features, digits.sampleShape, rows, i, 3, 4, ['rotate', 'contrast'], { scale: 16 });
      rows.slice(0, 10).forEach((r, k) => assert.ok(closeTo(shifted.features.subarray(r * d, (r + 1) * d), want.subarray(k * d, (k + 1) * d))));
    });
    assert.match(shifted.description, /Feature shift per site \(rotate, contrast, seed 4\)/);
  });
});
