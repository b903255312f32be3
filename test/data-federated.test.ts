import assert from 'node:assert/strict';
import {
  DataError,
  Rng,
  agreementFit,
  applyStandardizer,
  encodeWithSchema,
  federatedStandardizer,
  featureSize,
  pooledStandardizer,
  fitStandardizer,
  loadDataset,
  mergeSummaries,
  partition,
  summarizeDataset,
  summarizeTable,
  tableFromRows,
  takeRows,
  validateSummary,
  type LocalSummary,
  type RawTable,
} from '@dflmoe/data/internal';

/** A patient record as written in a CSV. */
type Rec = Record<string, string>;

const MISSING = ['NA', '?', 'nan', ''];

/** Seeded patients; each site has its own smoker vocabulary, classes and share of missing cells. */
function patients(seed: number, n: number, smokers: string[], classes: string[], missingRate: number): Rec[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const miss = () => rng.uniform() < missingRate;
    return {
      age: miss() ? MISSING[i % 4] : (40 + rng.normal() * 12 + seed).toFixed(1),
      bmi: (24 + rng.normal() * 4).toFixed(2),
      smoker: miss() ? 'NA' : smokers[rng.int(smokers.length)],
      sex: rng.uniform() < 0.5 ? 'F' : 'M',
      label: classes[rng.int(classes.length)],
    };
  });
}

function toTable(recs: Rec[], header: string[], source: string): RawTable {
  return tableFromRows(
    header,
    recs.map((r) => header.map((h) => r[h])),
    { source },
  );
}

const HEADER = ['age', 'bmi', 'smoker', 'sex', 'label'];
const sites = [
  { name: 'hospital-b', recs: patients(1, 80, ['never', 'current'], ['benign', 'malignant'], 0.1), header: HEADER },
  // Another column order at this site: the agreed layout must not care.
  { name: 'hospital-a', recs: patients(2, 50, ['never', 'former'], ['benign', 'malignant', 'cyst'], 0), header: ['sex', 'label', 'smoker', 'bmi', 'age'] },
  { name: 'hospital-c', recs: patients(3, 120, ['current', 'former', 'never', 'occasional'], ['malignant', 'benign'], 0.25), header: HEADER },
];

/** Mean and population std of the observed values of a list of cells, in float64. */
function reference(values: number[]): { mean: number; std: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / values.length);
  return { mean, std };
}

