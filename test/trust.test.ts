/**
 * Trust holes closed in review (in process): FedAvg uploads checked and
 * sample counts bounded, gossip's sample counts bounded, strikes that
 * decay, the quorum counted without the site itself, and site configs that
 * carry every simulation option.
 */
import assert from 'node:assert/strict';
import {
  CodecError,
  SETTINGS,
  settingsList,
  simulationSettings,
  DEFAULT_SIMULATION,
  FedAvgClient,
  GossipSite,
  RoundAggregator,
  disposePeerData,
  encodeBundle,
  federatedAverage,
  silentLogger,
  type NamedArray,
  type PeerData,
  type SimulationConfig,
} from '@dflmoe/core/internal';
import { ConfigError, SIMULATION_OPTION_KINDS, StrikeBook, generateIdentity, parsePeerConfig, saveIdentity, siteSettings } from '@dflmoe/p2p/internal';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backend, tinyPeers } from './helpers.js';

const client = (data: PeerData, i: number) =>
  new FedAvgClient({ id: `c${i}`, data, body: { kind: 'mlp', hidden: [16] }, featureDim: 8, headHidden: [], train: { seed: i }, initSeed: 7 });

const close = (a: NamedArray[], b: NamedArray[]) => a.every((t, i) => t.data.every((v, j) => Math.abs(v - b[i].data[j]) < 1e-6));

