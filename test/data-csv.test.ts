import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataError, inferTableSchema, isMissingCell, loadCsv, loadDataset, readCsvTable, sortNames, tableFromRows } from '@dflmoe/data/internal';

function tmpCsv(text: string): string {
  const p = join(mkdtempSync(join(tmpdir(), 'dflmoe-csv-')), 't.csv');
  writeFileSync(p, text);
  return p;
}

/** Row i of a dataset's features as a name -> value record. */
function row(ds: { features: Float32Array; featureNames?: string[] }, i: number): Record<string, number> {
  const names = ds.featureNames!;
  return Object.fromEntries(names.map((n, j) => [n, ds.features[i * names.length + j]]));
}

const PATIENTS = [
  'id,name,age,smoker,bmi,ward,diagnosis',
  '1,"Smith, John",50,never,20,"A, east",benign',
  '2,"Doe, ""JD"" Jane",NA,current,?,B,malignant',
  '3,Roe,70,,30,nan,benign',
  '4,"Poe",60,former, NaN ,B,malignant',
].join('\n');

describe('csv tables', () => {
  it('quoting, one-hot categories, missing values imputed with indicators', () => {
    const ds = loadDataset(`csv:${tmpCsv(PATIENTS)}`, { labelColumn: 'diagnosis', drop: ['id', 'name'] });
    assert.deepEqual(ds.featureNames, [
      'age',
      'age_missing',
      'smoker=current',
      'smoker=former',
      'smoker=never',
      'bmi',
      'bmi_missing',
      'ward=A, east',
      'ward=B',
    ]);
    assert.deepEqual(ds.sampleShape, [9]);
    assert.deepEqual(ds.classNames, ['benign', 'malignant']);
    assert.deepEqual(Array.from(ds.labels), [0, 1, 0, 1]);
    // Numeric missing: the mean of the observed cells (age: 60, bmi: 25) plus a 1 in the indicator.
    assert.deepEqual(row(ds, 1), {
      age: 60,
      age_missing: 1,
      'smoker=current': 1,
      'smoker=former': 0,
      'smoker=never': 0,
      bmi: 25,
      bmi_missing: 1,
      'ward=A, east': 0,
      'ward=B': 1,
    });
    // Categorical missing (empty, nan): all zeros.
    const r2 = row(ds, 2);
    assert.equal(r2['smoker=current'] + r2['smoker=former'] + r2['smoker=never'], 0);
    assert.equal(r2['ward=A, east'] + r2['ward=B'], 0);
    assert.equal(r2.age, 70);
    assert.equal(r2.age_missing, 0);
    assert.equal(row(ds, 0)['ward=A, east'], 1, 'a quoted comma stays inside the category');
    // The schema states kinds, sorted vocabularies and imputation values.
    assert.deepEqual(ds.schema!.columns, [
      { name: 'age', kind: 'numeric', impute: 60, indicator: true },
      { name: 'smoker', kind: 'categorical', categories: ['current', 'former', 'never'] },
      { name: 'bmi', kind: 'numeric', impute: 25, indicator: true },
      { name: 'ward', kind: 'categorical', categories: ['A, east', 'B'] },
    ]);
    assert.ok(ds.features.every(Number.isFinite));
  });

  it('features keeps only the named columns, in the order given', () => {
    const ds = loadCsv(tmpCsv(PATIENTS), { labelColumn: 'diagnosis', features: ['ward', 'age'] });
    assert.deepEqual(ds.featureNames, ['ward=A, east', 'ward=B', 'age', 'age_missing']);
    // A numeric column without a missing cell gets no indicator.
    const noMissing = loadCsv(tmpCsv('a,b,label\n1,2,x\n3,4,y\n'), { features: ['b'] });
    assert.deepEqual(noMissing.featureNames, ['b']);
    assert.deepEqual(Array.from(noMissing.features), [2, 4]);
  });

  it('unknown names in features or drop, and the label among them, are errors naming line 1 and the column', () => {
    const p = tmpCsv(PATIENTS);
    assert.throws(
      () => loadCsv(p, { labelColumn: 'diagnosis', features: ['age', 'weight'] }),
      (e: Error) =>
        e instanceof DataError && /line 1: column "weight" in features is not in the header/.test(e.message) && /Columns are: id, name/.test(e.message),
    );
    assert.throws(() => loadCsv(p, { labelColumn: 'diagnosis', drop: ['Name'] }), /line 1: column "Name" in drop/);
    assert.throws(() => loadCsv(p, { labelColumn: 'diagnosis', features: ['diagnosis'] }), /"diagnosis" in features is the label column/);
  });

  it('a row without its label is left out with a count naming its line; a file with no label at all is an error', () => {
    const p = tmpCsv('a,label\n1,x\n2,NA\n3,y\n4,\n5,x\n');
    const ds = loadCsv(p);
    assert.equal(ds.numSamples, 3);
    assert.deepEqual(Array.from(ds.features), [1, 3, 5]);
    assert.deepEqual(ds.warnings, ['2 row(s) without a label in column "label" left out (line 3, 5)']);
    assert.throws(
      () => loadCsv(tmpCsv('a,label\n1,\n2,NA\n')),
      (e: Error) => e instanceof DataError && /every row's label in column "label" is missing/.test(e.message),
    );
  });

  it('a regression target: numbers kept as they are, quintiles as strata; text or an overflowing cell is refused naming its line', () => {
    const rows = Array.from({ length: 20 }, (_, i) => `${i},${i * 1.5}`).join('\n');
    const ds = loadCsv(tmpCsv(`a,y\n${rows}\n`), { labelColumn: 'y', taskKind: 'regression' });
    assert.equal(ds.task?.kind, 'regression');
    assert.deepEqual(Array.from((ds.task as { values: Float32Array }).values).slice(0, 3), [0, 1.5, 3]);
    assert.deepEqual([...new Set(ds.labels)], [0, 1, 2, 3, 4]);
    assert.equal(ds.classNames.length, 5);
    assert.throws(
      () => loadCsv(tmpCsv('a,y\n1,2\n2,high\n3,4\n'), { labelColumn: 'y', taskKind: 'regression' }),
      /line 3: "high" in column "y" is not a finite number/,
    );
    assert.throws(
      () => loadCsv(tmpCsv('a,y\n1,2\n2,1e39\n'), { labelColumn: 'y', taskKind: 'regression' }),
      /line 3: "1e39" in column "y" is not a finite number/,
    );
  });

  it('a label column of many distinct numbers is refused with the hint to declare it a regression task', () => {
    const rows = Array.from({ length: 60 }, (_, i) => `${i % 7},${20 + i}`).join('\n');
    const p = tmpCsv(`a,age\n${rows}\n`);
    assert.throws(
      () => loadCsv(p, { labelColumn: 'age' }),
      /"age" holds 60 distinct numbers in 60 rows: it looks like a number to predict.*"kind": "regression"/,
    );
    // Declared classes are taken as they are.
    assert.equal(loadCsv(p, { labelColumn: 'age', taskKind: 'classification' }).classNames.length, 60);
  });

  it('a column mixing numbers and text is an error naming the line and column, unless the stray cells are rare', () => {
    const mixed = tmpCsv('a,b,label\n1,2,x\n2,3,y\n3,high,x\n4,low,y\n');
    assert.throws(
      () => loadCsv(mixed),
      (e: Error) =>
        e instanceof DataError &&
        /line 4: column "b" holds "high", which is not a number/.test(e.message) &&
        /2 of its 4 observed cells are numbers/.test(e.message),
    );
    // 1 stray text cell in 25 (4%): counted as missing, with a warning.
    const lines = ['a,label', ...Array.from({ length: 24 }, (_, i) => `${i},${i % 2 ? 'x' : 'y'}`), 'oops,x'];
    const p = tmpCsv(lines.join('\n'));
    const table = readCsvTable(p);
    assert.equal(table.columns[0].kind, 'numeric');
    assert.match(table.warnings[0], /column "a": 1 of 25 cells are not numbers \(first at line 26: "oops"\) and count as missing/);
    const ds = loadCsv(p);
    assert.deepEqual(ds.featureNames, ['a', 'a_missing']);
    assert.equal(ds.features[24 * 2], 11.5); // the mean of 0..23
    assert.equal(ds.features[24 * 2 + 1], 1);
    // With no tolerance the same file is an error.
    assert.throws(() => loadCsv(p, { mixedTolerance: 0 }), /line 26: column "a" holds "oops"/);
    // A text column with a rare number keeps the number as a category.
    const t = tableFromRows(['c', 'label'], [...Array.from({ length: 24 }, (_, i) => [i % 2 ? 'red' : 'blue', 'x']), ['7', 'y']]);
    assert.equal(t.columns[0].kind, 'categorical');
    assert.deepEqual(inferTableSchema(t).columns[0], { name: 'c', kind: 'categorical', categories: ['7', 'blue', 'red'] });
  });

  it('categorical turns numeric codes into categories, sorted numerically', () => {
    const p = tmpCsv('grade,v,label\n10,1,x\n2,2,y\n1,3,x\n2,4,y\n');
    const ds = loadCsv(p, { categorical: ['grade'] });
    assert.deepEqual(ds.featureNames, ['grade=1', 'grade=2', 'grade=10', 'v']);
    assert.deepEqual(Array.from(ds.features.subarray(0, 4)), [0, 0, 1, 1]);
    assert.deepEqual(loadCsv(p).featureNames, ['grade', 'v']);
  });

  it('a column with no values, or the same name twice, is an error', () => {
    assert.throws(() => loadCsv(tmpCsv('a,b,label\n1,NA,x\n2,,y\n')), /lines 2-3: column "b" has no values/);
    assert.throws(() => loadCsv(tmpCsv('a,a,label\n1,2,x\n2,3,y\n')), /line 1: column "a" appears twice/);
  });

  it('a given schema fixes the layout: unknown categories encode as zeros, unknown labels are errors', () => {
    const own = loadCsv(tmpCsv(PATIENTS), { labelColumn: 'diagnosis', drop: ['id', 'name'] });
    const other = tmpCsv('age,smoker,bmi,ward,diagnosis,extra\n40,vaper,22,B,benign,9\n45,never,NA,A,benign,9\n');
    const ds = loadCsv(other, { labelColumn: 'diagnosis', schema: own.schema });
    assert.deepEqual(ds.featureNames, own.featureNames);
    assert.deepEqual(ds.classNames, ['benign', 'malignant']);
    const r0 = row(ds, 0);
    assert.equal(r0['smoker=current'] + r0['smoker=former'] + r0['smoker=never'], 0, 'unseen category "vaper"');
    assert.equal(r0.age_missing, 0);
    assert.equal(row(ds, 1).bmi, 25, "imputed with the schema value, not this file's mean");
    assert.equal(row(ds, 1)['ward=A, east'], 0, '"A" is not "A, east"');
    const bad = tmpCsv('age,smoker,bmi,ward,diagnosis\n40,never,22,B,unclear\n');
    assert.throws(
      () => loadCsv(bad, { labelColumn: 'diagnosis', schema: own.schema }),
      /line 2: label "unclear" in column "diagnosis" is not one of the classes benign, malignant/,
    );
    const lacking = tmpCsv('age,smoker,diagnosis\n40,never,benign\n');
    assert.throws(() => loadCsv(lacking, { labelColumn: 'diagnosis', schema: own.schema }), /lacks columns "bmi", "ward" of the schema/);
  });

  it('missing tokens and name sorting', () => {
    for (const m of ['', ' ', 'NA', 'na', 'NaN', 'nan', '?', ' ? ']) assert.ok(isMissingCell(m), JSON.stringify(m));
    for (const v of ['0', 'N/A?', 'none', 'nana']) assert.ok(!isMissingCell(v), v);
    assert.deepEqual(sortNames(['10', '9', '1e1', '-2']), ['-2', '9', '10', '1e1']);
    assert.deepEqual(sortNames(['b', 'B', '10', 'a']), ['10', 'B', 'a', 'b']);
  });

  it('a semicolon- or tab-separated file is read with its delimiter; a comma in the header wins', () => {
    const semi = readCsvTable(tmpCsv('age;ward;risk\n50;"north; old";low\n60;south;high\n'), { labelColumn: 'risk' });
    assert.deepEqual(
      semi.columns.map((c) => c.name),
      ['age', 'ward'],
    );
    assert.deepEqual(semi.labels, ['low', 'high']);
    assert.deepEqual(semi.columns[1].values, ['north; old', 'south']);
    const tab = readCsvTable(tmpCsv('\uFEFFage\tward\trisk\n50\tnorth\tlow\n'), { labelColumn: 'risk' });
    assert.deepEqual(
      tab.columns.map((c) => c.name),
      ['age', 'ward'],
    );
    // A comma-separated file whose cells hold semicolons stays comma-separated.
    const comma = readCsvTable(tmpCsv('"a;b",risk\n1,low\n'), { labelColumn: 'risk' });
    assert.deepEqual(
      comma.columns.map((c) => c.name),
      ['a;b'],
    );
  });

  it('a cell beyond what a 32-bit float holds is an error naming the file, line and column (whichever split the row lands in)', () => {
    const p = tmpCsv('age,mg,risk\n50,2.1,low\n60,1e308,high\n61,-2,low\n');
    assert.throws(
      () => readCsvTable(p, { labelColumn: 'risk' }),
      (e: Error) =>
        e instanceof DataError &&
        e.message ===
          `${p}, line 3: column "mg" holds 1e308, beyond the largest number the model reads (±3.4e38, a 32-bit float). Fix the cell, or write NA if it is missing.`,
    );
    // The largest float32 itself is accepted, and so is its square in the sums (float64).
    assert.doesNotThrow(() => readCsvTable(tmpCsv('age,mg,risk\n50,3.4e38,low\n60,-3.4e38,high\n'), { labelColumn: 'risk' }));
  });

  it('labels or categories that differ only in case are warned about, naming both', () => {
    const t = readCsvTable(tmpCsv('age,ward,risk\n50,North,Low\n60,north,low\n61,south,high\n'), { labelColumn: 'risk' });
    assert.deepEqual(t.warnings, [
      'labels "Low" and "low" in column "risk" differ only in case and count as 2 classes; write them alike if they are one class',
      'column "ward": "North" and "north" differ only in case and count as 2 categories; write them alike if they are one',
    ]);
    assert.deepEqual(readCsvTable(tmpCsv('age,ward,risk\n50,a,x\n60,b,y\n'), { labelColumn: 'risk' }).warnings, []);
  });

  it('breast-cancer still loads as 30 named numeric features with no indicator', () => {
    const ds = loadDataset('breast-cancer');
    assert.equal(ds.featureNames!.length, 30);
    assert.ok(ds.schema!.columns.every((c) => c.kind === 'numeric' && !c.indicator));
    assert.equal(ds.featureNames![0], 'mean radius');
  });
});
