/**
 * Bodies the host brings (#22): a tfjs LayersModel or a function building
 * one, wherever a body is accepted; a saved tfjs model named by a site
 * config; refused at creation, naming the layer and the size, when the
 * output is not `featureDim` features or a layer cannot be saved.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {
  BodyError,
  DflmoePeer,
  DflmoeSite,
  MemoryHub,
  bodyArchitecture,
  createLearner,
  loadSite,
  parseBodySpec,
  preparePeerData,
  disposePeerData,
  pretrainBody,
  readBodyWeights,
  silentLogger,
  simulate,
  writeBody,
  type DflmoeLearner,
  type Learner,
  type SavedSite,
} from '@dflmoe/core/internal';
import { loadDataset, partition, type Dataset } from '@dflmoe/data';
import { parsePeerConfig, runPeer } from '@dflmoe/p2p';
import { backend } from './helpers.js';
import { loneSiteConfig, tmpDir } from './fixtures/sites.js';

const FEATURES = 16;

function tabular(units = FEATURES): tfl.Sequential {
  return tfl.sequential({
    layers: [
      tfl.layers.dense({ inputShape: [30], units: 24, activation: 'relu' }),
      tfl.layers.batchNormalization(),
      tfl.layers.dropout({ rate: 0.1 }),
      tfl.layers.dense({ units, activation: 'relu' }),
    ],
  });
}

function branches(inputShape: number[], features: number): tfl.LayersModel {
  const input = tfl.input({ shape: inputShape });
  const a = tfl.layers.dense({ units: 8, activation: 'relu' }).apply(input) as tfl.SymbolicTensor;
  const b = tfl.layers.dense({ units: 8, activation: 'tanh' }).apply(input) as tfl.SymbolicTensor;
  const out = tfl.layers.dense({ units: features, activation: 'relu' }).apply(tfl.layers.concatenate().apply([a, b]) as tfl.SymbolicTensor);
  return tfl.model({ inputs: input, outputs: out as tfl.SymbolicTensor });
}

/** A layer nobody registered for serialization. */
class Unsaved extends tfl.layers.Layer {
  static className = 'UnsavedScale';
  override call(x: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.mul(Array.isArray(x) ? x[0] : x, 2);
  }
}

