/**
 * Weak links: the emulated link itself (rate, delay, resets), adaptive round
 * deadlines, and a 4-site consortium behind emulated 1 MB/s, 100 ms links
 * with connection resets. Every wait bounded.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_ALGORITHM_OPTIONS,
  DEFAULT_SIMULATION,
  MemoryHub,
  disposePeerData,
  getAlgorithm,
  silentLogger,
  type SimulationConfig,
} from '@dflmoe/core/internal';
import { emulateLinks, runConsortium, writeConsortium } from '@dflmoe/cli/internal';
import {
  AdaptiveDeadline,
  HeadResponse,
  LinkEmulator,
  Libp2pHeadExchange,
  PartialHeads,
  RESUME_CHUNK,
  chunkFrames,
  createSiteNode,
  frameGuard,
  generateIdentity,
  parsePeerConfig,
  servePlan,
  type PeerRunResult,
} from '@dflmoe/p2p/internal';
import { backend, tinyPeers } from './helpers.js';

describe('weak links: the emulated link', function () {
  this.timeout(60000);
  let sink: Server | undefined;
  let link: LinkEmulator | undefined;
  afterEach(async () => {
    await link?.close();
    await new Promise<void>((r) => (sink ? sink.close(() => r()) : r()));
    sink = link = undefined;
  });

  /** A server that answers each 1-byte ping with a pong, or counts a bulk upload and answers its length. */
  async function target(): Promise<number> {
    sink = createServer({ allowHalfOpen: true }, (s) => {
      let n = 0;
      s.on('data', (d) => {
        if (d.length === 1 && n === 0 && d[0] === 112) return void s.write('q');
        n += d.length;
      });
      s.on('end', () => s.end(String(n)));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => sink!.listen(0, '127.0.0.1', () => r()));
    return (sink.address() as { port: number }).port;
  }

  it('adds the round-trip time, paces bytes at the rate, keeps them in order, and resets the connections it is told to', async () => {
    link = new LinkEmulator({ host: '127.0.0.1', port: await target() }, { bytesPerSecond: 1e6, rttMs: 100, resetProbability: 0, forceResets: 1 });
    const port = await link.start();
    // The first connection is reset within about 1-4 s.
    const first = connect(port, '127.0.0.1');
    const closed = await new Promise<string>((r) => {
      first.on('error', (e) => r((e as NodeJS.ErrnoException).code ?? 'error'));
      first.on('close', () => r('closed'));
    });
    assert.equal(closed, 'ECONNRESET');
    assert.equal(link.stats.resets, 1);
    // Round trip: one byte there and back.
    const s = connect(port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    const t0 = performance.now();
    s.write('p');
    await new Promise((r) => s.once('data', r));
    const rtt = performance.now() - t0;
    assert.ok(rtt >= 95 && rtt < 1000, `rtt ${rtt.toFixed(0)} ms`);
    s.destroy();
    // 1.5 MB at 1 MB/s takes about 1.5 s, and arrives whole.
    const bulk = connect(port, '127.0.0.1');
    await new Promise((r) => bulk.once('connect', r));
    const t1 = performance.now();
    const bytes = Buffer.alloc(1_500_000, 7);
    bulk.end(bytes);
    const got = await new Promise<string>((r) => {
      let txt = '';
      bulk.on('data', (d) => (txt += d.toString()));
      bulk.on('end', () => r(txt));
    });
    const secs = (performance.now() - t1) / 1000;
    assert.equal(Number(got), bytes.length);
    assert.ok(secs >= 1.4 && secs < 10, `1.5 MB in ${secs.toFixed(2)} s`);
  });
});

