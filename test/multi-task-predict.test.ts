/**
 * Predict and evaluate a multi-task site: a one-site site config with two
 * tasks (a classification and a regression) trained briefly over libp2p,
 * then loaded through the library (`loadSite`) and through the CLI
 * (`dflmoe predict` / `evaluate`, from the site's directory and from a
 * browser tab's zip of it). One training run serves every test here. And a
 * `crossTask` site restored from its checkpoint (in memory).
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { parse as parseCsv } from 'csv-parse/sync';
import { zipSync } from 'fflate';
import { loadSite, silentLogger, type TrainedSite } from '@dflmoe/core';
import {
  SitePredictor,
  algorithmSettings,
  createMultiTaskSite,
  getAlgorithm,
  memoryNetworks,
  prepareSiteTasks,
  runSite,
  scaledTask,
  sitePredictions,
  type MultiTaskSite,
} from '@dflmoe/core/internal';
import { featureSize, fitStandardizer, labelledRows, loadDataset, partition, taskDataset, type Dataset, type Standardizer } from '@dflmoe/data';
import { Rng } from '@dflmoe/data/internal';
import { runPeer } from '@dflmoe/p2p';
import { backend, cliAsync } from './helpers.js';
import { loneSiteConfig, tmpDir } from './fixtures/sites.js';

const TASKS = [
  { name: 'mortality', column: 'died', kind: 'classification' as const },
  { name: 'stay', column: 'los_days', kind: 'regression' as const },
];

/** Patients: age, bmi, ward; `died` (older patients more often), `los_days` (longer with age, in ward B); some label cells empty. */
function patients(file: string, rows: number, seed: number): { died: string[]; stay: number[] } {
  const rng = new Rng(seed);
  const died: string[] = [];
  const stay: number[] = [];
  const lines = Array.from({ length: rows }, (_, i) => {
    const age = 20 + Math.floor(rng.uniform() * 60);
    const ward = rng.uniform() < 0.5 ? 'A' : 'B';
    const d = age + (rng.uniform() - 0.5) * 16 > 55 ? '1' : '0';
    const s = Number((2 + 0.15 * age + (ward === 'B' ? 1 : 0) + (rng.uniform() - 0.5)).toFixed(2));
    // Every 7th row lacks `died`, every 11th `los_days` (row 76 lacks both).
    died.push(i % 7 === 6 ? '' : d);
    stay.push(i % 11 === 10 ? NaN : s);
    return [age, (18 + rng.uniform() * 15).toFixed(1), ward, died[i], Number.isNaN(stay[i]) ? '' : s].join(',');
  });
  writeFileSync(file, `age,bmi,ward,died,los_days\n${lines.join('\n')}\n`);
  return { died, stay };
}

/** Mean and population standard deviation of the finite values. */
function moments(v: number[]): { mean: number; std: number; min: number; max: number } {
  const x = v.filter(Number.isFinite);
  const mean = x.reduce((a, b) => a + b, 0) / x.length;
  return { mean, std: Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length), min: Math.min(...x), max: Math.max(...x) };
}

/** The site's directory as a browser tab's download (`site/...` in a zip). */
function zipOf(dir: string, file: string): string {
  const entries: Record<string, Uint8Array> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else entries[`site/${relative(dir, p)}`] = readFileSync(p);
    }
  };
  walk(dir);
  writeFileSync(file, zipSync(entries));
  return file;
}