describe('FedAvg uploads are checked before they are accepted', () => {
  before(backend);

  async function setup() {
    const { datas } = tinyPeers(3);
    const cs = datas.map(client);
    for (const [i, c] of cs.entries()) await c.trainRound(i + 1);
    const arch = cs[0].architecture();
    const good = cs.map((c) => c.getWeights());
    return { datas, cs, arch, good, dispose: () => (cs.forEach((c) => c.dispose()), datas.forEach(disposePeerData)) };
  }

  it('a wrong-size tensor sent first neither stops the round nor knocks out the honest uploads; later it is refused at once', async () => {
    const { cs, arch, good, dispose } = await setup();
    const agg = new RoundAggregator(federatedAverage, { maxBytes: 1 << 26 });
    const bad = good[0].map((t, i) => (i === 1 ? { ...t, shape: [t.data.length + 3], data: new Float32Array(t.data.length + 3) } : t));
    agg.accept('evil', 9, 100, encodeBundle('model', { arch }, bad));
    cs.forEach((c, i) => agg.accept(c.id, i, c.data.trainSamples, c.encodeModel(1)));
    const r = agg.finish(1);
    assert.equal(r.clients, 3);
    assert.deepEqual(r.refused, ['evil']);
    const expected = federatedAverage(cs.map((c, i) => ({ weights: good[i], samples: c.data.trainSamples })));
    cs[0].loadModel(r.global, { maxBytes: 1 << 26 });
    assert.ok(close(cs[0].getWeights(), expected), 'the global model is the honest average');
    // From now on the consortium's layout is known: wrong sizes, names and counts are refused on arrival.
    assert.throws(
      () => agg.accept('evil', 9, 100, encodeBundle('model', { arch }, bad)),
      (e: Error) => e instanceof CodecError && e.reason === 'mismatch',
    );
    const renamed = good[0].map((t, i) => ({ ...t, name: `x${i}` }));
    assert.throws(() => agg.accept('evil', 9, 100, encodeBundle('model', { arch }, renamed)), /tensor 0 is "?x0/);
    assert.throws(() => agg.accept('evil', 9, 100, encodeBundle('model', { arch }, good[0].slice(1))), /tensors, expected/);
    const repeated = good[0].map((t) => ({ ...t, name: 'w0' }));
    assert.throws(() => agg.accept('evil', 9, 100, encodeBundle('model', { arch }, repeated)), /repeated/);
    const nan = good[0].map((t, i) => (i === 0 ? { ...t, data: t.data.map((v, j) => (j === 2 ? NaN : v)) } : t));
    assert.throws(
      () => agg.accept('evil', 9, 100, encodeBundle('model', { arch }, nan)),
      (e: Error) => e instanceof CodecError && e.reason === 'nonfinite',
    );
    assert.throws(() => agg.accept('evil', 9, 2 ** 60, encodeBundle('model', { arch }, good[0])), /sample count/);
    assert.equal(agg.size, 0, 'nothing bad was kept');
    dispose();
  });

  it('a client claiming 2^52 samples is clipped to 10x the median, and keeps the count it declared first', async () => {
    const { cs, arch, good, dispose } = await setup();
    const agg = new RoundAggregator(federatedAverage, { maxBytes: 1 << 26 });
    const evilWeights = good[0].map((t) => ({ ...t, data: new Float32Array(t.data.length).fill(0.5) }));
    assert.deepEqual(agg.accept('evil', 3, 2 ** 52, encodeBundle('model', { arch }, evilWeights)), ['samples-clipped'], 'above maxSamples (2^31)');
    cs.forEach((c, i) => agg.accept(c.id, i, c.data.trainSamples, c.encodeModel(1)));
    const r = agg.finish(1);
    assert.deepEqual(r.clipped, ['evil']);
    const counts = cs.map((c) => c.data.trainSamples);
    const median = [...counts, 2 ** 52].sort((a, b) => a - b)[1];
    const expected = federatedAverage([...cs.map((c, i) => ({ weights: good[i], samples: counts[i] })), { weights: evilWeights, samples: 10 * median }]);
    cs[0].loadModel(r.global, { maxBytes: 1 << 26 });
    assert.ok(close(cs[0].getWeights(), expected), 'weighted with the clipped count');
    // A later, different claim does not change the declared count.
    assert.deepEqual(agg.accept('c1', 1, 5, cs[1].encodeModel(2)), ['samples-changed']);
    const cap = new RoundAggregator(federatedAverage, { maxBytes: 1 << 26, maxSamples: 1000 });
    assert.deepEqual(cap.accept('evil', 0, 5000, encodeBundle('model', { arch }, evilWeights)), ['samples-clipped']);
    dispose();
  });

  it("gossip: a member's sample count is the one it declared first, clipped to 10x the median of the mix", async () => {
    const { datas } = tinyPeers(3);
    const sites = datas.map(
      (d, i) =>
        new GossipSite(
          { id: `g${i}`, data: d, body: { kind: 'mlp', hidden: [16] }, featureDim: 8, headHidden: [], train: { seed: i } },
          { seed: 1, maxModelBytes: 1 << 26, maxStaleness: 3 },
        ),
    );
    for (const [i, s] of sites.entries()) await s.model.trainRound(i + 1);
    const w = sites.map((s) => s.model.getWeights());
    const evil = sites[2].model.encodeModel(1, { peer: 'g2', samples: 2 ** 31 });
    assert.equal(sites[0].take(sites[1].encode(1), 'g1', 1), 'added');
    assert.equal(sites[0].take(evil, 'g2', 1), 'added');
    sites[0].mix(1);
    const n = sites.map((s) => s.data.trainSamples);
    const median = [n[0], n[1], 2 ** 31].sort((a, b) => a - b)[1];
    const expected = federatedAverage([
      { weights: w[0], samples: n[0] },
      { weights: w[1], samples: n[1] },
      { weights: w[2], samples: 10 * median },
    ]);
    assert.ok(close(sites[0].model.getWeights(), expected), 'weighted with the clipped count');
    // Its next model claims another count: counted, and the first declaration stays.
    assert.equal(sites[0].take(sites[2].model.encodeModel(2, { peer: 'g2', samples: 3 }), 'g2', 2), 'replaced');
    assert.equal(sites[0].rejected()['samples-changed'], 1);
    sites.forEach((s) => s.dispose());
    datas.forEach(disposePeerData);
  });
});

describe('strikes decay; a quorum counts the other members', () => {
  it('strikes expire after decayMs, so an occasional bad message never blocks; a burst does', () => {
    let now = 0;
    const s = new StrikeBook({ maxStrikes: 3, blockMs: 1000, decayMs: 100, now: () => now });
    for (let i = 0; i < 20; i++) {
      assert.equal(s.strike('p'), false, `strike ${i} ${s.live('p')}`);
      now += 60;
    }
    assert.equal(s.isBlocked('p'), false);
    now += 200;
    s.strike('p');
    s.strike('p');
    assert.equal(s.strike('p'), true, 'three within 100 ms block');
    assert.equal(s.isBlocked('p'), true);
    now += 1001;
    assert.equal(s.isBlocked('p'), false, 'the block ends');
    assert.equal(s.live('p'), 0);
  });

  it('round.quorum above the number of other members is refused (the member list names the site itself)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-quorum-'));
    const ids = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity()]);
    saveIdentity(join(dir, 'a.key'), ids[0].privateKey, true);
    const members = ids.map((i) => ({ peerId: i.peerId, addrs: [] }));
    const cfg = (quorum: number) => ({
      key: 'a.key',
      listen: ['/ip4/127.0.0.1/tcp/1'],
      members,
      data: { dataset: 'breast-cancer' },
      rounds: 3,
      out: 'o',
      round: { quorum },
    });
    assert.doesNotThrow(() => parsePeerConfig(cfg(2), 'a.json', dir));
    assert.throws(
      () => parsePeerConfig(cfg(3), 'a.json', dir),
      (e: Error) => e instanceof ConfigError && /round\.quorum \(3\) exceeds the number of other members \(2\)/.test(e.message),
    );
  });
});