describe('custom bodies', function () {
  this.timeout(180000);
  let ds: Dataset;
  const learners: DflmoeLearner[] = [];
  before(async () => {
    await backend();
    ds = loadDataset('breast-cancer');
  });
  afterEach(() => learners.splice(0).forEach((l) => l.dispose()));

  async function learner(id: string, hub: MemoryHub, body: unknown, split: number, extra: Record<string, unknown> = {}) {
    const splits = partition(ds.labels, 2, 3, 'iid', { seed: 3 });
    const l = await createLearner({
      id,
      dataset: ds,
      split: splits[split],
      exchange: hub.join(id),
      model: { body: body as never, featureDim: FEATURES },
      train: { seed: split, learningRate: 0.01 },
      ...extra,
    });
    learners.push(l);
    return l as Learner; // the class behind the public interface: the test looks at the site's model (peer)
  }

  it("a LayersModel and a function train as bodies; the host's model is copied, not trained; no tensor leaks across rounds", async () => {
    const mine = tabular();
    const before = mine.getWeights().map((w) => Array.from(w.dataSync()));
    const hub = new MemoryHub();
    const a = await learner('a', hub, mine, 0);
    const b = await learner('b', hub, branches, 1);
    assert.match(a.peer.bodySpec.kind === 'custom' ? a.peer.bodySpec.arch! : '', /^custom:[0-9a-f]{16}$/);
    assert.notEqual(a.peer.body, mine, 'the site trains its own copy');
    let tensors = 0;
    for (let r = 1; r <= 4; r++) {
      const [ma, mb] = [await a.runRound(), await b.runRound()];
      if (r === 2) tensors = tf.memory().numTensors;
      if (r > 2) assert.equal(tf.memory().numTensors, tensors, `round ${r}: tensors`);
      if (r === 4) {
        assert.ok(ma.accuracy > 0.85 && mb.accuracy > 0.85, `${ma.accuracy} ${mb.accuracy}`);
        assert.deepEqual(
          ma.experts.map((e) => e.peer),
          ['b'],
        );
      }
    }
    assert.deepEqual(
      mine.getWeights().map((w) => Array.from(w.dataSync())),
      before,
      'the host model is untouched',
    );
    const p = a.predict(ds.features.subarray(0, 3 * 30));
    assert.equal(p.predicted.length, 3);
    mine.dispose();
  });

  it('refuses a body whose output is not featureDim features, naming the layer and both sizes', async () => {
    const hub = new MemoryHub();
    const wrong = tabular(8);
    await assert.rejects(
      learner('a', hub, wrong, 0),
      (e: Error) =>
        e instanceof BodyError &&
        new RegExp(`last layer "${wrong.layers[3].name}" outputs \\[8\\] per sample; the head takes a vector of featureDim = 16`).test(e.message),
    );
    const image = () => tfl.sequential({ layers: [tfl.layers.reshape({ inputShape: [30], targetShape: [15, 2] }), tfl.layers.dense({ units: FEATURES })] });
    await assert.rejects(learner('b', hub, image, 0), /outputs \[15,16\] per sample/);
    const otherInput = () => tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [12], units: FEATURES })] });
    await assert.rejects(learner('c', hub, otherInput, 0), /takes samples of shape \[12\]; this data's samples have shape \[30\]/);
    await assert.rejects(
      learner('d', hub, () => 'not a model', 0),
      /returned string, not a tfjs LayersModel/,
    );
  });

  it('refuses a body holding a layer it cannot save, naming the layer', async () => {
    const input = tfl.input({ shape: [30] });
    const h = tfl.layers.dense({ units: FEATURES }).apply(input) as tfl.SymbolicTensor;
    const odd = new Unsaved({ name: 'my_scale' }).apply(h) as tfl.SymbolicTensor;
    const m = tfl.model({ inputs: input, outputs: odd });
    await assert.rejects(
      learner('a', new MemoryHub(), m, 0),
      (e: Error) => e instanceof BodyError && /layer "my_scale" cannot be saved: its class UnsavedScale is not registered for serialization/.test(e.message),
    );
    await assert.rejects(
      learner('b', new MemoryHub(), () => m, 0),
      /layer "my_scale" cannot be saved/,
    );
  });

  it('the architecture string ignores names and initial weights; bodies are combined only with the same architecture', async () => {
    assert.equal(bodyArchitecture(tabular()), bodyArchitecture(tabular()));
    assert.notEqual(bodyArchitecture(tabular()), bodyArchitecture(tabular(12)));
    const start = tabular();
    const heads = new MemoryHub();
    const bodies = new MemoryHub();
    const share = { bodies: undefined as unknown, model: { body: start, featureDim: FEATURES } };
    const mk = (id: string, body: unknown, i: number) =>
      learner(id, heads, body, i, { ...share, bodies: bodies.join(id), model: { body, featureDim: FEATURES } });
    const [a, b, c] = [await mk('a', start, 0), await mk('b', start, 1), await mk('c', branches, 2)];
    let last;
    for (let r = 1; r <= 3; r++) last = [await a.runRound(), await b.runRound(), await c.runRound()];
    assert.deepEqual(
      last![0].bodies?.map((x) => x.peer),
      ['b'],
      "a combines b's body (same network), not c's",
    );
    assert.deepEqual(last![2].bodies?.map((x) => x.peer) ?? [], [], 'c has no partner with its network');
    start.dispose();
  });

  it('a site config names a saved tfjs model (tfjs:<dir>); the peer trains it, checkpoints it, and loadSite rebuilds it; pretrainBody takes one too', async () => {
    const dir = tmpDir('dflmoe-custom-');
    const saved = branches([30], FEATURES);
    await writeBody(join(dir, 'lab-body'), saved);
    const cfg = await loneSiteConfig(dir, 'lab', {
      data: { dataset: 'breast-cancer' },
      model: { body: 'tfjs:lab-body', featureDim: FEATURES },
    });
    assert.equal(cfg.model.body, `tfjs:${join(dir, 'lab-body')}`);
    assert.throws(
      () =>
        parsePeerConfig(
          { key: 'site.key', out: 'o', data: { dataset: 'digits' }, model: { body: 'tfjs:nowhere' }, rounds: 1, listen: ['/ip4/127.0.0.1/tcp/0'] },
          'x.json',
          dir,
        ),
      /model\.body: .*nowhere not found/,
    );
    const r = await runPeer(cfg, { logger: silentLogger });
    assert.equal(r.rounds.length, 2);
    assert.equal(JSON.parse(readFileSync(join(cfg.out, 'site.json'), 'utf8')).model.body, `tfjs:${join(dir, 'lab-body')}`);
    const site = await loadSite(cfg.out);
    try {
      // The rebuilt body holds the trained weights of the last checkpoint (not the saved model's, nor fresh ones).
      const trained = readBodyWeights(join(cfg.out, 'checkpoints', 'round-000002', 'body'));
      const fromCkpt = tf.io.decodeWeights(trained.data, trained.specs);
      const body = ((site as SavedSite).site as DflmoeSite).peer.body;
      body.weights.forEach((v, i) => assert.deepEqual(Array.from(v.read().dataSync()), Array.from(fromCkpt[trained.specs[i].name].dataSync())));
      assert.notDeepEqual(Array.from(body.weights[0].read().dataSync()), Array.from(saved.weights[0].read().dataSync()), 'trained, so not the saved start');
      tf.dispose(Object.values(fromCkpt));
      const ev = site.evaluate(ds.features.subarray(0, 100 * 30), ds.labels.subarray(0, 100));
      assert.ok(ev.accuracy > 0.6, `accuracy ${ev.accuracy}`);
    } finally {
      site.dispose();
    }

    // pretrainBody trains a custom body; a site with the same network starts from its weights.
    const out = join(dir, 'pretrained');
    await pretrainBody(ds, out, { body: branches, featureDim: FEATURES, epochs: 1, batchSize: 32, learningRate: 0.01, optimizer: 'adam', seed: 1 });
    const w = readBodyWeights(out);
    const data = preparePeerData(ds, partition(ds.labels, 2, 1, 'iid', { seed: 1 })[0]);
    const peer = new DflmoePeer({ id: 'x', data, body: branches, featureDim: FEATURES, headHidden: [], train: {}, initialBody: w });
    try {
      const fromFile = tf.io.decodeWeights(w.data, w.specs);
      peer.body.weights.forEach((v, i) => assert.deepEqual(Array.from(v.read().dataSync()), Array.from(fromFile[w.specs[i].name].dataSync())));
      tf.dispose(Object.values(fromFile));
    } finally {
      peer.dispose();
      disposePeerData(data);
    }
    assert.equal(parseBodySpec('tfjs:x').kind, 'custom');
    saved.dispose();
  });
});

