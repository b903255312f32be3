/**
 * Low-rank adapters on a frozen body (`loraRank`): the adapted body starts
 * as the frozen one, only adapters, head, gate and transforms train, a
 * received expert runs the body through its own adapters, bad adapters are
 * dropped and counted, checkpoints and predictions keep them, and nothing
 * leaks across rounds.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {
  DflmoePeer,
  DflmoeSite,
  LoraBody,
  buildBody,
  disposePeerData,
  encodeLoraHead,
  decodeBundle,
  headLogits,
  loadSite,
  restoreLatestCheckpoint,
  saveCheckpoint,
  silentLogger,
  simulate,
  sitePredictions,
  type DflmoeOptions,
  type SavedSite,
  type HeadExchange,
  type PeerData,
} from '@dflmoe/core/internal';
import { parsePeerConfig, runPeer } from '@dflmoe/p2p/internal';
import { loadDataset } from '@dflmoe/data';
import { loneSiteConfig, tmpDir } from './fixtures/sites.js';
import { backend, cliAsync, tinyPeers } from './helpers.js';

const quiet = silentLogger;

function close(a: ArrayLike<number>, b: ArrayLike<number>, what: string, tol = 1e-5): void {
  assert.equal(a.length, b.length, what);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  assert.ok(m <= tol, `${what}: max abs diff ${m}`);
}

/** A bundle with its CRC-32 recomputed (a forged but well-formed message). */
function withCrc(b: Uint8Array): Uint8Array {
  new DataView(b.buffer, b.byteOffset).setUint32(b.length - 4, crc32(b.subarray(0, b.length - 4)), true);
  return b;
}

const read = (t: tf.Tensor) => (t.dataSync() as Float32Array).slice();