describe('site configs carry every simulation option', () => {
  const allKeys = (): string[] => [
    ...new Set([...Object.keys(DEFAULT_SIMULATION), 'dataset', 'datasetOptions', 'epochs', 'dp', 'trainPerSite', ...settingsList(SETTINGS).map((x) => x.name)]),
  ];

  it('every simulation option is carried into site configs, or refused as simulation-only (none silently dropped)', () => {
    const known = new Set<string>([...SIMULATION_OPTION_KINDS.perSite, ...SIMULATION_OPTION_KINDS.perConsortium, ...SIMULATION_OPTION_KINDS.simulationOnly]);
    assert.deepEqual(
      allKeys().filter((k) => !known.has(k)),
      [],
      'options that siteSettings does not know',
    );
    const sim: SimulationConfig = { ...DEFAULT_SIMULATION, dataset: 'breast-cancer', poisoned: 1 };
    assert.throws(() => siteSettings(sim, 0), /poisoned is a simulation-only option/);
    assert.throws(() => siteSettings({ ...sim, poisoned: 0, trainPerSite: 50 }, 0), /trainPerSite/);
  });

  it('a DP and admission simulation gives site configs with the same effective settings as the simulator', () => {
    const sim: SimulationConfig = {
      ...DEFAULT_SIMULATION,
      dataset: 'digits',
      peers: 3,
      seed: 9,
      bodies: ['mlp:32', 'cnn:4x8'],
      alpha: 0.35,
      admission: 0.5,
      standardize: 'local',
      dp: { noiseMultiplier: 1.1, clipNorm: 0.7, microbatches: 4, delta: 1e-6 },
      optimizer: 'sgd',
      learningRate: 0.05,
      fst: 'diag',
      distill: 0.1,
      datasetOptions: { maxSamples: 900 },
    };
    const eff = simulationSettings(sim, 'dflmoe');
    for (const i of [0, 1]) {
      const c = parsePeerConfig({ key: 'k', listen: ['/ip4/127.0.0.1/tcp/1'], out: 'o', ...siteSettings(sim, i) });
      assert.deepEqual(c.train.dp, { ...sim.dp }, 'DP settings');
      assert.equal(c.dflmoe.admission, 0.5, 'admission check');
      assert.deepEqual(
        { alpha: c.dflmoe.alpha, fst: c.dflmoe.fst, distill: c.dflmoe.distill, gateHidden: c.dflmoe.gateHidden, expertLrScale: c.dflmoe.expertLrScale },
        { alpha: 0.35, fst: 'diag', distill: 0.1, gateHidden: eff.gateHidden, expertLrScale: eff.expertLrScale },
      );
      assert.deepEqual(
        { ...c.train, dp: undefined },
        { epochs: eff.epochs, batchSize: sim.batchSize, learningRate: sim.learningRate, optimizer: sim.optimizer, dp: undefined },
      );
      assert.deepEqual(c.model, {
        body: sim.bodies[i],
        featureDim: sim.featureDim,
        headHidden: sim.headHidden,
        sharedInit: sim.sharedInit,
        freezeBody: sim.freezeBody,
      });
      // The partition settings sit in data or in data.simulate, as the config schema has them.
      const d = c.data as unknown as Record<string, unknown>;
      const part = (d.simulate ?? d) as Record<string, unknown>;
      assert.deepEqual(
        {
          dataset: d.dataset,
          seed: d.seed,
          testFraction: d.testFraction,
          standardize: d.standardize,
          maxSamples: d.maxSamples,
          peers: part.peers,
          index: part.index,
          partition: part.partition,
          minSize: part.minSize,
        },
        {
          dataset: 'digits',
          seed: 9,
          testFraction: sim.testFraction,
          standardize: 'local',
          maxSamples: 900,
          peers: 3,
          index: i,
          partition: sim.partition,
          minSize: sim.minSize,
        },
      );
      assert.equal(c.round.maxStaleness, eff.maxStaleness);
    }
  });

  it("a site config's defaults are the simulator's defaults", () => {
    const c = parsePeerConfig({
      key: 'k',
      listen: ['/ip4/127.0.0.1/tcp/1'],
      out: 'o',
      rounds: 2,
      data: { dataset: 'digits', simulate: { peers: 2, index: 0 } },
    });
    const d = { ...DEFAULT_SIMULATION, ...simulationSettings({ ...DEFAULT_SIMULATION, dataset: 'digits' }, 'dflmoe') };
    assert.deepEqual(
      // A site's federated statistics are the simulator's pooled ones (both call them federated).
      [
        c.data.standardize,
        c.data.seed,
        c.data.testFraction,
        c.data.simulate!.minSize,
        c.model.body,
        c.model.featureDim,
        c.model.sharedInit,
        c.train.epochs,
        c.train.batchSize,
        c.train.learningRate,
        c.train.optimizer,
        c.dflmoe.alpha,
        c.dflmoe.gateHidden,
        c.dflmoe.fst,
        c.dflmoe.distill,
        c.finetune.epochs,
        c.fedrep.headEpochs,
        c.round.maxStaleness,
      ],
      [
        d.standardize,
        d.seed,
        d.testFraction,
        d.minSize,
        d.bodies[0],
        d.featureDim,
        d.sharedInit,
        d.epochs,
        d.batchSize,
        d.learningRate,
        d.optimizer,
        d.alpha,
        d.gateHidden,
        d.fst,
        d.distill,
        d.fineTuneEpochs,
        d.headEpochs,
        d.maxStaleness,
      ],
    );
  });
});

