/**
 * A real site's own data: CSV with categorical and missing cells and image
 * folders read by the site alone, statements reconciled into one agreed
 * schema (with clear errors when that cannot be), encoding, simulator
 * shares, and new inputs for prediction.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DataError,
  encodeSiteData,
  featureSize,
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
  type SiteStatement,
} from '@dflmoe/data/internal';
import { PATIENT_HEADER, imageFolder, patientsCsv, tmpDir, writeText } from './fixtures/sites.js';

const spec = (dataset: string, o: Partial<SiteDataSpec> = {}): SiteDataSpec => ({ dataset, seed: 1, testFraction: 0.25, ...o });

/** Three hospitals with different rows, vocabularies, column order and missing cells. */
function hospitals(dir: string): string[] {
  return [
    writeText(join(dir, 'a.csv'), patientsCsv({ seed: 1, rows: 120, missing: 0.1, wards: ['A', 'B'] })),
    writeText(join(dir, 'b.csv'), patientsCsv({ seed: 2, rows: 90, missing: 0, wards: ['B', 'C'], ageShift: 5, header: [...PATIENT_HEADER].reverse() })),
    writeText(join(dir, 'c.csv'), patientsCsv({ seed: 3, rows: 150, missing: 0.2, wards: ['A', 'D', 'E'], ageShift: -5 })),
  ];
}

const csvSpec = (file: string) => spec(`csv:${file}`, { labelColumn: 'diagnosis', drop: ['id'] });

