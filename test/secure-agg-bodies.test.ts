/** Secure aggregation of shared bodies in the round loop: fedrep-p2p and dFLMoE with shareBody, in memory. */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  DEFAULT_ALGORITHM_OPTIONS,
  MemoryHub,
  decodeBundle,
  digestHex,
  dflmoe,
  fedrepP2p,
  memoryNetworks,
  runSite,
  secAggVersion,
  silentLogger,
  simulate,
  type AlgorithmOptions,
  type AlgorithmSite,
  type HeadExchange,
  type PeerData,
  type PeerModelOptions,
  type SiteRoundRecord,
} from '@dflmoe/core/internal';
import { loopbackMembers } from '@dflmoe/p2p/internal';
import { backend, tinyPeers } from './helpers.js';

const quiet = silentLogger;
const opts = (o: Partial<AlgorithmOptions> = {}): AlgorithmOptions => ({ ...DEFAULT_ALGORITHM_OPTIONS, seed: 1, ...o });
const base = (datas: PeerData[], i: number): PeerModelOptions => ({
  id: `p${i}`,
  data: datas[i],
  body: { kind: 'mlp', hidden: [16] },
  featureDim: 8,
  headHidden: [],
  train: { seed: i },
  initSeed: 7,
});
/** A site's body, read through its body share (float32: exact). */
const bodyOf = (s: AlgorithmSite) => decodeBundle(s.bodyShare!.encode(1), { maxBytes: 1 << 30 }).tensors.map((t) => t.data);

/** An exchange that dies (closes, and every later call fails) once it has published `version`. */
function dying(ex: HeadExchange, version: number): HeadExchange {
  let dead = false;
  return new Proxy(ex, {
    get(target, prop, recv) {
      if (prop === 'publish') {
        return async (payload: Uint8Array, v: number) => {
          if (dead) throw new Error('killed');
          await target.publish(payload, v);
          if (v === version) {
            dead = true;
            await target.close();
          }
        };
      }
      const f = Reflect.get(target, prop, recv) as unknown;
      if (typeof f !== 'function') return f;
      // Dead: it neither waits nor takes anything in (a closed exchange would let its wait sit out the deadline).
      return (...a: unknown[]) => {
        if (dead && prop !== 'close') throw new Error('killed');
        return (f as (...a: unknown[]) => unknown).apply(target, a);
      };
    },
  });
}