describe('DP training samples and noises the way the accountant assumes', () => {
  before(backend);

  it('poissonSample takes each example independently with probability q', async () => {
    const { poissonSample } = await import('@dflmoe/core/internal');
    const n = 50;
    const q = 0.2;
    const hits = new Array<number>(n).fill(0);
    const sizes: number[] = [];
    for (let t = 0; t < 4000; t++) {
      const b = poissonSample(n, q);
      sizes.push(b.length);
      for (const i of b) hits[i]++;
      assert.ok(
        b.every((v, k) => k === 0 || v > b[k - 1]),
        'sorted, no repeats',
      );
    }
    const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length;
    const variance = sizes.reduce((a, b) => a + (b - mean) ** 2, 0) / sizes.length;
    assert.ok(Math.abs(mean - n * q) < 0.3, `mean batch ${mean}`);
    assert.ok(Math.abs(variance - n * q * (1 - q)) < 1, `variance ${variance} (binomial: ${n * q * (1 - q)})`);
    for (const h of hits) assert.ok(Math.abs(h / 4000 - q) < 0.035, `inclusion rate ${h / 4000}`);
  });

  it('secureGaussian draws N(0, 1) from node:crypto', async () => {
    const { secureGaussian } = await import('@dflmoe/core/internal');
    const z = secureGaussian(200001);
    assert.equal(z.length, 200001);
    let m1 = 0;
    let m2 = 0;
    let m4 = 0;
    for (const v of z) {
      m1 += v;
      m2 += v * v;
      m4 += v ** 4;
    }
    [m1, m2, m4] = [m1 / z.length, m2 / z.length, m4 / z.length];
    assert.ok(Math.abs(m1) < 0.01 && Math.abs(m2 - 1) < 0.02 && Math.abs(m4 - 3) < 0.1, `moments ${m1} ${m2} ${m4}`);
    assert.notDeepEqual(secureGaussian(8), secureGaussian(8));
  });

  it('DP-SGD steps draw Poisson batches (ceil(n / batch) per epoch) and unseeded noise; without DP nothing changes', async () => {
    const { LocalPeer, poissonSample } = await import('@dflmoe/core/internal');
    const { datas } = tinyPeers(1);
    const sizes: number[] = [];
    const sampler = (n: number, q: number) => {
      const b = poissonSample(n, q);
      sizes.push(b.length);
      return b;
    };
    const mk = (dp: boolean) =>
      new LocalPeer({
        id: 'a',
        data: datas[0],
        body: { kind: 'mlp', hidden: [16] },
        featureDim: 8,
        headHidden: [],
        train: { seed: 1, batchSize: 16, epochs: 2, sampler, ...(dp ? { dp: { noiseMultiplier: 1, clipNorm: 1 } } : {}) },
      });
    const n = datas[0].trainSamples;
    const [a, b] = [mk(true), mk(true)];
    await a.trainRound(1);
    assert.equal(sizes.length, 2 * Math.ceil(n / 16), 'one draw per step the accountant counts');
    assert.equal(a.privacySpent()!.steps, sizes.length);
    assert.ok(new Set(sizes).size > 2, `batch sizes vary: ${sizes}`);
    await b.trainRound(1);
    const w = (p: InstanceType<typeof LocalPeer>) => Array.from(p.head[0].kernel.dataSync());
    assert.notDeepEqual(w(a), w(b), 'same seed, different noise');
    sizes.length = 0;
    const [c, d] = [mk(false), mk(false)];
    await c.trainRound(1);
    await d.trainRound(1);
    assert.equal(sizes.length, 0, 'no DP: shuffled fixed-size batches');
    assert.deepEqual(w(c), w(d), 'no DP: reproducible');
    [a, b, c, d].forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });
});