describe('federated preprocessing', () => {
  const tables = sites.map((s) => toTable(s.recs, s.header, s.name));
  const summaries = tables.map((t, i) => summarizeTable(t, sites[i].name));
  const agreed = mergeSummaries(summaries);
  const all = sites.flatMap((s) => s.recs);

  it("agrees on the union of classes and vocabularies, sorted, in the first site's column order", () => {
    assert.deepEqual(agreed.sites, ['hospital-a', 'hospital-b', 'hospital-c']);
    assert.equal(agreed.schema.kind, 'table');
    assert.deepEqual(agreed.schema.classNames, ['benign', 'cyst', 'malignant']);
    assert.deepEqual(agreed.featureNames, [
      'sex=F',
      'sex=M',
      'smoker=current',
      'smoker=former',
      'smoker=never',
      'smoker=occasional',
      'bmi',
      'age',
      'age_missing',
    ]);
    assert.equal(agreed.numRows, 250);
    const counts = Object.fromEntries(agreed.schema.classNames.map((c, k) => [c, agreed.labelCounts[k]]));
    assert.deepEqual(counts, {
      benign: all.filter((r) => r.label === 'benign').length,
      cyst: all.filter((r) => r.label === 'cyst').length,
      malignant: all.filter((r) => r.label === 'malignant').length,
    });
  });

  it('pooled statistics from 3 summaries equal the statistics of the concatenated rows within 1e-6', () => {
    const expect: Record<string, { mean: number; std: number }> = {};
    const observedAge = all.filter((r) => !MISSING.includes(r.age)).map((r) => Number(r.age));
    expect.age = reference(observedAge);
    expect.age_missing = reference(all.map((r) => (MISSING.includes(r.age) ? 1 : 0)));
    expect.bmi = reference(all.map((r) => Number(r.bmi)));
    for (const s of ['current', 'former', 'never', 'occasional']) expect[`smoker=${s}`] = reference(all.map((r) => (r.smoker === s ? 1 : 0)));
    for (const s of ['F', 'M']) expect[`sex=${s}`] = reference(all.map((r) => (r.sex === s ? 1 : 0)));
    agreed.featureNames.forEach((name, j) => {
      assert.ok(Math.abs(agreed.mean[j] - expect[name].mean) < 1e-6, `${name} mean ${agreed.mean[j]} vs ${expect[name].mean}`);
      assert.ok(Math.abs(agreed.std[j] - expect[name].std) < 1e-6, `${name} std ${agreed.std[j]} vs ${expect[name].std}`);
    });
    assert.ok(observedAge.length < all.length, 'the fixture has missing ages');
    // The same as one site holding all the rows.
    const one = mergeSummaries([summarizeTable(toTable(all, HEADER, 'pooled'), 'pooled')]);
    assert.deepEqual(one.featureNames, ['age', 'age_missing', 'bmi', 'smoker=current', 'smoker=former', 'smoker=never', 'smoker=occasional', 'sex=F', 'sex=M']);
    for (const [j, name] of agreed.featureNames.entries()) {
      const k = one.featureNames.indexOf(name);
      assert.ok(Math.abs(one.mean[k] - agreed.mean[j]) < 1e-9 && Math.abs(one.std[k] - agreed.std[j]) < 1e-9, name);
    }
    // Missing ages are imputed with the pooled mean of the observed ones.
    const age = agreed.schema.kind === 'table' ? agreed.schema.columns.find((c) => c.name === 'age') : undefined;
    assert.ok(age?.kind === 'numeric' && Math.abs(age.impute - expect.age.mean) < 1e-9 && age.indicator);
  });

  it('does not depend on the order of the summaries, and survives JSON', () => {
    const shuffled = mergeSummaries([summaries[2], summaries[0], summaries[1]].map((s) => JSON.parse(JSON.stringify(s)) as LocalSummary));
    assert.deepEqual(shuffled, agreed);
  });

  it('encodeWithSchema gives every site the same layout; pooled standardization centres the pooled training rows', () => {
    const encoded = tables.map((t) => encodeWithSchema(t, agreed));
    for (const e of encoded) {
      assert.deepEqual(e.dataset.featureNames, agreed.featureNames);
      assert.deepEqual(e.dataset.classNames, ['benign', 'cyst', 'malignant']);
      assert.ok(e.dataset.features.every(Number.isFinite));
    }
    // Site a's first patient, re-read by name from its own column order.
    const a = encoded[1].dataset;
    const rec = sites[1].recs[0];
    const d = agreed.featureNames.length;
    const f = (name: string) => a.features[agreed.featureNames.indexOf(name)];
    assert.equal(f('bmi'), Math.fround(Number(rec.bmi)));
    assert.equal(f(`sex=${rec.sex}`), 1);
    assert.equal(f('smoker=occasional'), 0);
    assert.equal(a.classNames[a.labels[0]], rec.label);
    // Standardized and pooled over the sites: mean 0 for every feature, std 1 where no cell is imputed.
    const x = encoded.map((e) =>
      applyStandardizer(
        e.dataset.features,
        d,
        Array.from({ length: e.dataset.numSamples }, (_, i) => i),
        e.standardizer,
      ),
    );
    const pooled = new Float32Array(x.reduce((n, a) => n + a.length, 0));
    let off = 0;
    for (const xs of x) {
      pooled.set(xs, off);
      off += xs.length;
    }
    const st = fitStandardizer(
      pooled,
      d,
      Array.from({ length: 250 }, (_, i) => i),
    );
    agreed.featureNames.forEach((name, j) => {
      assert.ok(Math.abs(st.mean[j]) < 1e-5, `${name} mean ${st.mean[j]}`);
      if (name !== 'age') assert.ok(Math.abs(st.std[j] - 1) < 1e-4, `${name} std ${st.std[j]}`);
      else assert.ok(st.std[j] < 0.99, 'imputed ages sit at 0 and shrink the spread');
    });
    // An imputed age standardizes to 0.
    const c = encoded[2].dataset;
    const i = sites[2].recs.findIndex((r) => MISSING.includes(r.age));
    const ageJ = agreed.featureNames.indexOf('age');
    assert.ok(Math.abs(x[2][i * d + ageJ]) < 1e-5);
    assert.equal(c.features[i * d + agreed.featureNames.indexOf('age_missing')], 1);
  });

  it('a column one site lacks is all-missing there: pooled from the others, imputed with their mean, with an indicator', () => {
    const noBmi = toTable(sites[2].recs, ['age', 'smoker', 'sex', 'label'], 'hospital-c');
    const lacking = summarizeTable(noBmi, 'hospital-c');
    const ag = mergeSummaries([summaries[0], summaries[1], lacking]);
    const names = ag.featureNames;
    assert.deepEqual(
      names.filter((n) => n.startsWith('bmi')),
      ['bmi', 'bmi_missing'],
    );
    const bmi = names.indexOf('bmi');
    const ind = names.indexOf('bmi_missing');
    // The value's statistics are those of the two sites that have the column; hospital-c's 120 rows are all missing.
    const observed = [...sites[0].recs, ...sites[1].recs].map((r) => Number(r.bmi));
    const ref = reference(observed);
    assert.equal(ag.stats.count[bmi], 130);
    assert.equal(ag.stats.missing[bmi], 120);
    assert.ok(Math.abs(ag.mean[bmi] - ref.mean) < 1e-9 && Math.abs(ag.std[bmi] - ref.std) < 1e-9);
    assert.ok(Math.abs(ag.mean[ind] - 120 / 250) < 1e-12, `indicator mean ${ag.mean[ind]}`);
    const col = (ag.schema as { columns: { name: string; impute?: number }[] }).columns.find((c) => c.name === 'bmi')!;
    assert.ok(Math.abs(col.impute! - ref.mean) < 1e-9);
    // Encoded at the site that lacks it: the pooled mean and the indicator set; the others' rows are as they were.
    const enc = encodeWithSchema(noBmi, ag).dataset;
    const d = names.length;
    for (let i = 0; i < enc.numSamples; i++) {
      assert.equal(enc.features[i * d + bmi], Math.fround(col.impute!));
      assert.equal(enc.features[i * d + ind], 1);
    }
    const a = encodeWithSchema(tables[1], ag).dataset;
    assert.equal(a.features[bmi], Math.fround(Number(sites[1].recs[0].bmi)));
    assert.equal(a.features[ind], 0);
    // The first site (by name) may be the one that lacks a column: the column comes after its own, in order.
    const ward = summarizeTable(
      toTable(
        sites[0].recs.map((r) => ({ ...r, ward: r.sex === 'F' ? 'x' : 'y' })),
        [...HEADER, 'ward'],
        'hospital-b',
      ),
      'hospital-b',
    );
    const ag2 = mergeSummaries([ward, summaries[1], summaries[2]]);
    assert.deepEqual(ag2.featureNames.slice(-2), ['ward=x', 'ward=y']);
    assert.deepEqual(mergeSummaries([summaries[2], ward, summaries[1]]), ag2, 'order of the summaries does not matter');
  });

  it('a site sharing no column with the others, or a column numeric at one site and text at another, is an error naming them', () => {
    const other = summarizeTable(
      toTable(
        sites[0].recs.map((r) => ({ height: r.age, label: r.label })),
        ['height', 'label'],
        'hospital-z',
      ),
      'hospital-z',
    );
    assert.throws(
      () => mergeSummaries([summaries[0], summaries[1], other]),
      (e: Error) => e instanceof DataError && /^site "hospital-z" shares no column with the others/.test(e.message),
    );
    const textBmi = toTable(
      sites[1].recs.map((r) => ({ ...r, bmi: Number(r.bmi) > 24 ? 'high' : 'low' })),
      HEADER,
      'hospital-a',
    );
    assert.throws(
      () => mergeSummaries([summaries[0], summarizeTable(textBmi, 'hospital-a'), summaries[2]]),
      (e: Error) => /column "bmi" is numeric at "hospital-b", "hospital-c" but categorical at "hospital-a"/.test(e.message),
    );
    assert.throws(() => mergeSummaries([summaries[0], summaries[0]]), /two summaries come from site "hospital-b"/);
  });

  it('agreementFit: what an agreement made without a site leaves out of its data (classes, columns, categories), and what it takes in differently', () => {
    const early = mergeSummaries([summaries[0]]);
    // hospital-a: a class and a category hospital-b lacks; statistics not in the agreement.
    const fit = agreementFit(summaries[1], early);
    assert.deepEqual(fit.problems, ['class "cyst" (the agreed classes are "benign", "malignant")', 'category "former" of column "smoker"']);
    assert.match(fit.notes.at(-1)!, /standardized with the statistics of "hospital-b" \(80 training rows\), without this site's own 50/);
    // A site whose data the agreement holds entirely: no problem, the statistics are noted.
    const same = summarizeTable(toTable(sites[0].recs.slice(0, 40), HEADER, 'x'), 'hospital-x');
    assert.deepEqual(agreementFit(same, early).problems, []);
    // Its own column the agreement lacks is a problem; a column of the agreement it lacks reads as missing (a note).
    const extra = summarizeTable(
      toTable(
        sites[0].recs.map((r) => ({ ...r, ward: 'x' })),
        [...HEADER, 'ward'],
        'w',
      ),
      'hospital-w',
    );
    assert.deepEqual(agreementFit(extra, early).problems, ['column "ward" (not in the agreement)']);
    const noBmi = summarizeTable(toTable(sites[0].recs, ['age', 'smoker', 'sex', 'label'], 'n'), 'hospital-n');
    const f2 = agreementFit(noBmi, early);
    assert.deepEqual(f2.problems, []);
    assert.ok(
      f2.notes.some((n) => /lacks column "bmi": its rows read as missing/.test(n)),
      f2.notes.join('\n'),
    );
    // Another kind, another shape.
    assert.match(
      agreementFit(summaries[0], mergeSummaries([summarizeDataset(loadDataset('digits'), 'd', [0, 1, 2])])).problems.join(),
      /a table \(the agreement is for fixed-shape samples\)/,
    );
  });

  it('summaries of training rows only: test rows do not move the statistics', () => {
    const t = tables[0];
    const train = Array.from({ length: 60 }, (_, i) => i);
    const s1 = summarizeTable(t, 'b', train);
    const changed = toTable(
      sites[0].recs.map((r, i) => (i >= 60 ? { ...r, bmi: '1000', smoker: 'vaper' } : r)),
      HEADER,
      'b',
    );
    assert.deepEqual(summarizeTable(changed, 'b', train), s1);
    assert.equal(s1.numRows, 60);
    // An unseen category in a test row encodes as all zeros.
    const enc = encodeWithSchema(changed, mergeSummaries([s1])).dataset;
    const names = enc.featureNames!;
    const smokerCols = names.map((n, j) => (n.startsWith('smoker=') ? j : -1)).filter((j) => j >= 0);
    assert.ok(smokerCols.every((j) => enc.features[70 * names.length + j] === 0));
  });

  it('tampered summaries are rejected naming the site', () => {
    const bad = JSON.parse(JSON.stringify(summaries[0])) as LocalSummary;
    bad.stats.sum[3] = Number.NaN;
    assert.throws(() => validateSummary(bad), /site "hospital-b" is invalid: stats.sum holds a value that is not a finite number/);
    const short = JSON.parse(JSON.stringify(summaries[1])) as LocalSummary;
    short.stats.count.pop();
    assert.throws(() => mergeSummaries([summaries[0], short]), /site "hospital-a" is invalid: stats.count must hold 6 numbers/);
    const liar = JSON.parse(JSON.stringify(summaries[2])) as LocalSummary;
    liar.numRows += 1;
    assert.throws(() => validateSummary(liar), /labelCounts do not add up/);
  });

  it('federatedStandardizer (summaries + merge, what the simulator uses) equals the pooled standardizer within 1e-6', () => {
    const bc = loadDataset('breast-cancer');
    const splits = partition(bc.labels, 2, 4, 'dirichlet:0.3', { seed: 2 });
    const fed = federatedStandardizer(bc, splits);
    const ref = pooledStandardizer(bc.features, featureSize(bc), splits);
    for (let j = 0; j < featureSize(bc); j++) {
      assert.ok(Math.abs(fed.mean[j] - ref.mean[j]) <= 1e-6 * Math.max(1, Math.abs(ref.mean[j])), `feature ${j} mean ${fed.mean[j]} vs ${ref.mean[j]}`);
      assert.ok(Math.abs(fed.std[j] - ref.std[j]) <= 1e-6 * Math.max(1, ref.std[j]), `feature ${j} std ${fed.std[j]} vs ${ref.std[j]}`);
    }
  });

  it('images (fixed-shape samples): pooled pixel statistics, union of classes, shape mismatch named', () => {
    const digits = loadDataset('digits');
    const splits = partition(digits.labels, 10, 3, 'shards:4', { seed: 5 });
    const sums = splits.map((s, i) => summarizeDataset(digits, `site-${i}`, s.train));
    const merged = mergeSummaries(sums);
    assert.equal(merged.schema.kind, 'tensor');
    assert.deepEqual(merged.schema.kind === 'tensor' && merged.schema.shape, [8, 8, 1]);
    const present = new Set(splits.flatMap((s) => [...s.train].map((r) => digits.labels[r])));
    assert.deepEqual(merged.schema.classNames, [...present].sort((a, b) => a - b).map(String));
    const allTrain = splits.flatMap((s) => [...s.train]);
    const ref = fitStandardizer(digits.features, 64, allTrain);
    for (let j = 0; j < 64; j++) {
      assert.ok(Math.abs(merged.mean[j] - ref.mean[j]) < 1e-5, `pixel ${j} mean`);
      assert.ok(Math.abs(merged.std[j] - ref.std[j]) < 1e-5, `pixel ${j} std`);
    }
    // Labels are renumbered to the agreed classes.
    const site0 = takeRows(digits, splits[0].train);
    const enc = encodeWithSchema(site0, merged).dataset;
    for (let i = 0; i < 20; i++) assert.equal(enc.classNames[enc.labels[i]], digits.classNames[site0.labels[i]]);
    const other = { ...sums[1], schema: { ...sums[1].schema, shape: [4, 16, 1] } } as LocalSummary;
    assert.throws(() => mergeSummaries([sums[0], other, sums[2]]), /site "site-1" has samples of shape 4x16x1 but site "site-0" has 8x8x1/);
    assert.throws(() => mergeSummaries([sums[0], summaries[0]]), /summarize tables but "site-0" summarize fixed-shape/);
  });
});
