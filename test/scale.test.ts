import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  DEFAULT_ALGORITHM_OPTIONS,
  DflmoePeer,
  MemoryHub,
  chooseExperts,
  disposePeerData,
  getAlgorithm,
  memoryNetworks,
  preparePeerData,
  runSite,
  silentLogger,
  simulate,
  type DflmoeSite,
  type ExpertMemory,
  type PeerData,
} from '@dflmoe/core/internal';
import { partition } from '@dflmoe/data';
import { loopbackMembers } from '@dflmoe/p2p/internal';
import { backend, tinyDataset, tinyPeers } from './helpers.js';

const quiet = silentLogger;

describe('bounded mixture: choosing experts', () => {
  const utilities = (xs: [string, number][]) => new Map(xs);
  const none = new Map<string, ExpertMemory>();

  it('takes every candidate when there are k or fewer', () => {
    assert.deepEqual(chooseExperts({ k: 3, explore: 1, candidates: ['c', 'a'], held: utilities([['b', 0.2]]), memory: none, round: 1, seed: 1 }), [
      'a',
      'b',
      'c',
    ]);
  });

  it('keeps the k - explore best held experts and explores members not tried yet, never more than k', () => {
    const held = utilities([
      ['a', 0.9],
      ['b', 0.1],
      ['c', 0.5],
      ['d', 0.7],
    ]);
    const memory = new Map([...held].map(([id, u]): [string, ExpertMemory] => [id, { utility: u, round: 4 }]));
    const candidates = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
    const got = chooseExperts({ k: 4, explore: 1, candidates, held, memory, round: 4, seed: 7 });
    assert.equal(got.length, 4);
    assert.deepEqual(
      got.filter((id) => held.has(id)),
      ['a', 'c', 'd'],
      'the three best held experts stay, the worst goes',
    );
    assert.ok(['e', 'f', 'g', 'h'].includes(got.find((id) => !held.has(id))!), 'one slot explores an untried member');
    assert.deepEqual(chooseExperts({ k: 4, explore: 1, candidates, held, memory, round: 4, seed: 7 }), got, 'deterministic for a seed');
    const seen = new Set(
      [1, 2, 3, 4, 5, 6, 7, 8].map((seed) => chooseExperts({ k: 4, explore: 1, candidates, held, memory, round: 4, seed }).find((id) => !held.has(id))),
    );
    assert.ok(seen.size > 1, 'other seeds explore other members');
  });

  it('once every member was tried, re-tests dropped experts by remembered utility plus a bonus for age', () => {
    const held = utilities([
      ['a', 0.9],
      ['b', 0.8],
    ]);
    const memory = new Map<string, ExpertMemory>([
      ['a', { utility: 0.9, round: 10 }],
      ['b', { utility: 0.8, round: 10 }],
      ['c', { utility: 0.3, round: 9 }],
      ['d', { utility: 0.4, round: 9 }],
      ['e', { utility: 0.2, round: 1 }],
    ]);
    const pick = (staleBonus: number) =>
      chooseExperts({ k: 3, explore: 1, candidates: ['a', 'b', 'c', 'd', 'e'], held, memory, round: 10, seed: 1, staleBonus });
    assert.deepEqual(pick(0), ['a', 'b', 'd'], 'the most useful dropped expert');
    assert.deepEqual(pick(0.05), ['a', 'b', 'e'], 'an expert untested for 9 rounds gets its turn');
  });

  it('refuses a k that is not a positive integer', () => {
    assert.throws(() => chooseExperts({ k: 0, explore: 1, candidates: [], held: new Map(), memory: none, round: 1, seed: 1 }), /positive integer/);
  });
});