describe('weak links: resumable head transfers', function () {
  this.timeout(120000);

  it('a 12 MiB head whose connection is reset mid-transfer goes on from the bytes that arrived, not from zero', async () => {
    const [a, b] = await Promise.all([generateIdentity(), generateIdentity()]);
    const allow = [a.peerId, b.peerId];
    const na = await createSiteNode({ privateKey: a.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow });
    await na.start();
    const port = Number(na.getMultiaddrs()[0].toString().split('/')[4]);
    // 4 MB/s: the head takes about 3 s; the first connection is reset 1-2 s after it opens.
    const link = new LinkEmulator(
      { host: '127.0.0.1', port },
      { bytesPerSecond: 4e6, rttMs: 20, resetProbability: 0, forceResets: 1, forceResetAfterMs: [1000, 2000] },
    );
    const proxy = await link.start();
    const nb = await createSiteNode({ privateKey: b.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow });
    const ea = new Libp2pHeadExchange(na, {
      members: [
        { peerId: a.peerId, addrs: [] },
        { peerId: b.peerId, addrs: [] },
      ],
      maxHeadBytes: 32 << 20,
      logger: silentLogger,
      heartbeatMs: 500,
    });
    const eb = new Libp2pHeadExchange(nb, {
      members: [
        { peerId: a.peerId, addrs: [`/ip4/127.0.0.1/tcp/${proxy}`] },
        { peerId: b.peerId, addrs: [] },
      ],
      maxHeadBytes: 32 << 20,
      logger: silentLogger,
      heartbeatMs: 500,
    });
    try {
      for (const e of [ea, eb]) await e.register();
      await nb.start();
      const head = new Uint8Array(12 << 20);
      let x = 7;
      for (let i = 0; i < head.length; i++) head[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
      await ea.publish(head, 1);
      ea.start();
      eb.start();
      assert.equal(await eb.waitForHeads(1, 60000), 1, 'the head arrived');
      const [m] = eb.drain();
      assert.ok(Buffer.from(m.payload).equals(Buffer.from(head)), 'bit-identical');
      assert.equal(link.stats.resets, 1, 'the connection was reset once');
      assert.equal(eb.partials.resumes, 1, 'the second transfer resumed');
      assert.ok(eb.partials.resumedBytes >= RESUME_CHUNK, `resumed after ${eb.partials.resumedBytes} bytes`);
      // What crossed the link: about one head (plus framing and the other protocols), not a head and a half.
      assert.ok(
        link.stats.bytes < head.length + eb.partials.resumedBytes / 2 + (1 << 20),
        `${link.stats.bytes} bytes through the link for a ${head.length}-byte head`,
      );
      assert.equal((eb.dropped['transfer-failed'] ?? 0) >= 1, true);
    } finally {
      await ea.close();
      await eb.close();
      await nb.stop();
      await na.stop();
      await link.close();
    }
  });

  it('resume requests and responses are checked: an offset not asked for, extra bytes, a changed head, oversized frames', () => {
    const p = new PartialHeads(1 << 20);
    const digest = new Uint8Array(32).fill(1);
    const res = (o: Partial<HeadResponse>): HeadResponse => ({
      available: true,
      version: 3n,
      size: 600_000n,
      digest,
      chunkSize: RESUME_CHUNK,
      offset: 0n,
      ...o,
    });
    assert.deepEqual(p.request('x'), { chunkSize: RESUME_CHUNK });
    // A resumed response we did not ask for.
    assert.equal((p.assemble('x', res({ offset: 1000n }), []) as { reason: string }).reason, 'bad-response');
    // Two full chunks arrive, then the connection drops: kept.
    const bytes = new Uint8Array(600_000).map((_, i) => i & 255);
    const frames = chunkFrames(bytes, 0, RESUME_CHUNK);
    assert.deepEqual(p.assemble('x', res({}), frames.slice(0, 2)), { incomplete: 2 * RESUME_CHUNK });
    const q = p.request('x', digest);
    assert.equal(q.offset, BigInt(2 * RESUME_CHUNK));
    // The server's head changed meanwhile: it sends from zero, and servePlan says so.
    assert.deepEqual(servePlan(q, { digest: new Uint8Array(32).fill(2), bytes }), { chunkSize: RESUME_CHUNK, offset: 0 });
    assert.deepEqual(servePlan(q, { digest, bytes }), { chunkSize: RESUME_CHUNK, offset: 2 * RESUME_CHUNK });
    assert.deepEqual(servePlan({}, { digest, bytes }), { chunkSize: 0, offset: 0 }, 'a requester that did not ask gets one frame');
    // More than the header promised.
    assert.equal((p.assemble('x', res({ offset: BigInt(2 * RESUME_CHUNK) }), [frames[2], new Uint8Array(10)]) as { reason: string }).reason, 'bad-response');
    // A new announcement with another digest forgets the prefix.
    p.assemble('y', res({}), frames.slice(0, 1));
    assert.deepEqual(p.request('y', new Uint8Array(32).fill(9)), { chunkSize: RESUME_CHUNK });
    // The rest completes the head.
    p.assemble('z', res({}), frames.slice(0, 1));
    const done = p.assemble('z', res({ offset: BigInt(RESUME_CHUNK) }), frames.slice(1)) as { bytes: Uint8Array };
    assert.ok(Buffer.from(done.bytes).equals(Buffer.from(bytes)));
    assert.equal(p.resumes, 1);
    // The frame guard stops a reader at frames beyond the header.
    const g = frameGuard(1 << 20);
    g(HeadResponse.encode(res({ size: 20n })), 0);
    g(new Uint8Array(20), 1);
    assert.throws(() => g(new Uint8Array(1), 2), /exceed/);
    const g2 = frameGuard(1 << 20);
    g2(HeadResponse.encode(res({ size: 10n ** 12n })), 0);
    assert.throws(() => g2(new Uint8Array(1), 1), /larger than asked/);
  });
});

describe('weak links: adaptive round deadlines', () => {
  it('shrink to what complete rounds need, double when a slow link runs out of time, ignore members that are gone, stay within bounds', () => {
    const d = new AdaptiveDeadline({ maxMs: 30000, minMs: 2000 });
    assert.equal(d.current, 30000);
    d.observe(1000, true, false);
    d.observe(200, true, false);
    assert.equal(d.current, 30000, 'not before three complete waits');
    d.observe(300, true, false);
    assert.equal(d.current, 3500, 'the slowest of the recent complete waits counts');
    for (let i = 0; i < 5; i++) d.observe(100, true, false);
    assert.equal(d.current, 2000, 'floor');
    d.observe(2000, false, false);
    assert.equal(d.current, 2000, 'a member gone does not stretch it');
    d.observe(2000, false, true);
    assert.equal(d.current, 4000);
    d.observe(100, true, false);
    assert.equal(d.current, 4000, 'after a miss, three complete waits again before it shrinks');
    for (let i = 0; i < 6; i++) d.observe(d.current, false, true);
    assert.equal(d.current, 30000, 'ceiling');
    assert.deepEqual(d.history.at(-1), { deadlineMs: 30000, waitedMs: 30000, complete: false });
  });

  it('wrap() measures waitForHeads and leaves every other method to the exchange', async () => {
    const hub = new MemoryHub();
    const [a, b] = [hub.join('a'), hub.join('b')];
    const d = new AdaptiveDeadline({ maxMs: 5000, minMs: 100, minSamples: 1 });
    const wa = d.wrap(a);
    assert.equal(wa.selfId, 'a');
    assert.deepEqual(wa.members(), a.members());
    setTimeout(() => void b.publish(new Uint8Array([1, 2, 3]), 1), 50);
    assert.equal(await wa.waitForHeads(1, d.current), 1);
    assert.equal(wa.drain().length, 1);
    assert.equal(d.history.length, 1);
    assert.ok(d.history[0].complete && d.history[0].waitedMs >= 40);
    assert.ok(d.current < 5000);
  });

  it('a site that lags behind counts the heads of this round it already holds: it does not wait out the deadline', async function () {
    this.timeout(120000);
    await backend();
    const { datas } = tinyPeers(2);
    const alg = getAlgorithm('dflmoe');
    const sites = datas.map((d, i) =>
      alg.createSite(
        { id: `p${i}`, data: d, body: { kind: 'mlp', hidden: [16] }, featureDim: 8, headHidden: [], train: { seed: i } },
        { ...DEFAULT_ALGORITHM_OPTIONS, seed: 1 },
      ),
    );
    const hub = new MemoryHub();
    // A long deadline: a round that waited it out would be plain, whatever the load.
    const deadlineMs = 60000;
    const nets = sites.map((s) => ({ exchange: hub.join(s.id), quorum: 1, deadlineMs, logger: silentLogger }));
    try {
      // p1 runs round 1 ahead and publishes; then it waits for p0's head.
      const ahead = sites[1].runRound(1, nets[1]);
      assert.equal(await nets[0].exchange.waitForHeads(1, 20000), 1);
      // p0 starts round 1 with p1's round-1 head already there (taken in before it trains):
      // after publishing it has all it needs.
      const r0 = await sites[0].runRound(1, nets[0]);
      const r1 = await ahead;
      assert.ok(r0.waitSeconds * 1000 < deadlineMs / 10, `p0 waited ${r0.waitSeconds} s of its ${deadlineMs / 1000} s deadline`);
      assert.equal(r0.fresh, 1);
      assert.equal(r1.fresh, 1);
    } finally {
      sites.forEach((s) => s.dispose());
      datas.forEach(disposePeerData);
    }
  });

  it('config: round.adaptive and round.minDeadlineMs, announce addresses', () => {
    const base = { key: 'k.key', listen: ['/ip4/127.0.0.1/tcp/1'], data: { dataset: 'breast-cancer' }, rounds: 2, out: 'o' };
    const c = parsePeerConfig({ ...base, announce: ['/ip4/203.0.113.7/tcp/9101'], round: { adaptive: true, minDeadlineMs: 500 } });
    assert.deepEqual([c.round.adaptive, c.round.minDeadlineMs, c.announce], [true, 500, ['/ip4/203.0.113.7/tcp/9101']]);
    assert.equal(parsePeerConfig(base).round.adaptive, false);
    assert.throws(() => parsePeerConfig({ ...base, announce: ['not an address'] }), /announce\.0: not a valid multiaddr/);
  });
});

describe('weak links: a consortium behind emulated slow links (multi-process)', function () {
  this.timeout(600000);

  it('4 sites behind 1 MB/s, 100 ms links with connection resets, float16 heads, adaptive deadlines: every round completes, heads arrive within the deadline', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-slowlink-'));
    const sim: SimulationConfig = {
      ...DEFAULT_SIMULATION,
      dataset: 'digits',
      peers: 4,
      rounds: 8,
      partition: 'dirichlet:0.5',
      seed: 2,
      algorithms: ['dflmoe'],
      bodies: ['mlp:64'],
      featureDim: 128,
      headHidden: [256],
      learningRate: 3e-3,
      headPrecision: 'float16',
    };
    const files = await writeConsortium({ dir, algorithm: 'dflmoe', sim, deadlineMs: 30000, lingerMs: 5000 });
    // 2% of connections reset, and for sure the first two into a site still open 5-12 s after they opened (mid-run).
    const links = await emulateLinks(
      files,
      { bytesPerSecond: 1e6, rttMs: 100, resetProbability: 0.02, forceResets: 2, forceResetAfterMs: [5000, 12000], seed: 5 },
      (cfg) => {
        cfg.round = { ...(cfg.round as object), adaptive: true, minDeadlineMs: 2000 };
      },
    );
    try {
      await runConsortium(files, 8 * 60 * 1000);
    } finally {
      await links.close();
    }
    const stats = links.stats();
    assert.ok(stats.resets >= 2, `connections reset: ${stats.resets} of ${stats.connections}`);
    const res = files.sites.map((s) => JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8')) as PeerRunResult);
    const later = res.flatMap((r) => r.rounds.filter((l) => l.round > 1));
    for (const r of res) {
      assert.deepEqual(
        r.rounds.map((l) => l.round),
        [1, 2, 3, 4, 5, 6, 7, 8],
        'every round, once',
      );
      assert.equal(r.rounds.at(-1)!.experts.length, 3, 'all experts at the end');
      // float16 heads of 128x256 + 256x10 (+ biases): about 71 KB, half of float32 (142 KB) and twice int8 (36 KB). The bytes
      // over 24 possible pulls: a member that moved on before pulling a round's head lowers it (59.6 KB seen once), so the
      // lower bound only tells float16 from int8.
      assert.ok(r.bytesSent / (8 * 3) < 80_000 && r.bytesSent / (8 * 3) > 45_000, `bytes per head ${r.bytesSent / 24}`);
    }
    // Each wait ends at its deadline, which the site measured from the link (not a fixed allowance of milliseconds).
    for (const l of later)
      assert.ok(l.deadlineMs !== undefined && l.waitSeconds * 1000 <= l.deadlineMs * 1.5, `round ${l.round}: waited ${l.waitSeconds} s of ${l.deadlineMs} ms`);
    const complete = later.filter((l) => l.fresh >= 3).length;
    process.stdout.write(
      `      (all heads within the deadline in ${complete}/${later.length} site-rounds; deadlines ${Math.min(...later.map((l) => l.deadlineMs!))}-${Math.max(...later.map((l) => l.deadlineMs!))} ms; ${stats.resets} of ${stats.connections} connections reset)\n`,
    );
    assert.ok(complete >= 0.75 * later.length, `all heads within the deadline in ${complete}/${later.length} site-rounds`);
    assert.ok(
      later.some((l) => l.deadlineMs! < 30000),
      'the deadline adapted to the link',
    );
  });
});
