/**
 * Body sharing (dFLMoE with shareBody, fedrep-p2p): combining, partners,
 * checks on received bodies, the round placement, checkpoints, DP, and the
 * default (heads only) left exactly as it was.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs-core';
import {
  BodyShare,
  DEFAULT_ALGORITHM_OPTIONS,
  createLearner,
  MemoryHub,
  bodyVariables,
  choosePartners,
  combineBodies,
  decodeBundle,
  dflmoe,
  encodeBundle,
  DEFAULT_SIMULATION,
  memoryNetworks,
  parseBodyCombiner,
  parseTopology,
  runSite,
  silentLogger,
  simulate,
  type AlgorithmOptions,
  type DflmoeSite,
  type SimulationResults,
  type NamedArray,
  type PeerData,
  type PeerModelOptions,
} from '@dflmoe/core/internal';
import { parsePeerConfig, siteSettings } from '@dflmoe/p2p/internal';
import { loadDataset, partition } from '@dflmoe/data';
import { backend, cli, tinyPeers } from './helpers.js';

const quiet = silentLogger;
const arr = (name: string, data: number[], shape = [data.length]): NamedArray => ({ name, shape, data: Float32Array.from(data) });
const opts = (o: Partial<AlgorithmOptions> = {}): AlgorithmOptions => ({ ...DEFAULT_ALGORITHM_OPTIONS, seed: 1, ...o });
const base = (datas: PeerData[], i: number, body = 'mlp'): PeerModelOptions => ({
  id: `p${i}`,
  data: datas[i],
  body: body === 'mlp' ? { kind: 'mlp', hidden: [16] } : { kind: 'mlp', hidden: [12] },
  featureDim: 8,
  headHidden: [],
  train: { seed: i },
  initSeed: 7,
});

describe('combining bodies', () => {
  it('mean weights by training rows, clipped to 10x the median like a server; median and trimmed are coordinate-wise', () => {
    const parts = [
      { weights: [arr('b0', [0, 10])], samples: 10 },
      { weights: [arr('b0', [2, 20])], samples: 30 },
      { weights: [arr('b0', [100, -50])], samples: 10 },
    ];
    const close = (a: Float32Array, b: number[]) =>
      assert.ok(
        b.every((x, i) => Math.abs(a[i] - x) < 1e-5),
        `${[...a]} vs ${b}`,
      );
    close(combineBodies(parts, { kind: 'mean' })[0].data, [(0 * 10 + 2 * 30 + 100 * 10) / 50, (100 + 600 - 500) / 50]);
    assert.deepEqual([...combineBodies(parts, { kind: 'median' })[0].data], [2, 10]);
    // A claim of a million rows counts as 10 times the median claim.
    const greedy = [
      { weights: [arr('b0', [0])], samples: 10 },
      { weights: [arr('b0', [0])], samples: 10 },
      { weights: [arr('b0', [12])], samples: 1e6 },
    ];
    close(combineBodies(greedy, { kind: 'mean' })[0].data, [(12 * 100) / 120]);
    const five = [1, 2, 3, 4, 100].map((v) => ({ weights: [arr('b0', [v])], samples: 1 }));
    assert.equal(combineBodies(five, { kind: 'trimmed', fraction: 0.2 })[0].data[0], 3);
    assert.equal(combineBodies(five, { kind: 'trimmed', fraction: 0 })[0].data[0], 22);
  });

  it('median and trimmed stay within the honest range whatever one member of five sends (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.float({ min: -10, max: 10, noNaN: true }), { minLength: 4, maxLength: 4 }),
        fc.float({ min: Math.fround(-1e30), max: Math.fround(1e30), noNaN: true }),
        (honest, evil) => {
          const parts = [...honest, evil].map((v) => ({ weights: [arr('b0', [v])], samples: 1 }));
          const lo = Math.min(...honest) - 1e-6;
          const hi = Math.max(...honest) + 1e-6;
          for (const c of [{ kind: 'median' } as const, { kind: 'trimmed', fraction: 0.2 } as const]) {
            const v = combineBodies(parts, c)[0].data[0];
            if (!(v >= lo && v <= hi)) return false;
          }
          return true;
        },
      ),
    );
  });

  it('parses combiners and topologies, and refuses bad ones with the forms it takes', () => {
    assert.deepEqual(parseBodyCombiner('trimmed:0.1'), { kind: 'trimmed', fraction: 0.1 });
    assert.throws(() => parseBodyCombiner('trimmed:0.5'), /below 0.5/);
    assert.throws(() => parseBodyCombiner('avg'), /use mean, median or trimmed/);
    assert.deepEqual(parseTopology('random:3'), { kind: 'random', k: 3 });
    assert.throws(() => parseTopology('random:0'), /full, ring or random/);
  });
});

describe('body partners', () => {
  const members = Array.from({ length: 20 }, (_, i) => `s${String(i).padStart(2, '0')}`);

  it('full: every other member; ring: the two neighbours by id; random:k: k members, drawn afresh each round and the same on a re-run', () => {
    assert.deepEqual(
      choosePartners('s05', members, 1, { kind: 'full' }, 1),
      members.filter((m) => m !== 's05'),
    );
    assert.deepEqual(choosePartners('s05', members, 1, { kind: 'ring' }, 1), ['s04', 's06']);
    assert.deepEqual(choosePartners('s00', members, 1, { kind: 'ring' }, 1).sort(), ['s01', 's19']);
    const draws = [1, 2, 3, 4].map((r) => choosePartners('s05', members, r, { kind: 'random', k: 4 }, 1));
    for (const d of draws) {
      assert.equal(d.length, 4);
      assert.ok(!d.includes('s05'));
    }
    assert.ok(new Set(draws.map((d) => d.join())).size > 1, 'another draw each round');
    assert.deepEqual(choosePartners('s05', members, 2, { kind: 'random', k: 4 }, 1), draws[1]);
    assert.deepEqual(choosePartners('s05', ['s05', 's01'], 2, { kind: 'random', k: 4 }, 1), ['s01'], 'fewer members than k: all of them');
  });
});

describe('BodyShare', () => {
  before(backend);
  const vars = (values: number[][]) => values.map((v) => tf.variable(tf.tensor1d(v)));
  const share = (id: string, vs: tf.Variable[], samples: number, arch = 'mlp', o: Partial<ConstructorParameters<typeof BodyShare>[4]> = {}) =>
    new BodyShare(id, () => vs, arch, samples, {
      every: 1,
      combiner: { kind: 'mean' },
      topology: { kind: 'full' },
      precision: 'float32',
      maxBytes: 1 << 20,
      maxStaleness: 3,
      seed: 1,
      ...o,
    });

  it('publishes, pulls through an exchange, and replaces the body with the row-weighted mean of its own and its partners', async () => {
    const hub = new MemoryHub({ lockstep: true });
    const va = vars([[0, 0], [1]]);
    const vb = vars([[4, 8], [3]]);
    const a = share('a', va, 10);
    const b = share('b', vb, 30);
    const [ea, eb] = [hub.join('a'), hub.join('b')];
    await Promise.all([a.publish(ea, 1), b.publish(eb, 1)]);
    assert.equal(await a.gather(ea, 1, { quorum: 1, deadlineMs: 1000, logger: quiet }), 1);
    assert.equal(await b.gather(eb, 1, { quorum: 1, deadlineMs: 1000, logger: quiet }), 1);
    const mixed = a.mix(1, 1, ['b']);
    b.mix(1, 1, ['a']);
    assert.deepEqual(
      mixed.map((m) => [m.peer, m.version]),
      [['b', 1]],
    );
    assert.match(mixed[0].digest, /^[0-9a-f]{64}$/);
    assert.equal(mixed[0].digest, b.lastPublished!.digest, 'the audit digest is the digest of the bytes published');
    for (const v of [va, vb]) {
      assert.deepEqual([...v[0].dataSync()], [3, 6]);
      assert.deepEqual([...v[1].dataSync()], [2.5]);
    }
    tf.dispose([...va, ...vb]);
  });

  it('refuses bad bodies with a reason and a count: wrong shape, NaN, oversized, forged sender, wrong kind; another architecture is no offence', () => {
    const vs = vars([[0, 0]]);
    const s = share('me', vs, 10, 'mlp', { maxBytes: 4096 });
    const body = (meta: Record<string, unknown>, data: number[], kind: 'body' | 'head' = 'body') =>
      encodeBundle(kind, { arch: 'mlp', round: 1, samples: 5, peer: 'x', ...meta }, [arr('b0', data)]);
    assert.equal(s.take(body({}, [1, 2, 3]), 'x', 1), 'shape');
    // A NaN planted in the last value: with the checksum left as it was, the checksum refuses it; with the
    // checksum made to match (a sender that means it), the finiteness check does.
    const nan = body({}, [1, 2]);
    const view = new DataView(nan.buffer, nan.byteOffset, nan.byteLength);
    view.setFloat32(nan.length - 8, NaN, true);
    assert.equal(s.take(nan, 'x', 1), 'checksum');
    view.setUint32(nan.length - 4, crc32(nan.subarray(0, nan.length - 4)), true);
    assert.equal(s.take(nan, 'x', 1), 'nonfinite');
    assert.equal(s.take(encodeBundle('body', { arch: 'mlp', round: 1, samples: 5, peer: 'x' }, [arr('b0', Array(2000).fill(1))]), 'x', 1), 'size');
    assert.equal(s.take(body({ peer: 'y' }, [1, 2]), 'x', 1), 'sender-mismatch');
    assert.equal(s.take(body({}, [1, 2], 'head'), 'x', 1), 'kind');
    assert.equal(s.take(body({ samples: -1 }, [1, 2]), 'x', 1), 'header');
    const notes: string[] = [];
    const log = { ...quiet, info: (m: string) => notes.push(m) };
    assert.equal(s.take(body({ arch: 'cnn' }, [1, 2]), 'x', 1, log), 'other-architecture');
    assert.equal(s.take(body({ arch: 'cnn', round: 2 }, [1, 2]), 'x', 2, log), 'other-architecture');
    assert.equal(notes.length, 1, 'said once per member');
    assert.match(notes[0], /combined only within this site's architecture group/);
    assert.deepEqual(s.partners(3, ['x', 'z']), ['z'], 'a member of another architecture is no partner');
    assert.deepEqual(Object.keys(s.counters).sort(), ['checksum', 'header', 'kind', 'nonfinite', 'sender-mismatch', 'shape', 'size']);
    tf.dispose(vs);
  });

  it('keeps only the newest body per member, and drops bodies older than maxStaleness rounds from the mix', () => {
    const vs = vars([[0, 0]]);
    const s = share('me', vs, 10, 'mlp', { maxStaleness: 1 });
    const b = (round: number) => encodeBundle('body', { arch: 'mlp', round, samples: 10, peer: 'x' }, [arr('b0', [2, 2])]);
    assert.equal(s.take(b(2), 'x', 2), 'added');
    assert.equal(s.take(b(1), 'x', 2), 'stale-version');
    assert.equal(s.mix(2, 4, ['x']).length, 0, 'received in round 2, too old in round 4');
    assert.deepEqual([...vs[0].dataSync()], [0, 0]);
    tf.dispose(vs);
  });
});

describe('dFLMoE with shared bodies and fedrep-p2p', () => {
  before(backend);

  it("fedrep-p2p reaches FedRep's accuracy with every member and no faults (same seed: within 0.5 points per site on average)", async () => {
    const r = await simulate(
      { dataset: 'digits', peers: 4, rounds: 4, partition: 'dirichlet:0.5', algorithms: ['fedrep', 'fedrep-p2p'], seed: 2 },
      { logger: quiet },
    );
    const a = r.algorithms.fedrep!.peers.map((p) => p.accuracy);
    const b = r.algorithms['fedrep-p2p']!.peers.map((p) => p.accuracy);
    const gap = a.reduce((s, x, i) => s + Math.abs(x - b[i]), 0) / a.length;
    assert.ok(gap <= 0.005, `mean per-site gap ${gap}`);
    assert.ok(r.algorithms['fedrep-p2p']!.bodyBytesSent! > 0);
    assert.equal(r.algorithms['fedrep-p2p']!.bodyBytesSent, r.algorithms['fedrep-p2p']!.bytesSent, 'only bodies travel');
  });

  it('the default (no shareBody) moves exactly the head bytes it moved before, and no body exchange is made', async () => {
    const { datas } = tinyPeers(3);
    const sites = datas.map((_, i) => dflmoe.createSite(base(datas, i), opts()));
    const nets = memoryNetworks(dflmoe, sites, 1 << 30, quiet);
    assert.ok(nets.every((n) => n.bodies === undefined));
    const recs = await Promise.all(sites.map((s, i) => runSite(s, nets[i], { rounds: 2 })));
    const head = (sites[0] as DflmoeSite).peer.encodeHead(1).length;
    for (const r of recs) {
      assert.equal(r[1].bytesSent, 2 * 2 * head, 'two rounds, two members, one head each');
      assert.equal(r[1].bodyBytesSent, undefined);
    }
    sites.forEach((s) => s.dispose());
    datas.forEach((d) => {
      d.xTrain.dispose();
      d.yTrain.dispose();
      d.xTest.dispose();
      d.yTest.dispose();
    });
  });

  it("with shareBody every site combines the others' bodies before training (bodies counted apart), and nothing leaks across rounds", async () => {
    const { datas } = tinyPeers(3);
    const t0 = tf.memory().numTensors;
    const sites = datas.map((_, i) => dflmoe.createSite(base(datas, i), opts({ shareBody: true })));
    const nets = memoryNetworks(dflmoe, sites, 1 << 30, quiet);
    const counts: number[] = [];
    const recs = await Promise.all(
      sites.map((s, i) =>
        runSite(s, nets[i], {
          rounds: 5,
          onRound: () => {
            if (i === 0) counts.push(tf.memory().numTensors);
          },
        }),
      ),
    );
    for (const r of recs) {
      assert.equal(r[0].bodies, undefined, "round 1 starts from the site's own body");
      assert.deepEqual(
        r[2].bodies!.map((b) => b.version),
        [2, 2],
        "round 3 combines both members' bodies of round 2",
      );
      assert.ok(r[4].bodyBytesSent! > 0 && r[4].bodyBytesSent! < r[4].bytesSent);
    }
    assert.deepEqual(counts.slice(2), [counts[1], counts[1], counts[1]], `tensor counts per round: ${counts}`);
    sites.forEach((s) => s.dispose());
    assert.equal(tf.memory().numTensors, t0, 'the sites free what they made');
    datas.forEach((d) => tf.dispose([d.xTrain, d.yTrain, d.xTest, d.yTest]));
  });

  it('heterogeneous bodies combine within their architecture group and keep training', async () => {
    const { datas } = tinyPeers(4);
    const sites = datas.map((_, i) => dflmoe.createSite(base(datas, i, i < 2 ? 'mlp' : 'other'), opts({ shareBody: true })));
    const nets = memoryNetworks(dflmoe, sites, 1 << 30, quiet);
    const recs = await Promise.all(sites.map((s, i) => runSite(s, nets[i], { rounds: 3 })));
    assert.deepEqual(
      recs.map((r) => r[2].bodies!.map((b) => b.peer)),
      [['p1'], ['p0'], ['p3'], ['p2']],
    );
    assert.ok(
      recs.every((r) => Number.isFinite(r[2].loss) && r[2].loss < r[0].loss),
      `losses ${recs.map((r) => [r[0].loss, r[2].loss])}`,
    );
    assert.ok(
      recs.every((r) => Object.keys(r[2].rejected).every((k) => !k.startsWith('body:'))),
      `another architecture is no offence: ${JSON.stringify(recs.map((r) => r[2].rejected))}`,
    );
    sites.forEach((s) => s.dispose());
  });

  it('checkpoints keep the bodies received, and a restored site combines the same', async () => {
    const { datas } = tinyPeers(2);
    const mk = () => datas.map((_, i) => dflmoe.createSite(base(datas, i), opts({ shareBody: true })) as DflmoeSite);
    const sites = mk();
    const nets = memoryNetworks(dflmoe, sites, 1 << 30, quiet);
    await Promise.all(sites.map((s, i) => runSite(s, nets[i], { rounds: 2 })));
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-body-ckpt-'));
    await sites[0].checkpoint.save(dir, 2, {}, 2);
    const again = mk();
    await again[0].checkpoint.restore(dir, quiet);
    assert.deepEqual([...again[0].bodyShare!.heldVersions()], [...sites[0].bodyShare!.heldVersions()]);
    // Round 2's bodies are combined at the start of round 3; the checkpoint of round 2 holds round 1's.
    assert.deepEqual([...again[0].bodyShare!.heldVersions()], [['p1', 1]]);
    const w = (s: DflmoeSite) => bodyVariables(s.peer.body).map((v) => [...v.dataSync()]);
    assert.deepEqual(w(again[0]), w(sites[0]));
    [...sites, ...again].forEach((s) => s.dispose());
  });

  it('the epsilon reported covers the published body: DP-SGD trains the body, so it is the same with and without sharing', async () => {
    const dp = { noiseMultiplier: 1.1, clipNorm: 1, delta: 1e-5 };
    // One epoch both ways (shareBody alone would bring its two): the same DP-SGD steps. Two rounds: the second combines the
    // bodies of the first.
    const run = (shareBody: boolean) =>
      simulate({ dataset: 'breast-cancer', peers: 3, rounds: 2, partition: 'iid', algorithms: ['dflmoe'], dp, shareBody, epochs: 1 }, { logger: quiet });
    const [a, b] = [await run(false), await run(true)];
    const eps = (r: typeof a) => r.algorithms.dflmoe!.peers.map((p) => p.privacy!.epsilon);
    assert.deepEqual(eps(b), eps(a));
    assert.ok(eps(b).every((e) => e > 0 && Number.isFinite(e)));
  });

  it('one member sending sign-flipped bodies: with the median the honest sites keep their accuracy', async () => {
    const run = (poisoned: number) =>
      simulate(
        {
          dataset: 'breast-cancer',
          peers: 5,
          rounds: 4,
          partition: 'iid',
          algorithms: ['fedrep-p2p'],
          poisoned,
          poisonKind: 'sign-flip',
          bodyCombiner: 'median',
        },
        { logger: quiet },
      );
    const clean = (await run(0)).algorithms['fedrep-p2p']!.peers.slice(0, 4).map((p) => p.accuracy);
    const attacked = (await run(1)).algorithms['fedrep-p2p']!;
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(attacked.honestAccuracy!.mean >= mean(clean) - 0.03, `honest ${attacked.honestAccuracy!.mean} vs clean ${mean(clean)}`);
  });

  it('site configs take shareBody and the bodies section; simulate --transport tcp writes them; bad values are one clear error', () => {
    const cfg = { key: 'k', listen: ['/ip4/127.0.0.1/tcp/1'], rounds: 1, out: 'o', data: { dataset: 'breast-cancer' } };
    const c = parsePeerConfig({ ...cfg, dflmoe: { shareBody: true }, bodies: { every: 2, combiner: 'trimmed:0.2', gossipPeers: 3 } });
    assert.equal(c.dflmoe.shareBody, true);
    assert.deepEqual(
      c.bodies,
      { every: 2, combiner: 'trimmed:0.2', topology: 'random:3', gossipPeers: 3, secureAggregation: false },
      'gossipPeers is topology random:k',
    );
    assert.equal(parsePeerConfig(cfg).dflmoe.shareBody, false, 'off by default');
    assert.throws(() => parsePeerConfig({ ...cfg, bodies: { combiner: 'avg' } }), /combiner.*use mean, median or trimmed/s);
    // A frozen body cannot be shared: refused when the config is read, by the simulator and by the site itself.
    assert.throws(
      () => parsePeerConfig({ ...cfg, dflmoe: { shareBody: true }, model: { freezeBody: true } }),
      /dflmoe.shareBody: shareBody needs a body that trains/,
    );
    assert.throws(
      () => dflmoe.createSite({ ...base(tinyPeers(1).datas, 0), freezeBody: true }, opts({ shareBody: true })),
      /shareBody needs a body that trains/,
    );
    const s = siteSettings({ ...DEFAULT_SIMULATION, dataset: 'breast-cancer', shareBody: true, bodyEvery: 3, topology: 'ring' }, 0);
    assert.equal(s.dflmoe.shareBody, true);
    assert.deepEqual(s.bodies, { every: 3, combiner: 'mean', topology: 'ring', secureAggregation: false });
    const r = cli(['simulate', '--dataset', 'breast-cancer', '--share-body', '--body-combiner', 'avg']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown body combiner "avg"/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
});

describe('shared bodies over TCP', () => {
  it('simulate --transport tcp --share-body: dflmoe and fedrep-p2p run to the end, body bytes in the results, bodies in a verified audit trail', () => {
    const out = mkdtempSync(join(tmpdir(), 'dflmoe-bodies-tcp-'));
    const r = cli([
      'simulate',
      '--dataset',
      'breast-cancer',
      '--peers',
      '3',
      '--rounds',
      '3',
      '--partition',
      'iid',
      '--algorithms',
      'dflmoe,fedrep-p2p',
      '--share-body',
      '--transport',
      'tcp',
      '--deadline',
      '20000',
      '--quiet',
      '--out',
      out,
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /dflmoe \(shared bodies\)/);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as SimulationResults;
    for (const alg of ['dflmoe', 'fedrep-p2p'] as const) {
      const a = res.algorithms[alg]!;
      assert.ok(a.bodyBytesSent! > 0, alg);
      assert.ok(
        a.peers.every((p) => p.bodyBytesSent! > 0 && p.bodyBytesSent! <= p.bytesSent),
        alg,
      );
    }
    const report = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(report, /of which bodies/);
    assert.match(report, /dflmoe \(shared bodies\)/);
    // A rerun into the same directory resumes the finished run: the whole run's body bytes, as before (dflmoe alone, to keep the test short).
    const again = cli([
      'simulate',
      '--dataset',
      'breast-cancer',
      '--peers',
      '3',
      '--rounds',
      '3',
      '--partition',
      'iid',
      '--algorithms',
      'dflmoe',
      '--share-body',
      '--transport',
      'tcp',
      '--deadline',
      '20000',
      '--quiet',
      '--out',
      out,
    ]);
    assert.equal(again.status, 0, again.stderr);
    const res2 = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as SimulationResults;
    assert.equal(res2.algorithms.dflmoe!.bodyBytesSent, res.algorithms.dflmoe!.bodyBytesSent);
    const site = join(out, 'consortium', 'dflmoe', 'site-0');
    const lines = readFileSync(join(site, 'audit.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const round3 = lines.find((l) => l.kind === 'round' && l.round === 3);
    assert.equal(round3.bodies.length, 2, "round 3 combined both members' bodies");
    assert.ok(round3.bodies.every((b: { digest: string; version: number }) => /^[0-9a-f]{64}$/.test(b.digest) && b.version === 2));
    assert.match(round3.ownBody.digest, /^[0-9a-f]{64}$/);
    const audit = cli(['audit', site]);
    assert.equal(audit.status, 0, audit.stdout + audit.stderr);
    assert.match(audit.stdout, /verified/);
  });
});

describe('the library learner with shared bodies', () => {
  before(backend);

  it("createLearner({ bodies }) combines the other learner's body before its second round; without it, heads only", async () => {
    const ds = loadDataset('breast-cancer');
    const splits = partition(ds.labels, 2, 2, 'iid', { seed: 3 });
    const [heads, bodies] = [new MemoryHub(), new MemoryHub()];
    const mk = (id: string, i: number, share: boolean) =>
      createLearner({
        id,
        dataset: ds,
        split: splits[i],
        exchange: heads.join(id),
        ...(share ? { bodies: bodies.join(id) } : {}),
        model: { initSeed: 5 },
        logger: quiet,
      });
    const [a, b] = [await mk('a', 0, true), await mk('b', 1, true)];
    await a.runRound();
    await b.runRound();
    const m = await a.runRound();
    assert.deepEqual(
      m.bodies?.map((x) => [x.peer, x.version]),
      [['b', 1]],
    );
    assert.ok(m.bytesSent > 0);
    const c = await createLearner({ id: 'c', dataset: ds, split: splits[0], exchange: new MemoryHub().join('c'), logger: quiet });
    assert.equal((await c.runRound()).bodies, undefined);
    [a, b, c].forEach((l) => l.dispose());
  });
});

describe('bundles of kind body', () => {
  it('round-trip, in every precision', () => {
    for (const p of ['float32', 'float16', 'int8'] as const) {
      const b = decodeBundle(encodeBundle('body', { arch: 'a' }, [arr('b0', [0.5, -1])], p), { maxBytes: 1 << 20 });
      assert.equal(b.kind, 'body');
      assert.deepEqual(
        [...b.tensors[0].data].map((v) => Math.round(v * 100) / 100),
        [0.5, -1],
      );
    }
  });
});