describe('LoRA adapters on a frozen body (loraRank)', function () {
  this.timeout(60000);
  let datas: PeerData[];
  before(async () => {
    await backend();
    ({ datas } = tinyPeers(3));
  });
  after(() => datas.forEach(disposePeerData));

  const opts = (i: number, extra: Partial<DflmoeOptions> = {}): DflmoeOptions => ({
    id: `p${i}`,
    data: datas[i],
    body: { kind: 'mlp', hidden: [16] },
    featureDim: 8,
    headHidden: [],
    // One body for every site: the same initial seed, as a pretrained body would be.
    initSeed: 7,
    train: { seed: i, epochs: 1, batchSize: 32 },
    freezeBody: true,
    loraRank: 2,
    ...extra,
  });

  /** Peers that trained `rounds` rounds, exchanging heads after each. */
  async function consortium(rounds: number, extra: Partial<DflmoeOptions> = {}): Promise<DflmoePeer[]> {
    const ps = datas.map((_, i) => new DflmoePeer(opts(i, extra)));
    for (let r = 1; r <= rounds; r++) {
      for (const p of ps) await p.trainRound(r);
      const heads = ps.map((p) => p.encodeHead(r));
      ps.forEach((p, i) => heads.forEach((h, j) => i !== j && assert.equal(p.receiveHead(h, ps[j].id, r), r === 1 ? 'added' : 'replaced')));
    }
    return ps;
  }

  it('starts as the frozen body (B = 0); training moves adapters and head, never the body', async () => {
    const p = new DflmoePeer(opts(0));
    const x = p.data.xTest;
    close(read(tf.tidy(() => p.features(x, false))), read(tf.tidy(() => p.body.apply(x) as tf.Tensor)), 'adapted features at the start');
    assert.equal(p.lora!.own.length, 2, 'both dense layers of an mlp body are adapted');
    assert.deepEqual(
      p.lora!.own.map((l) => [l.a.shape, l.b.shape]),
      [
        [
          [8, 2],
          [2, 16],
        ],
        [
          [16, 2],
          [2, 8],
        ],
      ],
    );
    const body = p.body.getWeights().map(read);
    await p.trainRound(1);
    await p.trainRound(2);
    p.body.getWeights().forEach((w, i) => assert.deepEqual(read(w), body[i], `body weight ${i} unchanged`));
    assert.ok(
      p.lora!.own.every((l) => read(l.b).some((v) => v !== 0)),
      'every B has moved from zero',
    );
    const moved = tf.tidy(() => tf.max(tf.abs(tf.sub(p.features(x, false), p.body.apply(x) as tf.Tensor))).dataSync()[0]);
    assert.ok(moved > 1e-4, `the adapted features differ from the frozen body's (${moved})`);
    p.dispose();
  });

  it("adapts a cnn body's last dense layer (the convolutions stay), and refuses a body it cannot adapt in one line", () => {
    const cnn = buildBody({ kind: 'cnn', filters: [2] }, [4, 4, 1], 6, 1);
    const lora = new LoraBody(cnn, 3, 1, 5);
    assert.deepEqual(lora.dims(), [[8, 6]], 'conv 2 filters, 2x2 pooling: 2x2x2 = 8 inputs to the dense layer');
    const x = tf.randomNormal([5, 4, 4, 1], 0, 1, 'float32', 3);
    close(read(tf.tidy(() => lora.features(x))), read(tf.tidy(() => cnn.apply(x) as tf.Tensor)), 'cnn features at the start');
    lora.dispose();
    const input = tfl.input({ shape: [4] });
    const functional = tfl.model({ inputs: input, outputs: tfl.layers.dense({ units: 2 }).apply(input) as tfl.SymbolicTensor });
    assert.throws(() => new LoraBody(functional, 2, 1, 1), /^Error: loraRank needs a sequential body/);
    const pooled = tfl.sequential({ layers: [tfl.layers.flatten({ inputShape: [4, 4, 1] })] });
    assert.throws(() => new LoraBody(pooled, 2, 1, 1), /loraRank needs a body that ends in dense layers/);
    tf.dispose([x]);
    [cnn, functional, pooled].forEach((m) => m.dispose());
  });

  it('a received expert computes what its site computes: its head on the body through its adapters', async () => {
    const ps = await consortium(1);
    const [p0, p1] = ps;
    const x = p0.data.xTest;
    // The transform p0 keeps for p1 is still the identity (p0 has not trained with it): expert 1's logits are p1's own.
    const mixed = tf.tidy(() => read(tf.slice(p0.loraMixtureOf(x).logits, [0, 1, 0], [-1, 1, -1])));
    close(mixed, read(tf.tidy(() => p1.logits(x))), "expert p1's logits at p0");
    // After training with it, p0's transform has moved and the expert reads fst(body + p1's adapters).
    await p0.trainRound(2);
    const e = p0.pool.get('p1')!;
    const want = tf.tidy(() => read(headLogits(e.head, p0.transformed('p1', p0.lora!.features(x, e.adapters!)))));
    close(
      tf.tidy(() => read(tf.slice(p0.loraMixtureOf(x).logits, [0, 1, 0], [-1, 1, -1]))),
      want,
      'expert through its transform',
    );
    // Predictions through sitePredictions (what predict and evaluate use) are the mixture's, with gate weights per expert.
    const site = new DflmoeSite(p0);
    const pr = sitePredictions(site, x, ['0', '1', '2', '3']);
    close(
      pr.probabilities,
      tf.tidy(() => read(p0.moeProbs(x))),
      'sitePredictions',
    );
    assert.equal(pr.gateWeights.length, x.shape[0] * 3);
    ps.forEach((p) => p.dispose());
  });

  it('publishes adapters with the head; bad adapters are dropped, logged and counted, freeing what they allocated', async () => {
    const ps = await consortium(1);
    const plain = new DflmoePeer(opts(0, { loraRank: 0, freezeBody: false }));
    const p = ps[0];
    const withLora = p.encodeHead(5).length;
    const without = plain.encodeHead(5).length;
    // Adapters: 8x2 + 2x16 + 16x2 + 2x8 = 96 float32 values beyond the head (and the header's lora entry).
    assert.ok(withLora - without >= 96 * 4 && withLora - without < 96 * 4 + 200, `head ${without} B, with adapters ${withLora} B`);
    const rank4 = new DflmoePeer(opts(1, { loraRank: 4 }));
    const plain1 = new DflmoePeer(opts(1, { loraRank: 0, freezeBody: false }));
    const rank1 = new DflmoePeer(opts(2, { loraRank: 1 }));
    const otherBody = new DflmoePeer(opts(1, { body: { kind: 'mlp', hidden: [12] } }));
    const nan = tf.tidy(() => ps[1].lora!.own.map((l, i) => ({ a: i === 0 ? tf.fill(l.a.shape, NaN) : tf.clone(l.a), b: tf.clone(l.b) })));
    const layers = ps[1].head.map((l) => ({ kernel: read(l.kernel), bias: read(l.bias) }));
    // A rank beyond the agreed one: more parameters than the agreed rank allows (the codec's limit), or a header that claims it.
    const forged = encodeLoraHead({ spec: ps[1].headSpec, version: 9, peer: 'p1' }, layers, ps[1].lora!.own, 'float32');
    const at = Buffer.from(forged).indexOf('"rank":2');
    const header = forged.slice();
    header[at + 7] = '4'.charCodeAt(0);
    const bad: [string, Uint8Array][] = [
      ['shape', rank4.encodeHead(9)],
      ['lora-rank', withCrc(header)],
      ['lora-shape', otherBody.encodeHead(9)],
      ['lora-missing', plain1.encodeHead(9)],
      ['nonfinite', encodeLoraHead({ spec: ps[1].headSpec, version: 9, peer: 'p1' }, layers, nan, 'float32')],
    ];
    tf.dispose(nan.flatMap((l) => [l.a, l.b]));
    const before = tf.memory().numTensors;
    const warnings: string[] = [];
    const log = { ...quiet, warn: (m: string) => warnings.push(m) };
    const reported: string[] = [];
    const queue = bad.map(([, payload]) => ({ from: 'p1', payload }));
    const ex = { drain: () => queue.splice(0), reportBad: (_: string, r: string) => reported.push(r) } as unknown as HeadExchange;
    assert.equal(new DflmoeSite(p).absorb(ex, 9, log), 0);
    const reasons = bad.map(([r]) => r);
    assert.deepEqual(reported, reasons, 'each refusal is reported to the transport (strikes)');
    assert.deepEqual(
      warnings,
      reasons.map((r) => `dropped a head from p1: ${r}`),
    );
    for (const r of reasons) assert.equal(p.counters.rejected[r as 'lora-rank'], 1, r);
    assert.equal(tf.memory().numTensors, before, 'nothing allocated for refused heads');
    assert.equal(p.pool.get('p1')!.version, 1, 'the held version stays');
    // A lower rank fits: zero-padded to the agreed rank, it computes the same.
    assert.equal(p.receiveHead(rank1.encodeHead(7), 'p2', 1), 'replaced');
    const x = p.data.xTest;
    const i = p.pool.list().findIndex((e) => e.peer === 'p2') + 1;
    close(
      tf.tidy(() => read(tf.slice(p.loraMixtureOf(x).logits, [0, i, 0], [-1, 1, -1]))),
      tf.tidy(() => read(rank1.logits(x))),
      'rank-1 expert at rank 2',
    );
    [...ps, plain, plain1, rank4, rank1, otherBody].forEach((q) => q.dispose());
  });

  it('checkpoints keep the own and the received adapters: a restored site predicts and trains on the same', async () => {
    const ps = await consortium(2);
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-lora-'));
    await saveCheckpoint(dir, ps[0], 2);
    const fresh = new DflmoePeer(opts(0));
    await restoreLatestCheckpoint(dir, fresh);
    const probs = (p: DflmoePeer) => tf.tidy(() => read(p.moeProbs(p.data.xTest)));
    close(probs(fresh), probs(ps[0]), 'predictions after restore');
    assert.deepEqual(read(fresh.pool.get('p1')!.adapters![0].b), read(ps[0].pool.get('p1')!.adapters![0].b));
    await ps[0].trainRound(3);
    await fresh.trainRound(3);
    close(read(fresh.lora!.own[0].b), read(ps[0].lora!.own[0].b), 'own adapter after one more round (optimizer state restored)');
    close(probs(fresh), probs(ps[0]), 'predictions after one more round');
    const other = new DflmoePeer(opts(0, { loraRank: 3 }));
    await assert.rejects(restoreLatestCheckpoint(dir, other), /loraRank 2; this site uses 3/);
    [...ps, fresh, other].forEach((p) => p.dispose());
  });

  it('in the simulator: tensor counts steady across rounds, more bytes than heads alone and better on a random frozen body, everything freed', async () => {
    const t0 = tf.memory().numTensors;
    const counts: number[] = [];
    const cfg = { dataset: 'breast-cancer', peers: 3, rounds: 4, partition: 'iid', algorithms: ['dflmoe' as const], freezeBody: true };
    const r = await simulate({ ...cfg, loraRank: 4, loraScale: 1 }, { logger: quiet, onRound: () => counts.push(tf.memory().numTensors) });
    assert.deepEqual(counts.slice(2), [counts[1], counts[1]], `tensor counts per round: ${counts}`);
    assert.equal(tf.memory().numTensors, t0, 'the run frees its tensors');
    const heads = await simulate(cfg, { logger: quiet });
    const a = r.algorithms.dflmoe!;
    const h = heads.algorithms.dflmoe!;
    assert.ok(a.bytesSent > h.bytesSent, `bytes with adapters ${a.bytesSent}, heads alone ${h.bytesSent}`);
    // A random frozen body gives poor features; adapters at full scale (loraScale 1) let every site fix them.
    assert.ok(a.accuracy.mean > h.accuracy.mean + 0.1, `accuracy with adapters ${a.accuracy.mean}, heads alone ${h.accuracy.mean}`);
    assert.ok(a.peers.every((p) => Object.keys(p.rejectedHeads ?? {}).length === 0));
  });

  it('a site process with adapters: loadSite rebuilds them from the checkpoint, and predict and evaluate use them', async () => {
    const dir = tmpDir('dflmoe-lora-site-');
    const cfg = await loneSiteConfig(dir, 'lab', {
      data: { dataset: 'breast-cancer' },
      model: { body: 'mlp:16', featureDim: 8, freezeBody: true },
      dflmoe: { loraRank: 2, loraScale: 1 },
    });
    await runPeer(cfg, { logger: quiet });
    const ds = loadDataset('breast-cancer');
    const site = await loadSite(cfg.out);
    try {
      const peer = ((site as SavedSite).site as DflmoeSite).peer;
      assert.equal(peer.lora?.rank, 2, 'rebuilt with its adapters');
      const state = decodeBundle(readFileSync(join(cfg.out, 'checkpoints', 'round-000002', 'state.bin')), { maxBytes: 2 ** 30 });
      const saved = state.tensors.find((t) => t.name === 'lora/0/b')!;
      assert.deepEqual(read(peer.lora!.own[0].b), saved.data, 'the checkpoint adapters');
      assert.ok(saved.data.some((v) => v !== 0));
      const x = ds.features.subarray(0, 100 * 30);
      const with_ = site.predict(x);
      // The same site with its adapters set to zero predicts otherwise: predict runs them.
      const kept = peer.lora!.own.map((l) => read(l.b));
      peer.lora!.own.forEach((l) => l.b.assign(tf.zerosLike(l.b)));
      assert.notDeepEqual(site.predict(x).probabilities, with_.probabilities);
      peer.lora!.own.forEach((l, i) => l.b.assign(tf.tensor(kept[i], l.b.shape)));
      const labels = ds.labels.subarray(0, 100);
      const hits = Array.from(labels).filter((y, i) => with_.predicted[i] === y).length;
      assert.equal(site.evaluate(x, labels).accuracy, hits / 100, 'evaluate scores what predict predicts');
    } finally {
      site.dispose();
    }
  });

  it('is a setting of the CLI and site configs, refused in one line without a frozen body', async () => {
    const cfg = { key: 'k', listen: ['/ip4/127.0.0.1/tcp/1'], rounds: 1, out: 'o', data: { dataset: 'breast-cancer' } };
    assert.equal(parsePeerConfig({ ...cfg, dflmoe: { loraRank: 4 }, model: { freezeBody: true } }).dflmoe.loraRank, 4);
    assert.equal(parsePeerConfig(cfg).dflmoe.loraRank, 0, 'off by default');
    assert.throws(() => parsePeerConfig({ ...cfg, dflmoe: { loraRank: 4 } }), /dflmoe.loraRank: loraRank needs a frozen body/);
    assert.throws(() => new DflmoePeer(opts(0, { freezeBody: false })), /loraRank needs a frozen body/);
    await assert.rejects(
      simulate({ dataset: 'breast-cancer', peers: 2, rounds: 1, algorithms: ['dflmoe'], loraRank: 2 }, { logger: quiet }),
      /loraRank needs a frozen body/,
    );
    const [help, refused] = await Promise.all([cliAsync(['simulate', '--help']), cliAsync(['simulate', '--dataset', 'breast-cancer', '--lora-rank', '2'])]);
    assert.match(help.stdout, /--lora-rank/);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /^dflmoe: error: loraRank: loraRank needs a frozen body \(freezeBody\)[^\n]*\n$/);
    assert.doesNotMatch(refused.stderr, /\n\s+at /, 'no stack trace');
  });
});