describe('bounded mixture: the in-memory hub delivers only what a site asks for', () => {
  it("selected senders only, from a version on; a newly selected sender's newest head at once; bytes counted per delivery", async () => {
    const hub = new MemoryHub({ lockstep: true });
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((id) => hub.join(id));
    a.select(['b'], 1);
    for (const [ex, v] of [
      [a, 1],
      [b, 2],
      [c, 3],
      [d, 4],
    ] as const)
      await ex.publish(new Uint8Array(10).fill(v), 1);
    assert.deepEqual(
      a.drain().map((m) => m.from),
      ['b'],
      'only the selected sender',
    );
    assert.deepEqual(
      b
        .drain()
        .map((m) => m.from)
        .sort(),
      ['a', 'c', 'd'],
      'a site that never selected takes every head',
    );
    assert.deepEqual([...a.announced().keys()].sort(), ['b', 'c', 'd'], 'announced: everyone who released a head');
    assert.equal(c.stats().bytesSent, 20, "c's head went to b and d, not to a");
    assert.equal(b.stats().bytesSent, 30);
    a.select(['b', 'c'], 1);
    assert.deepEqual(
      a.drain().map((m) => [m.from, m.payload[0]]),
      [['c', 3]],
      "c's released head is pulled when c is selected",
    );
    a.select(['b', 'd'], 2);
    assert.equal(a.drain().length, 0, "d's head of version 1 is older than asked for");
    for (const ex of [a, b, c, d]) await ex.publish(new Uint8Array(10), 2);
    assert.deepEqual(
      a
        .drain()
        .map((m) => m.from)
        .sort(),
      ['b', 'd'],
    );
    assert.equal(a.stats().bytesReceived, 40);
  });
});

