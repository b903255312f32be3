import { silentLogger } from '@dflmoe/core';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { multiaddr } from '@multiformats/multiaddr';
import { cliCommand, until } from './helpers.js';
import {
  ConfigError,
  Libp2pHeadExchange,
  createSiteNode,
  generateIdentity,
  loadIdentity,
  loopbackMembers,
  parsePeerConfig,
  type SiteNode,
} from '@dflmoe/p2p/internal';

const quiet = silentLogger;

async function pair(maxHeadBytes: number) {
  const m = await loopbackMembers(2, { maxHeadBytes, logger: quiet });
  await m.nodes[0].dial(m.nodes[1].getMultiaddrs()[0]);
  return { ids: m.ids, nodes: m.nodes, exs: m.exchanges };
}

async function stop(nodes: SiteNode[], exs: Libp2pHeadExchange[]) {
  for (const e of exs) await e.close();
  for (const n of nodes) await n.stop();
}

describe('p2p', function () {
  this.timeout(120000);

  it('a reader told how many frames a message has answers without waiting for the sender to close its side', async () => {
    const { readFrames, writeFrames } = await import('@dflmoe/p2p/internal');
    const m = await loopbackMembers(2, { maxHeadBytes: 1 << 20, logger: quiet, heartbeatMs: 60000 });
    const PROTOCOL = '/dflmoe/test/frames/1.0.0';
    try {
      // As the FedAvg server reads a request: a body follows only when the first frame says so.
      await m.nodes[0].handle(PROTOCOL, async (stream) => {
        const fs = await readFrames(stream, (got) => (got[0][0] === 1 ? 2 : 1), 1 << 10, AbortSignal.timeout(20000));
        await writeFrames(stream, [Uint8Array.of(fs.length)]);
      });
      await m.nodes[1].dial(m.nodes[0].getMultiaddrs()[0]);
      for (const frames of [[Uint8Array.of(0)], [Uint8Array.of(1), Uint8Array.of(7, 7)]]) {
        const stream = await m.nodes[1].dialProtocol(m.nodes[0].peerId, PROTOCOL);
        // Length-prefixed by hand (one-byte varints), and our side is never closed.
        for (const f of frames) stream.send(Uint8Array.of(f.length, ...f));
        const t0 = Date.now();
        const [answer] = await readFrames(stream, 1, 16, AbortSignal.timeout(10000));
        assert.equal(answer[0], frames.length, 'the reader took exactly the frames the message has');
        assert.ok(Date.now() - t0 < 5000, `answered in ${Date.now() - t0} ms`);
        stream.abort(new Error('done'));
      }
    } finally {
      await m.stop();
    }
  });

  for (const mib of [10, 50]) {
    it(`a ${mib} MiB head arrives bit-identical`, async () => {
      const { ids, nodes, exs } = await pair(64 * 1024 * 1024);
      try {
        const head = new Uint8Array(mib * 1024 * 1024);
        let x = 12345;
        for (let i = 0; i < head.length; i++) {
          x = (x * 1103515245 + 12345) >>> 0;
          head[i] = x >>> 24;
        }
        const t0 = performance.now();
        await exs[0].publish(head, 1);
        assert.equal(await exs[1].waitForHeads(1, 60000), 1);
        const s = (performance.now() - t0) / 1000;
        const [m] = exs[1].drain();
        assert.equal(m.from, ids[0].peerId);
        assert.equal(m.payload.length, head.length);
        assert.ok(Buffer.compare(Buffer.from(m.payload), Buffer.from(head)) === 0, 'bytes differ');
        process.stdout.write(`      (${mib} MiB in ${s.toFixed(2)} s, ${(mib / s).toFixed(0)} MiB/s incl. announce)\n`);
      } finally {
        await stop(nodes, exs);
      }
    });
  }

  it('a head over the size limit is refused and counted, and the peer keeps running', async () => {
    const { nodes, exs } = await pair(1024 * 1024);
    try {
      // The sender's own limit is larger: simulate a peer that announces and serves an oversized head.
      (exs[0] as unknown as { o: { maxHeadBytes: number } }).o.maxHeadBytes = 4 * 1024 * 1024;
      await exs[0].publish(new Uint8Array(2 * 1024 * 1024), 1);
      // The announcement names 2 MiB: refused as too large before anything is pulled (no transfer is tried, so none fails).
      await until('the oversized head refused', () => (exs[1].dropped['too-large'] ?? 0) >= 1, 10000);
      assert.equal(exs[1].drain().length, 0);
      assert.deepEqual(Object.keys(exs[1].dropped), ['too-large'], JSON.stringify(exs[1].dropped));
      await exs[0].publish(new Uint8Array(1000), 2);
      assert.equal(await exs[1].waitForHeads(1, 10000), 1, 'a good head still gets through');
    } finally {
      await stop(nodes, exs);
    }
  });

  it('a member that keeps sending bad data is dropped, counted, disconnected and refused for a while', async () => {
    const { HEAD_PROTOCOL, ANNOUNCE_TOPIC, Announce, HeadResponse, writeFrames } = await import('@dflmoe/p2p/internal');
    const ids = await Promise.all([generateIdentity(), generateIdentity()]);
    const allow = ids.map((i) => i.peerId);
    const honest = await createSiteNode({ privateKey: ids[0].privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow, isBlocked: (p) => ex.isBlocked(p) });
    const evil = await createSiteNode({ privateKey: ids[1].privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow });
    const ex = new Libp2pHeadExchange(honest, {
      members: ids.map((i) => ({ peerId: i.peerId, addrs: [] })),
      maxHeadBytes: 1 << 20,
      logger: quiet,
      maxStrikes: 3,
      blockMs: 30000,
    });
    await ex.register();
    // The hostile member answers head requests with a header whose digest does not match the bytes.
    await evil.handle(HEAD_PROTOCOL, async (stream) => {
      await writeFrames(stream, [HeadResponse.encode({ available: true, version: 9n, size: 4n, digest: new Uint8Array(32) }), new Uint8Array([1, 2, 3, 4])]);
    });
    await honest.start();
    await evil.start();
    ex.start();
    evil.services.pubsub.subscribe(ANNOUNCE_TOPIC);
    try {
      await evil.dial(honest.getMultiaddrs()[0]);
      const bogus = [
        Announce.encode({ format: 1, peer: ids[1].peerId, version: 5n, digest: new Uint8Array(32), size: 10n ** 12n }), // too large
        Announce.encode({ format: 1, peer: ids[0].peerId, version: 6n, digest: new Uint8Array(32), size: 10n }), // claims to be someone else
        new Uint8Array([0xff, 0xff, 0xff]), // not a protobuf
      ];
      for (let t = 0; t < 100 && !ex.isBlocked(ids[1].peerId); t++) {
        await evil.services.pubsub.publish(ANNOUNCE_TOPIC, bogus[t % bogus.length]).catch(() => {});
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(ex.isBlocked(ids[1].peerId), `member blocked; dropped: ${JSON.stringify(ex.dropped)}`);
      assert.ok(
        (ex.dropped['digest-mismatch'] ?? 0) + (ex.dropped['too-large'] ?? 0) + (ex.dropped['spoofed-announce'] ?? 0) + (ex.dropped['bad-announce'] ?? 0) >= 3,
      );
      assert.equal(ex.drain().length, 0, 'nothing from it reached the inbox');
      for (let t = 0; t < 50 && honest.getConnections().length > 0; t++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(honest.getConnections().length, 0, 'disconnected');
      await evil.dial(honest.getMultiaddrs()[0], { signal: AbortSignal.timeout(3000) }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(honest.getConnections().length, 0, 'refused while blocked');
    } finally {
      await ex.close();
      await honest.stop();
      await evil.stop();
    }
  });

  it('the connection gater refuses a node that is not a member', async () => {
    const member = await generateIdentity();
    const outsider = await generateIdentity();
    const refused: string[] = [];
    const a = await createSiteNode({ privateKey: member.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow: [], onRefused: (p) => refused.push(p) });
    const b = await createSiteNode({ privateKey: outsider.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow: [member.peerId] });
    await a.start();
    await b.start();
    try {
      // The outsider may see its dial complete before the member's gater hangs up after the handshake.
      await b.dial(multiaddr(`${a.getMultiaddrs()[0].toString()}`), { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
      const t0 = Date.now();
      while ((a.getConnections().length || b.getConnections().length) && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(a.getConnections(), [], 'the member holds no connection to the outsider');
      assert.deepEqual(b.getConnections(), [], 'the outsider holds no connection to the member');
      assert.ok(refused.includes(outsider.peerId));
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('with a pre-shared key, a member holding another key cannot connect', async () => {
    const { generateKey } = await import('@libp2p/pnet');
    const psk = () => {
      const b = new Uint8Array(95);
      generateKey(b);
      return b;
    };
    const [k1, k2] = [psk(), psk()];
    const ids = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity()]);
    const allow = ids.map((i) => i.peerId);
    const [a, b, c] = await Promise.all([
      createSiteNode({ privateKey: ids[0].privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow, psk: k1 }),
      createSiteNode({ privateKey: ids[1].privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow, psk: k1 }),
      createSiteNode({ privateKey: ids[2].privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow, psk: k2 }),
    ]);
    for (const n of [a, b, c]) await n.start();
    try {
      await b.dial(a.getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) });
      for (let t = 0; t < 100 && a.getConnections().length === 0; t++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(a.getConnections().length, 1, 'same key: connected');
      await assert.rejects(c.dial(a.getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) }));
      assert.ok(!a.getConnections().some((x) => x.remotePeer.equals(c.peerId)), 'other key: refused');
    } finally {
      for (const n of [a, b, c]) await n.stop();
    }
  });

  it('config errors name the field and what is wrong', () => {
    const base = { key: 'k', listen: ['/ip4/127.0.0.1/tcp/1'], data: { dataset: 'breast-cancer' }, rounds: 3, out: 'o' };
    assert.doesNotThrow(() => parsePeerConfig(base));
    const bad = (raw: unknown, re: RegExp) =>
      assert.throws(
        () => parsePeerConfig(raw, 'site.json'),
        (e: Error) => e instanceof ConfigError && re.test(e.message),
        String(re),
      );
    bad({ ...base, rounds: 0 }, /rounds: Too small/i);
    bad({ ...base, listen: ['127.0.0.1:9000'] }, /listen\.0: not a valid multiaddr/);
    bad({ ...base, members: [{ peerId: 'nope' }] }, /members\.0\.peerId: not a valid peer ID/);
    bad({ ...base, data: { dataset: 'x', simulate: { peers: 2, index: 2 } } }, /data\.simulate\.index \(2\) must be below data\.simulate\.peers/);
    bad({ ...base, algorithm: 'fedavg' }, /server: required when algorithm is "fedavg"/);
    bad({ ...base, extra: 1 }, /^config site\.json: unknown key "extra"$/);
    const { rounds: _r, ...noRounds } = base;
    bad(noRounds, /rounds:/);
  });

  it('dflmoe keygen writes a private key file and prints its peer ID', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-key-'));
    const file = join(dir, 'site-a.key');
    const run = (args: string[]) => spawnSync(process.execPath, [...cliCommand(), 'keygen', ...args], { encoding: 'utf8', timeout: 60000 });
    const r = run(['--out', file]);
    assert.equal(r.status, 0, r.stderr);
    const printed = r.stdout.trim();
    assert.match(printed, /^12D3KooW[1-9A-HJ-NP-Za-km-z]+$/);
    assert.equal(loadIdentity(file).peerId, printed);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = run(['--out', file]);
    assert.notEqual(again.status, 0);
    assert.match(again.stderr, /already exists/);
    writeFileSync(join(dir, 'junk.key'), 'hello');
    assert.throws(() => loadIdentity(join(dir, 'junk.key')), /not a dflmoe key file/);
  });
});