describe('secure aggregation of shared bodies', () => {
  before(backend);

  it("fedrep-p2p: the combined body is the plain mean's up to fixed-point rounding at every site, and no plain body travels", async () => {
    const run = async (secureAggregation: boolean) => {
      const { datas } = tinyPeers(4);
      const sites = datas.map((_, i) => fedrepP2p.createSite(base(datas, i), opts({ secureAggregation })));
      const nets = memoryNetworks(fedrepP2p, sites, 1 << 30, quiet);
      const recs = await Promise.all(sites.map((s, i) => runSite(s, nets[i], { rounds: 1 })));
      const bodies = sites.map(bodyOf);
      const own = sites.map((s) => s.bodyShare!.lastPublished!.digest);
      sites.forEach((s) => s.dispose());
      datas.forEach((d) => tf.dispose([d.xTrain, d.yTrain, d.xTest, d.yTest]));
      return { recs, bodies, own };
    };
    const plain = await run(false);
    const secure = await run(true);
    for (let i = 0; i < 4; i++) {
      secure.bodies[i].forEach((t, k) =>
        t.forEach((x, j) => assert.ok(Math.abs(x - plain.bodies[i][k][j]) < 1e-4, `site ${i} tensor ${k}[${j}]: ${x} against ${plain.bodies[i][k][j]}`)),
      );
      const mixed = secure.recs[i][0].bodies!;
      assert.equal(mixed.length, 3, "the three others' masked bodies");
      for (const b of mixed) assert.ok(!secure.own.includes(b.digest) && !plain.own.includes(b.digest), "a received digest is no member's body");
    }
    const bytes = (r: SiteRoundRecord[][]) => r.reduce((a, x) => a + x[0].bodyBytesSent!, 0);
    // The masked body is as large as a float32 body (a word per weight, one more for the weight); keys, shares and
    // digests add at most 4 KiB per pair of members and round, whatever the body's size.
    const overhead = (bytes(secure.recs) - bytes(plain.recs)) / 12;
    assert.ok(overhead > 0 && overhead < 4096, `bytes: ${bytes(secure.recs)} secure against ${bytes(plain.recs)} plain`);
  });

  it('dFLMoE with shareBody and random:2 (groups of 3): every site combines each round, and tensors stay flat', async () => {
    const { datas } = tinyPeers(6);
    const sites = datas.map((_, i) => dflmoe.createSite(base(datas, i), opts({ shareBody: true, secureAggregation: true, topology: 'random:2' })));
    const nets = memoryNetworks(dflmoe, sites, 1 << 30, quiet);
    const counts: number[] = [];
    const recs = await Promise.all(
      sites.map((s, i) =>
        runSite(s, nets[i], {
          rounds: 4,
          onRound: () => {
            if (i === 0) counts.push(tf.memory().numTensors);
          },
        }),
      ),
    );
    for (const r of recs) {
      assert.equal(r[0].bodies, undefined);
      for (const k of [1, 2, 3]) assert.equal(r[k].bodies!.length, 2, 'the two others of the group');
    }
    // Groups are drawn per round: over rounds 1 to 3 site p0 combines with more than two members.
    assert.ok(new Set(recs[0].slice(1).flatMap((x) => x.bodies!.map((b) => b.peer))).size > 2);
    assert.deepEqual(counts.slice(2), [counts[1], counts[1]], `tensor counts per round: ${counts}`);
    for (const s of sites)
      assert.deepEqual(
        Object.keys(s.rejected()).filter((k) => k.startsWith('body:')),
        [],
      );
    sites.forEach((s) => s.dispose());
    datas.forEach((d) => tf.dispose([d.xTrain, d.yTrain, d.xTest, d.yTest]));
  });

  it('a member killed after sending its masked body: the others complete that round with it and every later one without it', async () => {
    const { datas } = tinyPeers(5);
    const sites = datas.map((_, i) => fedrepP2p.createSite(base(datas, i), opts({ secureAggregation: true })));
    const nets = memoryNetworks(fedrepP2p, sites, 1 << 30, quiet);
    nets[4] = { ...nets[4], bodies: dying(nets[4].bodies!, secAggVersion(2, 3)) };
    const runs = sites.map((s, i) => runSite(s, nets[i], { rounds: 4 }));
    await assert.rejects(runs[4], /closed|killed/);
    const recs = await Promise.all(runs.slice(0, 4));
    for (const r of recs) {
      assert.equal(r[1].bodies!.length, 4, "round 2 sums the dead member's masked body too");
      assert.ok(r[1].bodies!.some((b) => b.peer === 'p4'));
      assert.equal(r[2].bodies!.length, 3, 'round 3 goes on without it');
      assert.equal(r[3].bodies!.length, 3);
    }
    const after = sites.slice(0, 4).map((s) => bodyOf(s)[0]);
    // Every survivor took the same group mean in round 4 (fedrep-p2p combines at the end of its round).
    for (const b of after) assert.ok(b.every((x, j) => Math.abs(x - after[0][j]) < 1e-6));
    // The dead member's body was never seen: the digests received are of masked inputs.
    const dead = digestHex(sites[4].bodyShare!.encode(2));
    for (const r of recs) for (const x of r.flatMap((y) => y.bodies ?? [])) assert.notEqual(x.digest, dead);
    sites.forEach((s) => s.dispose());
    datas.forEach((d) => tf.dispose([d.xTrain, d.yTrain, d.xTest, d.yTest]));
  });

  it("a member killed before sending its masked body: its masks are removed from the others' sums", async () => {
    const { datas } = tinyPeers(5);
    const sites = datas.map((_, i) => fedrepP2p.createSite(base(datas, i), opts({ secureAggregation: true })));
    const nets = memoryNetworks(fedrepP2p, sites, 1 << 30, quiet);
    nets[1] = { ...nets[1], bodies: dying(nets[1].bodies!, secAggVersion(1, 2)) };
    const runs = sites.map((s, i) => runSite(s, nets[i], { rounds: 2 }));
    await assert.rejects(runs[1], /closed|killed/);
    const recs = await Promise.all([0, 2, 3, 4].map((i) => runs[i]));
    for (const r of recs) {
      assert.deepEqual(
        r[0].bodies!.map((b) => b.peer).filter((p) => p === 'p1'),
        [],
      );
      assert.equal(r[0].bodies!.length, 3);
    }
    const b = [0, 2, 3, 4].map((i) => bodyOf(sites[i])[0]);
    for (const x of b)
      assert.ok(
        x.every((v, j) => Math.abs(v - b[0][j]) < 1e-6),
        'the same mean at every survivor',
      );
    sites.forEach((s) => s.dispose());
    datas.forEach((d) => tf.dispose([d.xTrain, d.yTrain, d.xTest, d.yTest]));
  });

  it('a member that freezes (connected, silent) after sharing its keys costs each round one deadline, not a hang', async () => {
    // Not lockstep: a frozen member would hold every later message back. Its departure is never seen, so only the deadline ends the waits.
    const deadlineMs = 1000;
    const { datas } = tinyPeers(5);
    const sites = datas.map((_, i) => fedrepP2p.createSite(base(datas, i), opts({ secureAggregation: true })));
    const hub = new MemoryHub();
    const nets = sites.map((s) => ({ bodies: hub.join(s.id) as HeadExchange, quorum: 4, others: 4, deadlineMs, logger: quiet }));
    const frozen = nets[4].bodies;
    let stuck = false;
    nets[4].bodies = new Proxy(frozen, {
      get(target, prop, recv) {
        const f = Reflect.get(target, prop, recv) as unknown;
        if (typeof f !== 'function') return f;
        return (...a: unknown[]) => {
          if (stuck && (prop === 'publish' || prop === 'waitForHeads')) return new Promise(() => {});
          if (stuck && prop === 'drain') return [];
          const r = (f as (...a: unknown[]) => unknown).apply(target, a);
          if (prop === 'publish' && a[1] === secAggVersion(1, 2)) stuck = true;
          return r;
        };
      },
    });
    const t0 = performance.now();
    void runSite(sites[4], nets[4], { rounds: 2 }).catch(() => {});
    const recs = await Promise.all(sites.slice(0, 4).map((s, i) => runSite(s, nets[i], { rounds: 2 })));
    const seconds = (performance.now() - t0) / 1000;
    // Round 1 waits one deadline for its masked body (phase 3), round 2 one for its keys (phase 1).
    assert.ok(seconds < (4 * deadlineMs) / 1000 + 2, `${seconds.toFixed(1)} s`);
    for (const r of recs) {
      for (const k of [0, 1]) {
        assert.equal(r[k].bodies!.length, 3, `round ${k + 1}: the three other survivors`);
        assert.ok(r[k].bodies!.every((b) => b.peer !== 'p4'));
      }
    }
    const b = sites.slice(0, 4).map((s) => bodyOf(s)[0]);
    for (const x of b)
      assert.ok(
        x.every((v, j) => Math.abs(v - b[0][j]) < 1e-6),
        'the same mean at every survivor',
      );
    await frozen.close();
    sites.forEach((s) => s.dispose());
    datas.forEach((d) => tf.dispose([d.xTrain, d.yTrain, d.xTest, d.yTest]));
  });

  it('libp2p with everyVersion (the body channel under secure aggregation): a member that was behind still gets every message, in order, once', async () => {
    const { nodes, exchanges: ex, stop } = await loopbackMembers(2, { maxHeadBytes: 1 << 20, logger: quiet, heartbeatMs: 100, everyVersion: true });
    try {
      await nodes[1].dial(nodes[0].getMultiaddrs()[0]);
      await ex[1].settle(3000);
      // Four phases published at once, before the other member pulled any: the newest alone would lose the first three.
      for (const v of [4, 5, 6, 7]) await ex[0].publish(new Uint8Array(2000).fill(v), v);
      const got: number[] = [];
      const take = async (n: number) => {
        const end = Date.now() + 20000;
        while (got.length < n && Date.now() < end) {
          await ex[1].waitForHeads(1, 500);
          got.push(...ex[1].drain().map((m) => m.payload[0]));
        }
      };
      await take(4);
      assert.deepEqual(got, [4, 5, 6, 7]);
      // A selection's oldest version bounds what is pulled; older kept messages are not sent again.
      ex[1].select(undefined, 9);
      for (const v of [8, 9, 10]) await ex[0].publish(new Uint8Array(2000).fill(v), v);
      await take(6);
      assert.deepEqual(got.slice(4), [9, 10]);
      assert.equal(ex[1].stats().messagesReceived, 6);
    } finally {
      await stop();
    }
  });

  it('the robust combiners are refused with one line saying why', async () => {
    await assert.rejects(
      simulate(
        { dataset: 'breast-cancer', peers: 3, rounds: 1, algorithms: ['fedrep-p2p'], bodyCombiner: 'median', secureAggregation: true },
        { logger: quiet },
      ),
      /secure aggregation combines bodies by their mean only: under masking no site sees another's body, so the median cannot be taken/,
    );
    const { datas } = tinyPeers(1);
    assert.throws(
      () => fedrepP2p.createSite(base(datas, 0), opts({ secureAggregation: true, bodyCombiner: 'trimmed:0.2' })),
      /the trimmed:0.2 cannot be taken/,
    );
    datas.forEach((d) => tf.dispose([d.xTrain, d.yTrain, d.xTest, d.yTest]));
  });
});