describe('predict and evaluate a multi-task site', function () {
  this.timeout(120_000);
  const dir = tmpDir('dflmoe-mt-predict-');
  const evalFile = join(dir, 'labelled.csv');
  let truth: { died: string[]; stay: number[] };
  let out: string;
  let site: TrainedSite;

  before(async () => {
    await backend();
    patients(join(dir, 'train.csv'), 240, 1);
    truth = patients(evalFile, 120, 2);
    const cfg = await loneSiteConfig(dir, 'ward', {
      rounds: 12,
      data: { dataset: 'csv:train.csv', tasks: TASKS },
      model: { body: 'mlp:16', featureDim: 8 },
      train: { learningRate: 0.02 },
    });
    out = cfg.out;
    const r = await runPeer(cfg, { logger: silentLogger });
    assert.equal(r.rounds.length, 12);
    site = await loadSite(out, { logger: silentLogger });
  });
  after(() => site?.dispose());

  it("site.json records each task's kind, classes, target scale and column; loadSite rebuilds a head per task", () => {
    const desc = JSON.parse(readFileSync(join(out, 'site.json'), 'utf8')) as {
      model: { tasks: { name: string; kind: string; column: string; classNames: string[]; scale?: { mean: number; std: number } }[] };
    };
    assert.deepEqual(
      desc.model.tasks.map((t) => [t.name, t.kind, t.column]),
      [
        ['mortality', 'classification', 'died'],
        ['stay', 'regression', 'los_days'],
      ],
    );
    assert.deepEqual(desc.model.tasks[0].classNames, ['0', '1']);
    const scale = desc.model.tasks[1].scale!;
    const m = moments(
      readFileSync(join(dir, 'train.csv'), 'utf8')
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => (l.split(',')[4] === '' ? NaN : Number(l.split(',')[4]))),
    );
    assert.ok(
      Math.abs(scale.mean - m.mean) < 0.5 && scale.std > 0.5 * m.std && scale.std < 2 * m.std,
      `scale ${JSON.stringify(scale)} vs the training targets' ${m.mean}, ${m.std}`,
    );
    assert.deepEqual(
      site.tasks.map((t) => [t.name, t.kind]),
      [
        ['mortality', 'classification'],
        ['stay', 'regression'],
      ],
    );
    assert.deepEqual(site.classNames, ['0', '1'], "the first task's classes");
  });

  it("the library predicts every task (classes with probabilities; values in the target's units) and evaluates each over its labelled rows", async () => {
    const { inputs, predictions } = await site.predictTasksFile(evalFile);
    assert.deepEqual(Object.keys(predictions), ['mortality', 'stay']);
    const { mortality, stay } = predictions;
    assert.equal(mortality.numSamples, 120);
    assert.equal(mortality.probabilities.length, 240);
    for (let i = 0; i < 120; i++) assert.ok(Math.abs(mortality.probabilities[2 * i] + mortality.probabilities[2 * i + 1] - 1) < 1e-5);
    assert.equal(stay.values!.length, 120);
    assert.equal(stay.probabilities.length, 0);
    const target = moments(truth.stay);
    const predicted = moments(Array.from(stay.values!));
    assert.ok(
      predicted.mean > target.min && predicted.mean < target.max,
      `mean prediction ${predicted.mean} outside the target's range [${target.min}, ${target.max}]`,
    );
    assert.ok(Math.abs(predicted.mean - target.mean) < 0.5 * target.std, `mean prediction ${predicted.mean}, target mean ${target.mean}`);
    // One task by name gives the same numbers; without a name a multi-task site says what to do.
    assert.deepEqual(site.predict(inputs.features, 'stay').values, stay.values);
    assert.throws(
      () => site.predict(inputs.features),
      /this site learns 2 tasks \("mortality", "stay"\): name the task to predict, or predict them all with predictTasks/,
    );
    assert.throws(() => site.predict(inputs.features, 'age'), /this site has no task "age"; its tasks are "mortality", "stay"/);

    const { evaluations } = await site.evaluateTasksFile(evalFile);
    const lackDied = truth.died.filter((d) => d === '').length;
    const lackStay = truth.stay.filter((s) => Number.isNaN(s)).length;
    const e = evaluations.mortality;
    const r = evaluations.stay;
    assert.deepEqual([e.samples, e.skipped, r.samples, r.skipped], [120 - lackDied, lackDied, 120 - lackStay, lackStay]);
    const ones = truth.died.filter((d) => d === '1').length / (120 - lackDied);
    const majority = Math.max(ones, 1 - ones);
    assert.ok(e.metrics.accuracy > majority, `accuracy ${e.metrics.accuracy}, majority class ${majority}`);
    assert.deepEqual(Object.keys(e.metrics), ['accuracy', 'balancedAccuracy', 'macroF1']);
    assert.ok(r.metrics.rmse < target.std, `rmse ${r.metrics.rmse}, target sd ${target.std}`);
    // RMSE over the labelled rows, in the target's units, recomputed from the predictions.
    let se = 0;
    truth.stay.forEach((y, i) => (se += Number.isNaN(y) ? 0 : (stay.values![i] - y) ** 2));
    assert.ok(Math.abs(r.metrics.rmse - Math.sqrt(se / (120 - lackStay))) < 1e-4, `${r.metrics.rmse} vs ${Math.sqrt(se / (120 - lackStay))}`);
    // The same from labels in memory (-1 / NaN where a row lacks one), and one task's evaluation by name.
    const labels = { mortality: Int32Array.from(truth.died, (d) => (d === '' ? -1 : Number(d))), stay: Float32Array.from(truth.stay) };
    assert.deepEqual(site.evaluateTasks(inputs.features, labels), evaluations);
    assert.deepEqual((await site.evaluateFile(evalFile, { task: 'stay' })).evaluation, r);
  });

  it("a file with one task's label column evaluates that task only; the tensors are freed with the site", async () => {
    const lines = readFileSync(evalFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(',').slice(0, 4).join(','));
    const onlyDied = join(dir, 'died-only.csv');
    writeFileSync(onlyDied, lines.join('\n') + '\n');
    const { evaluations } = await site.evaluateTasksFile(onlyDied);
    assert.deepEqual(Object.keys(evaluations), ['mortality']);
    await assert.rejects(site.evaluateFile(onlyDied, { task: 'stay' }), /has no label column "los_days" of task "stay"/);
    const before = tf.memory().numTensors;
    (await loadSite(out)).dispose();
    assert.equal(tf.memory().numTensors, before, 'loading and disposing a multi-task site leaves no tensor');
  });

  it("a site.json whose tasks are not the agreement's, or of an unknown kind, is refused in one line before any checkpoint is read", async () => {
    const copy = join(dir, 'tampered');
    cpSync(out, copy, { recursive: true });
    const desc = JSON.parse(readFileSync(join(out, 'site.json'), 'utf8'));
    const write = (tasks: unknown[]) => writeFileSync(join(copy, 'site.json'), JSON.stringify({ ...desc, model: { ...desc.model, tasks } }));
    write([desc.model.tasks[0], { ...desc.model.tasks[1], name: 'cost' }]);
    await assert.rejects(
      loadSite(copy),
      /preprocessing\.json is not a dflmoe preprocessing file: the agreement has no regression task "cost" with the model's 0 classes/,
    );
    write([desc.model.tasks[0], { ...desc.model.tasks[1], kind: 'ranking' }]);
    await assert.rejects(
      loadSite(copy),
      /site\.json is not a dflmoe site description: model\.tasks\[1\] \("stay"\) is of kind "ranking"; this version knows classification, regression/,
    );
    write([desc.model.tasks[0], { ...desc.model.tasks[1], scale: { mean: 1, std: 0 } }]);
    await assert.rejects(loadSite(copy), /model\.tasks\[1\] \("stay"\): its target scale is not a finite mean and a positive standard deviation/);
  });

  it("dflmoe predict writes predicted:<task> columns (with each task's probabilities and gates), the same from the tab's zip; evaluate prints each task", async () => {
    const zip = zipOf(out, join(dir, 'dflmoe-site.zip'));
    const [p, z, text, json] = await Promise.all([
      cliAsync(['predict', '--site', out, '--input', evalFile]),
      cliAsync(['predict', '--site', zip, '--input', evalFile]),
      cliAsync(['evaluate', '--site', out, '--input', evalFile]),
      cliAsync(['evaluate', '--site', zip, '--input', evalFile, '--json']),
    ]);
    for (const r of [p, z, text, json]) assert.equal(r.status, 0, r.stderr);
    const rows = parseCsv(p.stdout) as string[][];
    assert.deepEqual(rows[0], [
      'input',
      'predicted:mortality',
      'prob:mortality:0',
      'prob:mortality:1',
      'gate:mortality:ward',
      'predicted:stay',
      'gate:stay:ward',
    ]);
    assert.equal(rows.length, 121);
    const { predictions } = await site.predictTasksFile(evalFile);
    rows.slice(1).forEach((row, i) => {
      assert.equal(row[1], predictions.mortality.classNames[predictions.mortality.predicted[i]]);
      assert.equal(Number(row[5]), predictions.stay.values![i]);
    });
    assert.equal(z.stdout, p.stdout, 'the zip predicts as the directory does');
    const { evaluations } = await site.evaluateTasksFile(evalFile);
    const lackDied = truth.died.filter((d) => d === '').length;
    assert.match(
      text.stdout,
      new RegExp(
        `task mortality \\(classification\\): accuracy [\\d.]+%, balanced accuracy [\\d.]+%, macro F1 [\\d.]+ on ${120 - lackDied} rows \\(${lackDied} without its label skipped\\)`,
      ),
    );
    const lackStay = truth.stay.filter((s) => Number.isNaN(s)).length;
    assert.match(
      text.stdout,
      new RegExp(
        `task stay \\(regression\\): rmse [\\d.]+, mae [\\d.]+, r2 -?[\\d.]+ on ${120 - lackStay} rows \\(${lackStay} without its label skipped\\), in the target's units`,
      ),
    );
    assert.match(text.stdout, /confusion matrix/);
    const parsed = JSON.parse(json.stdout) as { tasks: Record<string, { metrics: Record<string, number>; skipped: number }> };
    assert.deepEqual(Object.keys(parsed.tasks), ['mortality', 'stay']);
    assert.equal(parsed.tasks.mortality.metrics.accuracy, evaluations.mortality.metrics.accuracy);
    assert.equal(parsed.tasks.stay.metrics.rmse, evaluations.stay.metrics.rmse);
  });
});