describe('simulate with a saved body', () => {
  before(backend);

  it('simulate --body tfjs:<dir> builds one sequential body per site, for every algorithm (the saved config is not used up by the first site)', async () => {
    const dir = tmpDir('dflmoe-sim-saved-body-');
    const saved = tfl.sequential({
      layers: [
        tfl.layers.flatten({ inputShape: [8, 8, 1] }),
        tfl.layers.dense({ units: 24, activation: 'relu' }),
        tfl.layers.dense({ units: FEATURES, activation: 'relu' }),
      ],
    });
    await writeBody(join(dir, 'body'), saved);
    saved.dispose();
    const r = await simulate(
      {
        dataset: 'digits',
        peers: 3,
        rounds: 3,
        partition: 'iid',
        algorithms: ['dflmoe', 'local'],
        bodies: [`tfjs:${join(dir, 'body')}`],
        featureDim: FEATURES,
        learningRate: 3e-3,
      },
      { logger: silentLogger },
    );
    for (const a of [r.algorithms.dflmoe!, r.algorithms.local!]) {
      assert.equal(a.peers.length, 3);
      // Ten classes: chance is 10%; three rounds of training on a built body get well above it.
      assert.ok(a.accuracy.mean > 0.3, `accuracy ${a.accuracy.mean}`);
    }
  });
});