describe('bounded mixture: dFLMoE sites', function () {
  this.timeout(120000);
  before(backend);

  it('with k = 2 of 7 other sites, each site holds at most 2 experts, receives 2 heads per round, and the experts change over rounds', async () => {
    const ds = tinyDataset(3, 640);
    const splits = partition(ds.labels, 4, 8, 'dirichlet:0.5', { seed: 3 });
    const datas = splits.map((s) => preparePeerData(ds, s));
    const alg = getAlgorithm('dflmoe');
    const sites = datas.map(
      (d, i) =>
        alg.createSite(
          { id: `p${i}`, data: d, body: { kind: 'mlp', hidden: [8] }, featureDim: 8, headHidden: [], train: { seed: i }, initSeed: 1 },
          { ...DEFAULT_ALGORITHM_OPTIONS, seed: 1, gateHidden: 8, maxHeadBytes: 1 << 20, maxModelBytes: 1 << 20, maxExperts: 2 },
        ) as DflmoeSite,
    );
    const nets = memoryNetworks(alg, sites, 1 << 30, quiet);
    const held = sites.map(() => new Set<string>());
    const recs = await Promise.all(
      sites.map((s, i) =>
        runSite(s, nets[i], {
          rounds: 6,
          onRound: (rec) => {
            assert.ok(rec.experts.length <= 2, `site ${i} round ${rec.round}: ${rec.experts.length} experts`);
            assert.ok(
              rec.experts.every((e) => e.version === rec.round),
              'every chosen expert is fresh',
            );
            rec.experts.forEach((e) => held[i].add(e.peer));
          },
        }),
      ),
    );
    const headBytes = sites[0].peer.encodeHead(1).length;
    recs.forEach((rs, i) => {
      assert.equal(rs.at(-1)!.bytesReceived, 6 * 2 * headBytes, `site ${i} pulled exactly 2 heads per round`);
      assert.ok(held[i].size > 2, `site ${i} explored: it held ${[...held[i]]}`);
      assert.ok(sites[i].peer.gate.slotIds.length <= 1 + 3 * 2, 'gate slots bounded by k plus 2k kept while out');
      assert.equal(sites[i].rejected()['not-selected'] ?? 0, 0, 'no head arrives that was not asked for');
    });
    const sent = recs.reduce((a, rs) => a + rs.at(-1)!.bytesSent, 0);
    const received = recs.reduce((a, rs) => a + rs.at(-1)!.bytesReceived, 0);
    assert.equal(sent, received, 'bytes sent are the bytes pulled');
    sites.forEach((s) => s.dispose());
    datas.forEach(disposePeerData);
  });

  it('tf.memory().numTensors is steady while experts come and go (k = 2 of 9)', async () => {
    const { datas } = tinyPeers(10, 2);
    const ps = datas.map(
      (d, i) =>
        new DflmoePeer({
          id: `p${i}`,
          data: d,
          body: { kind: 'mlp', hidden: [8] },
          featureDim: 8,
          headHidden: [],
          train: { seed: i },
          initSeed: 1,
          maxExperts: 2,
        }),
    );
    const ids = ps.map((p) => p.id);
    const counts: number[] = [];
    const churn: number[] = [];
    for (let r = 1; r <= 10; r++) {
      const before = ps.map((p) =>
        p.pool
          .list()
          .map((e) => e.peer)
          .join(),
      );
      for (const p of ps) {
        p.startRound(r);
        await p.trainRound(r);
      }
      const chosen = ps.map((p) => p.selectExperts(r, ids) ?? ids);
      const heads = ps.map((p) => p.encodeHead(r));
      ps.forEach((p, i) => chosen[i].forEach((id) => id !== p.id && assert.match(p.receiveHead(heads[ids.indexOf(id)], id, r), /^(added|replaced)$/)));
      ps.forEach((p) => p.evaluate());
      churn.push(
        ps.filter(
          (p, i) =>
            p.pool
              .list()
              .map((e) => e.peer)
              .join() !== before[i],
        ).length,
      );
      counts.push(tf.memory().numTensors);
    }
    assert.ok(ps.every((p) => p.pool.size === 2));
    assert.ok(
      churn.slice(1).every((c) => c > 0),
      `experts change every round (sites whose pool changed: ${churn})`,
    );
    // Slots, transforms and optimizer state of experts out of the pool are kept for at most 2k of them...
    assert.ok(ps.every((p) => p.gate.slotIds.length <= 1 + 3 * 2 && p.paramGroups().length === 1 + 2));
    // ...so once every site has tried that many, nothing grows (counts move by the optimizer state of returning experts).
    assert.ok(Math.max(...counts.slice(5)) <= Math.max(...counts.slice(0, 5)), `tensor counts per round: ${counts}`);
    ps.forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });

  it('simulate --max-experts: bytes per site grow with k, not with the consortium; the option is checked', async () => {
    const run = (maxExperts: number) =>
      simulate(
        {
          dataset: 'synthetic:classes=4,dim=8,samples=1200',
          peers: 12,
          rounds: 2,
          partition: 'iid',
          algorithms: ['dflmoe'],
          bodies: ['mlp:8'],
          featureDim: 8,
          maxExperts,
        },
        { logger: quiet },
      );
    const [all, bounded] = [await run(0), await run(3)];
    const b = (r: typeof all) => r.algorithms.dflmoe!.bytesSent;
    assert.ok(Math.abs(b(bounded) / b(all) - 3 / 11) < 1e-9, `bytes with k = 3: ${b(bounded)} of ${b(all)}`);
    assert.ok(
      bounded.algorithms.dflmoe!.peers.every((p) => Object.keys(p.gateWeights!).length <= 4),
      'own head plus at most 3 experts',
    );
    await assert.rejects(simulate({ dataset: 'breast-cancer', rounds: 1, maxExperts: -1 }), /maxExperts: Too small: expected number to be >=0/);
  });
});

async function nodes(n: number) {
  const m = await loopbackMembers(n, { maxHeadBytes: 1 << 20, logger: quiet, heartbeatMs: 500 });
  return { ids: m.ids, nodes: m.nodes, exs: m.exchanges, stop: m.stop };
}