/** Three dFLMoE sites on digits-tasks (digit | parity, high | high) with `crossTask`, in memory; `make(i)` builds site i afresh. */
function crossSites(ds: Dataset): { make(i: number): MultiTaskSite; st: Standardizer; test: Int32Array[]; dispose(): void } {
  const splits = partition(ds.labels, ds.classNames.length, 3, 'iid', { seed: 3, testFraction: 0.3, minSize: 10 }).map((s) => ({
    train: s.train.subarray(0, 60),
    test: s.test.subarray(0, 40),
  }));
  const st = fitStandardizer(ds.features, featureSize(ds), Int32Array.from(splits.flatMap((s) => [...s.train])));
  const info = (name: string) => {
    const view = taskDataset(ds, name);
    return scaledTask(view, Int32Array.from(splits.flatMap((s) => [...labelledRows(view, s.train)])));
  };
  const datas = splits.map((s, i) => prepareSiteTasks(ds, s, st, ds.siteTasks![i].map(info)));
  const a = getAlgorithm('dflmoe');
  const make = (i: number) =>
    createMultiTaskSite(
      a,
      {
        id: `site-${i}`,
        data: datas[i].tasks[0],
        body: { kind: 'mlp', hidden: [32] },
        featureDim: 16,
        headHidden: [],
        train: { seed: 10 + i, learningRate: 1e-2, epochs: 2 },
      },
      datas[i],
      { seed: 1, maxHeadBytes: 1 << 22, maxModelBytes: 1 << 26, ...algorithmSettings(a, {}).settings, crossTask: true } as never,
    );
  return {
    make,
    st,
    test: splits.map((s) => s.test),
    dispose: () => datas.forEach((d) => d.tasks.forEach((t) => tf.dispose([t.xTrain, t.yTrain, t.xTest, t.yTest]))),
  };
}