describe('site data', () => {
  it('three CSV sites agree on one layout: union vocabularies, indicators, pooled statistics of training rows', async () => {
    const files = hospitals(tmpDir());
    const datas = await Promise.all(files.map((f) => loadSiteData(csvSpec(f))));
    const sts = datas.map((d, i) => siteStatement(d, `site-${i}`));
    const r = reconcileStatements(sts);
    assert.deepEqual(r.included, ['site-0', 'site-1', 'site-2']);
    assert.deepEqual(r.excluded, []);
    const names = r.agreed.featureNames;
    for (const f of ['age', 'age_missing', 'bmi', 'smoker=current', 'smoker=former', 'smoker=never', 'ward=A', 'ward=E', 'sex=F'])
      assert.ok(names.includes(f), f);
    assert.ok(!names.includes('bmi_missing'), 'no site misses bmi');
    assert.deepEqual(r.agreed.schema.classNames, ['benign', 'malignant']);
    // The same agreement from the statements in another order, after a JSON round trip.
    assert.deepEqual(reconcileStatements(JSON.parse(JSON.stringify([sts[2], sts[0], sts[1]]))), r);
    const enc = datas.map((d) => encodeSiteData(d, r.agreed, 'federated'));
    for (const e of enc) assert.equal(featureSize(e.dataset), names.length);
    // bmi has no missing cell: its pooled mean and std are those of every site's training rows.
    const j = names.indexOf('bmi');
    const bmis = enc.flatMap((e) => Array.from(e.split.train, (row) => e.dataset.features[row * names.length + j]));
    const mean = bmis.reduce((a, b) => a + b, 0) / bmis.length;
    const std = Math.sqrt(bmis.reduce((a, b) => a + (b - mean) ** 2, 0) / bmis.length);
    assert.ok(Math.abs(r.agreed.mean[j] - mean) < 1e-6 * mean, `${r.agreed.mean[j]} vs ${mean}`);
    assert.ok(Math.abs(r.agreed.std[j] - std) < 1e-6 * std, `${r.agreed.std[j]} vs ${std}`);
    // Local standardization: the site's own training rows.
    const local = encodeSiteData(datas[0], r.agreed, 'local');
    assert.deepEqual(local.standardizer, fitStandardizer(local.dataset.features, names.length, local.split.train));
  });

  it('mismatched schemas: the site that does not fit is left out with the columns or classes named', async () => {
    const dir = tmpDir();
    const files = hospitals(dir);
    const noBmi = writeText(join(dir, 'd.csv'), patientsCsv({ seed: 4, rows: 60, header: PATIENT_HEADER.filter((h) => h !== 'bmi') }));
    const good = await Promise.all(files.map((f) => loadSiteData(csvSpec(f))));
    const sts = [...good.map((d, i) => siteStatement(d, `site-${i}`)), siteStatement(await loadSiteData(csvSpec(noBmi)), 'site-x')];
    // A site that lacks a column is not left out: the column reads as missing there, with a warning naming the other way.
    const r = reconcileStatements(sts);
    assert.deepEqual(r.included, ['site-0', 'site-1', 'site-2', 'site-x']);
    assert.deepEqual(r.excluded, []);
    assert.ok(r.agreed.featureNames.includes('bmi_missing'));
    assert.deepEqual(
      r.warnings.filter((w) => /lacks column/.test(w)),
      [
        'site "site-x" lacks column "bmi": its rows read as missing there (imputed with the others\' pooled mean, with the indicator "bmi_missing"); ' +
          'to leave the column out instead, drop it at every site ("drop": ["bmi"])',
      ],
    );

    // A column numeric here and text there.
    const textAge = writeText(join(dir, 'e.csv'), patientsCsv({ seed: 5, rows: 40 }).replace(/^(p5-\d+),[\d.]+/gm, '$1,old'));
    const r2 = reconcileStatements([...sts.slice(0, 3), siteStatement(await loadSiteData(csvSpec(textAge)), 'site-y')]);
    assert.match(r2.excluded[0].reason, /column "age" is numeric at .* but categorical at "site-y"/);

    // Declared label sets: a class outside it, or another declared set.
    const declared = (d: Awaited<ReturnType<typeof loadSiteData>>, site: string, classes: string[]): SiteStatement => ({
      ...siteStatement(d, site),
      declaredClasses: classes,
    });
    const cyst = writeText(join(dir, 'f.csv'), patientsCsv({ seed: 6, rows: 40 }).replace(/benign$/m, 'cyst'));
    const r3 = reconcileStatements([
      declared(good[0], 'site-0', ['benign', 'malignant']),
      declared(good[1], 'site-1', ['benign', 'malignant']),
      siteStatement(await loadSiteData(csvSpec(cyst)), 'site-z'),
    ]);
    assert.deepEqual(
      r3.excluded.map((e) => e.site),
      ['site-z'],
    );
    assert.match(r3.excluded[0].reason, /class "cyst", not among the declared classes "benign", "malignant"/);
    const r4 = reconcileStatements([
      declared(good[0], 'site-0', ['benign', 'malignant']),
      declared(good[1], 'site-1', ['malignant', 'benign']),
      declared(good[2], 'site-2', ['benign', 'malignant']),
    ]);
    assert.deepEqual(
      r4.excluded.map((e) => e.site),
      ['site-1'],
    );
    assert.match(r4.excluded[0].reason, /declares the classes "malignant", "benign" but site "site-0" declares "benign", "malignant"/);
    // The agreed classes follow the declared order.
    assert.deepEqual(reconcileStatements([declared(good[0], 'a', ['malignant', 'benign'])]).agreed.schema.classNames, ['malignant', 'benign']);
    // Classes that differ only in case across sites: a warning naming where each is.
    const low = writeText(join(dir, 'g.csv'), patientsCsv({ seed: 7, rows: 40 }).replace(/,benign$/gm, ',Benign'));
    const r5 = reconcileStatements([siteStatement(good[0], 'site-0'), siteStatement(await loadSiteData(csvSpec(low)), 'site-w')]);
    assert.ok(
      r5.warnings.includes(
        'classes "Benign" and "benign" differ only in case and count as 2 classes ("Benign" at "site-w"; "benign" at "site-0"); write them alike at every site if they are one class',
      ),
      r5.warnings.join('\n'),
    );
    // One class among all the sites: a clear error when encoding, not the tensor library's later.
    const one = await loadSiteData(csvSpec(writeText(join(dir, 'h.csv'), patientsCsv({ seed: 8, rows: 40 }).replace(/,malignant$/gm, ',benign'))));
    assert.throws(
      () => encodeSiteData(one, reconcileStatements([siteStatement(one, 'a')]).agreed, 'federated'),
      (e: Error) =>
        e instanceof DataError && /^the label column holds only the class "benign" at this site: a classifier needs at least two classes/.test(e.message),
    );
    // A site's own labels outside its declared classes: an error before anything is shared.
    await assert.rejects(
      loadSiteData({ ...csvSpec(cyst), classes: ['benign', 'malignant'] }),
      /has class "cyst" that data.classes \(benign, malignant\) does not list/,
    );
  });

  it('image folders: every site reads only its own folder; shapes must agree, and new images are read at the agreed size', async () => {
    const a = await imageFolder(tmpDir(), { seed: 1, perClass: 6, size: 12 });
    const b = await imageFolder(tmpDir(), { seed: 2, perClass: 5, size: 16 });
    const [da, db] = await Promise.all([loadSiteData(spec(`images:${a}`)), loadSiteData(spec(`images:${b}`))]);
    const r = reconcileStatements([siteStatement(da, 'a'), siteStatement(db, 'b')]);
    assert.equal(r.excluded.length, 1);
    assert.match(r.excluded[0].reason, /has samples of shape 16x16x1 but site "a" has 12x12x1: resize to one shape/);
    const db12 = await loadSiteData(spec(`images:${b}`, { imageSize: [12, 12] }));
    const ok = reconcileStatements([siteStatement(da, 'a'), siteStatement(db12, 'b')]);
    assert.deepEqual(ok.included, ['a', 'b']);
    assert.deepEqual(ok.agreed.schema.classNames, ['blob', 'stripes']);
    const enc = encodeSiteData(db12, ok.agreed, 'federated');
    assert.deepEqual(enc.dataset.sampleShape, [12, 12, 1]);
    // New images at 16x16 are resized to the agreed 12x12; labels from the sub-folders.
    const inputs = await readInputs(b, ok.agreed, { kind: 'images' }, { labels: 'required' });
    assert.equal(inputs.numSamples, 10);
    assert.equal(inputs.features.length, 10 * 144);
    assert.deepEqual(Array.from(inputs.labels!), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    assert.equal(inputs.ids[0], join('blob', 'blob-0.jpg'));
  });

  it("a simulator share holds one site's rows and split, and is checked when read", () => {
    const ds = loadDataset('digits');
    const splits = partition(ds.labels, 10, 5, 'dirichlet:0.3', { seed: 2 });
    const file = join(tmpDir(), 'site-3.share');
    writeShare(file, ds, splits[3], { dataset: 'digits', peers: 5, index: 3, partition: 'dirichlet:0.3', seed: 2 });
    const { dataset, split, info } = readShare(file);
    assert.deepEqual(info, { dataset: 'digits', peers: 5, index: 3, partition: 'dirichlet:0.3', seed: 2 });
    assert.equal(dataset.numSamples, splits[3].train.length + splits[3].test.length);
    assert.deepEqual(dataset.classNames, ds.classNames);
    [...splits[3].train, ...splits[3].test].forEach((row, i) => {
      assert.equal(dataset.labels[i], ds.labels[row]);
      assert.deepEqual(dataset.features.subarray(i * 64, (i + 1) * 64), ds.features.subarray(row * 64, (row + 1) * 64));
    });
    assert.deepEqual(
      Array.from(split.train),
      Array.from({ length: splits[3].train.length }, (_, i) => i),
    );
    const bytes = readFileSync(file);
    writeFileSync(file, bytes.subarray(0, bytes.length - 7));
    assert.throws(
      () => readShare(file),
      (e: Error) => e instanceof DataError && /not a valid dflmoe share \(size/.test(e.message),
    );
    writeFileSync(file, 'hello');
    assert.throws(() => readShare(file), /wrong magic/);
  });

  it('new rows: the label column may be absent, extra columns are ignored, cells are read with the agreed kinds', async () => {
    const dir = tmpDir();
    const [fa] = hospitals(dir);
    const d = await loadSiteData(csvSpec(fa));
    const agreed = reconcileStatements([siteStatement(d, 'a')]).agreed;
    const input = { kind: 'table' as const, labelColumn: 'diagnosis' };
    // One row, every age missing, smoker "5" (a number in a text column), an unknown ward, an extra column.
    const fresh = writeText(join(dir, 'new.csv'), 'note,ward,smoker,age,bmi,sex\nhello,Z,5,NA,25,F\n');
    const x = await readInputs(fresh, agreed, input, { labels: 'optional' });
    assert.equal(x.numSamples, 1);
    assert.equal(x.labels, undefined);
    assert.deepEqual(x.ids, ['line 2']);
    const at = (n: string) => x.features[agreed.featureNames.indexOf(n)];
    const ageCol = agreed.schema.kind === 'table' ? agreed.schema.columns.find((c) => c.name === 'age') : undefined;
    assert.equal(at('age'), Math.fround(ageCol?.kind === 'numeric' ? ageCol.impute : NaN));
    assert.equal(at('age_missing'), 1);
    assert.equal(at('bmi'), 25);
    assert.ok(agreed.featureNames.filter((n) => n.startsWith('ward=') || n.startsWith('smoker=')).every((n) => at(n) === 0));
    await assert.rejects(readInputs(fresh, agreed, input, { labels: 'required' }), /evaluation needs the label column "diagnosis"/);
    const noAge = writeText(join(dir, 'no-age.csv'), 'ward,smoker,bmi,sex\nA,never,25,F\n');
    await assert.rejects(readInputs(noAge, agreed, input, { labels: 'optional' }), /lacks column "age" of the schema/);
    const badLabel = writeText(join(dir, 'bad-label.csv'), 'ward,smoker,age,bmi,sex,diagnosis\nA,never,50,25,F,benign\nA,never,50,25,F,cyst\n');
    await assert.rejects(
      readInputs(badLabel, agreed, input, { labels: 'required' }),
      /line 3: label "cyst" in column "diagnosis" is not one of the classes benign, malignant/,
    );
    await assert.rejects(readInputs(dir, agreed, input, { labels: 'optional' }), /is a folder, but this site was trained on a table: give a CSV file/);
    await assert.rejects(readInputs(fresh, agreed, { kind: 'images' }, { labels: 'optional' }), /this site was not trained on images/);
  });
});