const until = async (cond: () => boolean, what: string, limit = 400) => {
  for (let i = 0; i < limit && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(cond(), `timed out waiting for ${what}`);
};

describe('bounded mixture over libp2p', function () {
  this.timeout(120000);

  it("the head exchange pulls only the selected members' announced heads, and a newly selected one at once", async () => {
    const { ids, nodes: ns, exs, stop } = await nodes(3);
    try {
      const [a, b, c] = exs;
      a.select([ids[1].peerId], 1);
      await ns[0].dial(ns[1].getMultiaddrs()[0]);
      await ns[0].dial(ns[2].getMultiaddrs()[0]);
      await b.publish(new Uint8Array(3000).fill(2), 1);
      await c.publish(new Uint8Array(3000).fill(3), 1);
      assert.equal(await a.waitForHeads(1, 20000), 1);
      await until(() => a.announced().size === 2, 'both announcements');
      assert.deepEqual(
        [...a.announced()].sort(),
        [
          [ids[1].peerId, 1],
          [ids[2].peerId, 1],
        ].sort(),
      );
      assert.deepEqual(
        a.drain().map((m) => m.from),
        [ids[1].peerId],
        "only b's head was pulled",
      );
      assert.equal(c.stats().bytesSent, 0, 'c served nothing');
      a.select([ids[2].peerId], 1);
      assert.equal(await a.waitForHeads(1, 20000), 1);
      assert.deepEqual(
        a.drain().map((m) => [m.from, m.payload[0]]),
        [[ids[2].peerId, 3]],
      );
    } finally {
      await stop();
    }
  });
});

describe('many members on one address', function () {
  this.timeout(120000);

  it('16 members on 127.0.0.1 hear every announcement (no gossipsub penalty for sharing an address, no refused dials)', async () => {
    const { ids, nodes: ns, exs, stop } = await nodes(16);
    try {
      for (let i = 0; i < ns.length; i++) {
        for (let j = i + 1; j < ns.length; j++) {
          // A dial may be reset while twelve nodes set up at once: try again (bounded).
          for (let attempt = 0; ; attempt++) {
            try {
              await ns[i].dial(ns[j].getMultiaddrs()[0]);
              break;
            } catch (e) {
              if (attempt === 4) throw e;
            }
          }
        }
      }
      // Nobody pulls (an empty selection): only the announcements are counted.
      exs.forEach((e) => e.select([], 1));
      await Promise.all(exs.map((e, i) => e.publish(new Uint8Array(100).fill(i), 1)));
      await until(() => exs.every((e) => e.announced().size === 15), 'every announcement everywhere', 600);
      exs.forEach((e, i) =>
        assert.deepEqual(
          [...e.announced().keys()].sort(),
          ids
            .filter((_, j) => j !== i)
            .map((x) => x.peerId)
            .sort(),
        ),
      );
    } finally {
      await stop();
    }
  });
});

describe('training yields to the event loop', function () {
  this.timeout(180000);
  before(backend);

  it('a site answers a head pull and a ping while it is in the middle of a long epoch', async () => {
    const ds = tinyDataset(5, 20000);
    const [split] = partition(ds.labels, 4, 1, 'iid', { seed: 5 });
    const data: PeerData = preparePeerData(ds, split);
    const { ids, nodes: ns, exs, stop } = await nodes(2);
    const ac = new AbortController();
    const p = new DflmoePeer({
      id: ids[0].peerId,
      data,
      body: { kind: 'mlp', hidden: [16] },
      featureDim: 8,
      headHidden: [],
      train: { seed: 1, batchSize: 1, signal: ac.signal },
    });
    try {
      await exs[0].publish(p.encodeHead(1), 1);
      let steps = 0;
      const count = p.optimizer.applyGradients.bind(p.optimizer);
      p.optimizer.applyGradients = (g) => (steps++, count(g));
      let finished = false;
      // One epoch of 16,000 single-sample batches: far longer than a pull.
      const training = p.trainRound(2).finally(() => (finished = true));
      await until(() => steps > 0, 'training to start');
      await ns[1].dial(ns[0].getMultiaddrs()[0]); // the new connection makes b pull a's head
      assert.equal(await exs[1].waitForHeads(1, 60000), 1, 'the head arrived');
      const [m] = exs[1].drain();
      assert.equal(m.from, ids[0].peerId);
      const rtt = await ns[1].services.ping.ping(ns[0].peerId);
      assert.ok(rtt >= 0);
      const at = steps;
      assert.ok(!finished && at > 0 && at < 16000, `the pull and the ping were answered mid-epoch (after ${at} batches)`);
      await until(() => steps > at, 'training to go on');
      ac.abort();
      await assert.rejects(training, (e: Error) => e.name === 'AbortError');
    } finally {
      ac.abort();
      p.dispose();
      disposePeerData(data);
      await stop();
    }
  });
});