describe('a crossTask site restored from its checkpoint', function () {
  this.timeout(120_000);
  before(backend);

  it('predicts and reports exactly as the trained site, read-outs included; a checkpoint from before read-outs were kept still loads', async () => {
    const ds = loadDataset('digits-tasks');
    const before = tf.memory().numTensors;
    const built = crossSites(ds);
    const sites = [0, 1, 2].map((i) => built.make(i));
    const dir = tmpDir('dflmoe-xtask-ckpt-');
    const restored: MultiTaskSite[] = [];
    try {
      const nets = memoryNetworks(getAlgorithm('dflmoe'), sites, 1 << 26, silentLogger);
      await Promise.all(sites.map((s, i) => runSite(s, nets[i], { from: 1, rounds: 2 })));
      // site-1 learns parity and high; each task reads the other tasks' heads (digit from site-0).
      const site = sites[1];
      await site.checkpoint!.save(dir, 2, {}, 2);
      const rows = Array.from(built.test[1]);
      const raw = rows.flatMap((r) => Array.from(ds.features.subarray(r * featureSize(ds), (r + 1) * featureSize(ds))));
      const predictor = (s: MultiTaskSite) => new SitePredictor(s, built.st, ds.sampleShape, ds.classNames);
      const trained = predictor(site).predictTasks(raw);

      const again = built.make(1);
      restored.push(again);
      assert.equal((await again.checkpoint!.restore(dir, silentLogger))?.round, 2);
      assert.deepEqual(predictor(again).predictTasks(raw), trained, 'the same predictions, bit for bit');
      assert.deepEqual(again.taskResults(), site.taskResults(), 'a site resumed after its last round reports as the trained one');
      assert.deepEqual(again.resultExtras(), site.resultExtras());

      // The read-outs take part: each task's mixture alone predicts otherwise.
      const x = predictor(site).standardize(raw);
      try {
        const parts = site.taskSites();
        assert.ok(parts.every((p) => p.readOut));
        const mixture = parts.map((p) => sitePredictions(p.site, x, p.task.classNames, 512, p.task));
        for (const [i, p] of parts.entries()) assert.notDeepEqual(mixture[i].probabilities, trained[p.task.name].probabilities, p.task.name);

        // A checkpoint written before read-outs were kept (no cross.bin): it loads, and each task predicts with its own mixture.
        const [round] = readdirSync(dir).filter((d) => d.startsWith('round-'));
        const mf = join(dir, round, 'manifest.json');
        const m = JSON.parse(readFileSync(mf, 'utf8')) as { state: { cross?: unknown }; files: Record<string, unknown> };
        assert.ok(m.state.cross && m.files['cross.bin']);
        delete m.state.cross;
        delete m.files['cross.bin'];
        rmSync(join(dir, round, 'cross.bin'));
        writeFileSync(mf, JSON.stringify(m));
        const old = built.make(1);
        restored.push(old);
        assert.equal((await old.checkpoint!.restore(dir, silentLogger))?.round, 2);
        assert.ok(old.taskSites().every((p) => !p.readOut));
        const oldPredictions = predictor(old).predictTasks(raw);
        for (const [i, p] of parts.entries()) assert.deepEqual(oldPredictions[p.task.name].probabilities, mixture[i].probabilities, p.task.name);
      } finally {
        x.dispose();
      }
    } finally {
      [...sites, ...restored].forEach((s) => s.dispose());
      built.dispose();
    }
    assert.equal(tf.memory().numTensors, before, 'every tensor disposed');
  });
});
