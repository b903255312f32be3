/**
 * A body pretrained on public data (`dflmoe pretrain`, `model.pretrainedBody`,
 * `--pretrained-body`), optionally frozen: written and read back exactly,
 * refused clearly when it does not fit, never trained when frozen, and used
 * with its own input statistics by the simulator, a site process and the
 * embedding API.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  BodyFileError,
  DflmoePeer,
  checkBodyStandardizer,
  LocalPeer,
  disposePeerData,
  parseBodySpec,
  preparePeerData,
  pretrainBody,
  publicRows,
  readBodyWeights,
  silentLogger,
  simulate,
  type PeerData,
  type PeerModelOptions,
} from '@dflmoe/core/internal';
import { featureSize, loadDataset, subsampleRows, type Dataset } from '@dflmoe/data';
import { ConfigError, parsePeerConfig, prepareSiteData, siteSettings } from '@dflmoe/p2p/internal';
import { DEFAULT_SIMULATION } from '@dflmoe/core';
import { backend, cliAsync } from './helpers.js';
import { tmpDir } from './fixtures/sites.js';

const SUBSET = 600;
const quiet = silentLogger;

describe('a body pretrained on public data', function () {
  this.timeout(180000);
  let ds: Dataset;
  let bodyDir: string;
  let data: PeerData;
  let trainRows = 0;
  let holdoutRows = 0;
  let accuracy = 0;
  const opts = (extra: Partial<PeerModelOptions> = {}): PeerModelOptions => ({
    id: 'a',
    data,
    body: parseBodySpec('mlp:32'),
    featureDim: 16,
    headHidden: [],
    train: { epochs: 1, batchSize: 32, learningRate: 3e-3, optimizer: 'adam', seed: 4 },
    ...extra,
  });

  before(async () => {
    await backend();
    ds = loadDataset('digits');
    bodyDir = join(tmpDir('dflmoe-body-'), 'body');
    // Public rows: every digits row a 600-row subset with seed 1 leaves out.
    const r = await pretrainBody(ds, bodyDir, {
      body: 'mlp:32',
      featureDim: 16,
      epochs: 8,
      batchSize: 32,
      learningRate: 3e-3,
      optimizer: 'adam',
      seed: 1,
      exclude: subsampleRows(ds.numSamples, SUBSET, 1),
    });
    ({ trainRows, holdoutRows, accuracy } = r);
    const rows = subsampleRows(ds.numSamples, SUBSET, 1);
    data = preparePeerData(ds, { train: rows.slice(0, 400), test: rows.slice(400) }, readBodyWeights(bodyDir).standardizer);
  });
  after(() => disposePeerData(data));

  it('learns from the public rows only, and the written body loads back exactly', () => {
    const excluded = new Set(subsampleRows(ds.numSamples, SUBSET, 1));
    const pub = publicRows(ds.numSamples, 1, [...excluded]);
    assert.equal(pub.length, ds.numSamples - SUBSET);
    assert.ok(
      pub.every((r) => !excluded.has(r)),
      'no pretraining row is a site row',
    );
    assert.equal(trainRows + holdoutRows, ds.numSamples - SUBSET);
    assert.ok(accuracy > 0.85, `held-out accuracy ${accuracy}`);
    const w = readBodyWeights(bodyDir);
    assert.equal(w.standardizer?.mean.length, featureSize(ds));
    assert.ok(w.standardizer!.std.every((s) => s > 0));

    const t0 = tf.memory().numTensors;
    // Two models with different initial seeds and the same pretrained body compute the same features; a third without it does not.
    const a = new LocalPeer(opts({ initialBody: w, initSeed: 11 }));
    const b = new LocalPeer(opts({ initialBody: w, initSeed: 12 }));
    const c = new LocalPeer(opts({ initSeed: 11 }));
    try {
      const x = tf.slice(data.xTest, [0, 0], [20, -1]);
      const [fa, fb, fc] = [a, b, c].map((m) => tf.tidy(() => m.features(x, false).arraySync()));
      assert.deepEqual(fa, fb);
      assert.notDeepEqual(fa, fc);
      tf.dispose(x);
    } finally {
      [a, b, c].forEach((m) => m.dispose());
    }
    assert.equal(tf.memory().numTensors, t0, 'every tensor freed');
  });

  it('a body that does not fit, or a damaged file, is one clear error', () => {
    const w = readBodyWeights(bodyDir);
    const t0 = tf.memory().numTensors;
    assert.throws(
      () => new LocalPeer(opts({ initialBody: w, featureDim: 8 })),
      (e: Error) => e instanceof BodyFileError && /shape \[32,16\].*expects \[32,8\]/.test(e.message),
    );
    assert.throws(() => new LocalPeer(opts({ initialBody: w, body: parseBodySpec('mlp:32x32') })), /holds 4 body weights, this body has 6/);
    assert.equal(tf.memory().numTensors, t0, 'a refused body leaves no tensors behind');
    assert.throws(() => readBodyWeights(join(bodyDir, 'nope')), /no such file/);
    const named = { source: 'b', standardizer: { mean: new Float32Array(2), std: Float32Array.of(1, 1), featureNames: ['age', 'size'] } };
    assert.throws(() => checkBodyStandardizer(named, 3), /trained on 2 input features, this data has 3/);
    assert.throws(() => checkBodyStandardizer(named, 2, ['age', 'ward=A']), /input feature 2 is "ward=A" here but "size" in the body's public data/);
    checkBodyStandardizer(named, 2, ['age', 'size']);

    const copy = join(tmpDir('dflmoe-body-'), 'b');
    const cp = (name: string, f: (b: Buffer) => Buffer | string = (b) => b) => writeFileSync(join(copy, name), f(readFileSync(join(bodyDir, name))));
    mkdirSync(copy);
    cp('model.json');
    cp('weights.bin', (b) => b.subarray(0, b.length - 4));
    cp('standardizer.json');
    assert.throws(() => readBodyWeights(copy), /weight files hold \d+ bytes, the manifest describes \d+/);
    cp('weights.bin');
    cp('standardizer.json', (b) => JSON.stringify({ ...JSON.parse(b.toString()), std: [0, ...JSON.parse(b.toString()).std.slice(1)] }));
    assert.throws(() => readBodyWeights(copy), /std above 0/);
    cp('standardizer.json', () => '{');
    assert.throws(() => readBodyWeights(copy), /standardizer\.json: not JSON/);
  });

  it('a frozen body never changes while the head (and the gate) learn; rounds do not leak', async () => {
    const w = readBodyWeights(bodyDir);
    for (const make of [(o: PeerModelOptions) => new LocalPeer(o), (o: PeerModelOptions) => new DflmoePeer(o)]) {
      // A linear head from a random start needs a higher rate than the whole model to catch up in a few rounds.
      const m = make(opts({ initialBody: w, freezeBody: true, train: { ...opts().train, learningRate: 0.03 } }));
      try {
        const body0 = m.body.getWeights().map((t) => t.dataSync().slice());
        const head0 = m.head[0].kernel.dataSync().slice();
        await m.trainRound(1);
        const t1 = tf.memory().numTensors;
        await m.trainRound(2);
        await m.trainRound(3);
        assert.equal(tf.memory().numTensors, t1, 'no tensor leaks across rounds');
        m.body.getWeights().forEach((t, i) => assert.deepEqual(t.dataSync(), body0[i], `body weight ${i} moved`));
        assert.notDeepEqual(m.head[0].kernel.dataSync(), head0, 'the head trains');
        assert.ok(m.evaluate().accuracy > 0.8, `a linear head on the public body: ${m.evaluate().accuracy}`);
      } finally {
        m.dispose();
      }
    }
  });

  it('simulate: every site starts from the body; frozen, it is far ahead of a frozen random body', async () => {
    const base = {
      dataset: 'digits',
      datasetOptions: { maxSamples: SUBSET },
      seed: 1,
      peers: 3,
      partition: 'iid',
      rounds: 3,
      algorithms: ['local' as const, 'dflmoe' as const],
      bodies: ['mlp:32'],
      featureDim: 16,
      learningRate: 0.03,
      freezeBody: true,
    };
    const pre = await simulate({ ...base, pretrainedBody: bodyDir }, { logger: quiet });
    const scratch = await simulate({ ...base, algorithms: ['local'] }, { logger: quiet });
    const [pl, pd, sl] = [pre.algorithms.local!, pre.algorithms.dflmoe!, scratch.algorithms.local!].map((a) => a.accuracy.mean);
    assert.ok(pl > 0.85 && pd > 0.85, `pretrained and frozen: local ${pl}, dflmoe ${pd}`);
    assert.ok(pl > sl + 0.15, `a frozen random body: ${sl}, the public one: ${pl}`);
    await assert.rejects(simulate({ ...base, featureDim: 8, pretrainedBody: bodyDir }, { logger: quiet }), BodyFileError);
  });

  it("a site config names the body relative to itself; the site standardizes with the body's statistics", async () => {
    const dir = tmpDir();
    const raw = {
      key: 'site.key',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      rounds: 1,
      out: 'out',
      algorithm: 'local',
      data: { dataset: 'digits', simulate: { peers: 2, index: 0, partition: 'iid' } },
      model: { body: 'mlp:32', featureDim: 16, pretrainedBody: join('..', ...bodyDir.split('/').slice(-2)), freezeBody: true },
    };
    // The body directory sits beside `dir` in the temp folder; the relative path is resolved against the config file.
    const cfg = parsePeerConfig(raw, join(dir, 'site.json'), dir);
    mkdirSync(cfg.out);
    assert.equal(cfg.model.pretrainedBody, bodyDir);
    assert.equal(cfg.model.freezeBody, true);
    assert.throws(
      () => parsePeerConfig({ ...raw, model: { pretrainedBody: 'missing' } }, 'site.json', dir),
      (e: Error) => e instanceof ConfigError && /model\.pretrainedBody: .*missing not found/.test(e.message),
    );

    const prepared = await prepareSiteData(cfg, { selfId: 'self', logger: quiet, resume: false });
    try {
      const saved = JSON.parse(readFileSync(join(cfg.out, 'preprocessing.json'), 'utf8'));
      assert.equal(saved.standardizerFrom, bodyDir);
      const st = readBodyWeights(bodyDir).standardizer!;
      assert.deepEqual(saved.standardizer.mean, Array.from(st.mean));
      assert.deepEqual(saved.standardizer.std, Array.from(st.std));
    } finally {
      disposePeerData(prepared.data);
    }

    const settings = siteSettings({ ...DEFAULT_SIMULATION, dataset: 'digits', pretrainedBody: 'rel/body', freezeBody: true }, 0);
    assert.ok(
      settings.model.pretrainedBody?.endsWith('/rel/body') && settings.model.pretrainedBody.startsWith('/'),
      'simulate --transport tcp writes an absolute path',
    );
    assert.equal(settings.model.freezeBody, true);
  });

  it('dflmoe pretrain writes a body from the CLI, and a bad dataset is one line, not a stack trace', async () => {
    const out = join(tmpDir('dflmoe-body-'), 'cli-body');
    // Three independent runs, at once (the bad one stops before it writes anything).
    const [ok, csv, bad] = await Promise.all([
      cliAsync(['pretrain', '--dataset', 'digits', '--body', 'mlp:16', '--feature-dim', '8', '--epochs', '1', '--max-rows', '300', '--out', out]),
      cliAsync([
        'pretrain',
        '--dataset',
        'csv:packages/data/datasets/breast-cancer.csv',
        '--label-column',
        'diagnosis',
        '--epochs',
        '1',
        '--out',
        `${out}-csv`,
      ]),
      cliAsync(['pretrain', '--dataset', 'nope', '--out', out]),
    ]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /pretrained on 270 rows of digits; held-out accuracy \d+\.\d\d% on 30 rows/);
    for (const f of ['model.json', 'weights.bin', 'standardizer.json']) assert.ok(existsSync(join(out, f)), f);
    // A table: the body records its encoded columns, so a site with other columns is refused rather than fed shuffled inputs.
    assert.equal(csv.status, 0, csv.stderr);
    const st = readBodyWeights(`${out}-csv`).standardizer!;
    assert.equal(st.featureNames?.length, 30);
    assert.equal(st.featureNames?.[0], 'mean radius');
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /Unknown dataset "nope"/);
    assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
  });
});