describe('every site kind checkpoints and resumes', () => {
  before(backend);

  for (const name of ['local', 'fedrep', 'fedavg-ft', 'fedavg'] as const) {
    it(`${name}: a site restored from its checkpoint continues exactly as the original (weights, optimizer state, accountant)`, async () => {
      const { getAlgorithm, DEFAULT_ALGORITHM_OPTIONS } = await import('@dflmoe/core/internal');
      const { datas } = tinyPeers(1);
      const alg = getAlgorithm(name);
      const mk = () =>
        alg.createSite(
          {
            id: 's',
            data: datas[0],
            body: { kind: 'mlp', hidden: [16] },
            featureDim: 8,
            headHidden: [],
            train: { seed: 3, dp: { noiseMultiplier: 0, clipNorm: 100 } },
          },
          { ...DEFAULT_ALGORITHM_OPTIONS, seed: 1 },
        ) as unknown as {
          model: FedAvgClient;
          tuned?: FedAvgClient;
          checkpoint: NonNullable<import('@dflmoe/core/internal').AlgorithmSite['checkpoint']>;
          dispose(): void;
          privacySpent(): unknown;
        };
      const a = mk();
      await a.model.trainRound(1);
      if (a.tuned) await a.tuned.trainRound(1);
      const dir = mkdtempSync(join(tmpdir(), `dflmoe-ckpt-${name}-`));
      const w = await a.checkpoint.save(dir, 1, { note: name }, 2);
      assert.match(w.digest, /^[0-9a-f]{64}$/);
      const b = mk();
      const r = await b.checkpoint.restore(dir, silentLogger);
      assert.equal(r?.round, 1);
      assert.deepEqual(r?.extra, { note: name });
      assert.deepEqual(b.privacySpent(), a.privacySpent(), 'accountant');
      const weights = (s: typeof a) => [...s.model.variables(), ...(s.tuned ? s.tuned.variables() : [])].flatMap((v) => Array.from(v.dataSync()));
      assert.deepEqual(weights(b), weights(a), 'weights');
      // Noise 0 and clip 100: deterministic apart from sampling; train both without DP to compare optimizer state.
      for (const s of [a, b]) (s.model.train as { dp?: unknown }).dp = undefined;
      await a.model.trainRound(2);
      await b.model.trainRound(2);
      const diff = Math.max(...weights(a).map((v, i) => Math.abs(v - weights(b)[i])));
      assert.ok(diff < 1e-5, `after one more round: ${diff}`);
      a.dispose();
      b.dispose();
      datas.forEach(disposePeerData);
    });
  }
});
